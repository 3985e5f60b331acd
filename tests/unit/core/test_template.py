from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from mripipe.core.template import load_template, reference_grid, template_brainmask


def test_template_loads_offline_with_tissue_maps() -> None:
    t = load_template()
    assert t.t1.GetSize() == (197, 233, 189)
    assert t.t1.GetSpacing() == (1.0, 1.0, 1.0)
    for img in (t.gm, t.wm, t.brainmask):
        assert img.GetSize() == t.t1.GetSize() and img.GetOrigin() == t.t1.GetOrigin()
    wm = sitk.GetArrayViewFromImage(t.wm)
    mask = sitk.GetArrayViewFromImage(t.brainmask)
    assert 0.0 <= wm.min() and wm.max() <= 1.0
    # the brain is 1.5-2 litres: 1 mm voxels
    assert 1.2e6 < mask.sum() < 2.2e6
    # white matter lies inside the brain mask
    assert (wm[mask == 0] > 0.5).mean() < 0.01


def test_reference_grid_covers_template_extent() -> None:
    t1 = load_template().t1
    ref = reference_grid((2.0, 2.0, 2.0))
    assert ref.GetSpacing() == (2.0, 2.0, 2.0)
    assert ref.GetSize() == (98, 116, 94)  # round(197/2), round(233/2), round(189/2)
    extent_t = np.array(t1.GetSize()) * np.array(t1.GetSpacing())
    extent_r = np.array(ref.GetSize()) * np.array(ref.GetSpacing())
    assert np.all(np.abs(extent_t - extent_r) <= 2.0)
    # the grid's field of view starts where the template's does (corner of the first voxel)
    corner_t = np.array(t1.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, -0.5)))
    corner_r = np.array(ref.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, -0.5)))
    np.testing.assert_allclose(corner_t, corner_r, atol=1e-6)


def test_template_brainmask_on_a_grid_is_the_nearest_1mm_voxel() -> None:
    mask_1mm = load_template().brainmask
    mask = template_brainmask((4.0, 4.0, 4.0))
    ref = reference_grid((4.0, 4.0, 4.0))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == ref.GetSize() and mask.GetOrigin() == ref.GetOrigin()
    arr = sitk.GetArrayViewFromImage(mask)  # (Z, Y, X)
    assert set(np.unique(arr)) == {0, 1}
    # 1.2-2.2 litres of brain at 64 mm^3 per voxel, as at 1 mm
    assert 1.2e6 < arr.sum() * 64.0 < 2.2e6
    # each 4 mm voxel takes the value of the 1 mm voxel nearest to its centre
    gen = np.random.default_rng(0)
    for idx in gen.integers(0, ref.GetSize(), size=(200, 3)):
        point = mask.TransformIndexToPhysicalPoint([int(i) for i in idx])
        near = mask_1mm.TransformPhysicalPointToIndex(point)
        inside = all(0 <= n < s for n, s in zip(near, mask_1mm.GetSize(), strict=True))
        expected = mask_1mm.GetPixel(near) if inside else 0
        assert mask.GetPixel([int(i) for i in idx]) == expected

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from mripipe.core.template import load_template, reference_grid


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

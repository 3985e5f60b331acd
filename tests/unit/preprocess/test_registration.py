"""Registration recovers known rigid and affine transforms of the template (4 mm, fast)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from mripipe.core.imageio import to_array
from mripipe.core.template import load_template, reference_grid, template_brainmask
from mripipe.preprocess import registration
from mripipe.preprocess.qc import mapping_error_mm

PARAMS = {
    "reg_sampling": 0.3,
    "template_shrink": [2, 1],
    "affine_shrink": [1],
    "coreg_shrink": [2, 1],
}


def _fixed(spacing: float = 4.0) -> tuple[sitk.Image, np.ndarray]:
    tpl = load_template()
    grid = reference_grid((spacing,) * 3)
    img = sitk.Resample(tpl.t1, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    brain = to_array(template_brainmask((spacing,) * 3)) > 0
    return img, brain


def _native(fixed: sitk.Image, truth: sitk.Transform, spacing: float) -> sitk.Image:
    """A native image whose physical points p show the template at truth^-1(p)."""
    grid = registration.downsample(fixed, fixed.GetSpacing()[0])  # same grid, float32
    grid = sitk.Image(
        [int(n * fixed.GetSpacing()[0] / spacing) for n in fixed.GetSize()], sitk.sitkFloat32
    )
    grid.SetSpacing([spacing] * 3)
    grid.SetOrigin(fixed.GetOrigin())
    grid.SetDirection(fixed.GetDirection())
    return sitk.Resample(fixed, grid, truth.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def _rigid(
    angles_deg: tuple[float, float, float], shift: tuple[float, float, float]
) -> sitk.Euler3DTransform:
    tx = sitk.Euler3DTransform()
    tx.SetCenter((0.0, -18.0, 18.0))
    tx.SetRotation(*np.deg2rad(angles_deg))
    tx.SetTranslation(shift)
    return tx


def test_rigid_registration_recovers_a_known_pose() -> None:
    fixed, brain = _fixed()
    truth = _rigid((4.0, -3.0, 5.0), (3.0, -4.0, 2.0))
    moving = _native(fixed, truth, 3.0)
    before = mapping_error_mm(sitk.Euler3DTransform(), truth, fixed, brain)
    est = registration.rigid_register(
        fixed, moving, PARAMS, seed=1, prefix="coreg", init="identity"
    )
    after = mapping_error_mm(est, truth, fixed, brain)
    assert before > 5.0
    assert after < 1.0


def test_template_registration_recovers_a_known_affine() -> None:
    fixed, brain = _fixed()
    rigid = _rigid((-3.0, 2.0, 4.0), (5.0, 2.0, -3.0))
    truth = registration.affine_from_rigid(rigid)
    truth.Scale((1.06, 1.06, 1.06))  # global scaling about the centre
    moving = _native(fixed, truth, 3.0)
    est = registration.register_to_template(fixed, moving, PARAMS, seed=2)
    assert isinstance(est, sitk.AffineTransform)
    assert mapping_error_mm(est, truth, fixed, brain) < 1.5


def test_chain_applies_first_then_second() -> None:
    a = sitk.TranslationTransform(3, (1.0, 0.0, 0.0))
    b = sitk.ScaleTransform(3, (2.0, 2.0, 2.0))
    # b(a(x)) for x = (1, 1, 1): a -> (2, 1, 1), b -> (4, 2, 2)
    np.testing.assert_allclose(
        registration.chain(a, b).TransformPoint((1.0, 1.0, 1.0)), (4.0, 2.0, 2.0)
    )


def test_displacement_of_a_translation_is_constant() -> None:
    grid = sitk.Image([4, 5, 6], sitk.sitkFloat32)
    d = registration.displacement(sitk.TranslationTransform(3, (1.0, -2.0, 0.5)), grid)
    assert d.shape == (4, 5, 6, 3)
    np.testing.assert_allclose(d[1, 2, 3], (1.0, -2.0, 0.5))
    np.testing.assert_allclose(d.std(axis=(0, 1, 2)), 0.0, atol=1e-12)


def test_downsample_keeps_the_extent() -> None:
    img = sitk.Image([30, 20, 10], sitk.sitkFloat32)
    img.SetSpacing((1.0, 1.0, 3.0))
    img.SetOrigin((5.0, -2.0, 7.0))
    out = registration.downsample(img, 2.0)
    assert out.GetSpacing() == (2.0, 2.0, 2.0)
    assert out.GetSize() == (15, 10, 15)
    # the field of view's first corner is unchanged: origin - spacing / 2 along each axis
    np.testing.assert_allclose(
        np.array(out.GetOrigin()) - 1.0, np.array(img.GetOrigin()) - [0.5, 0.5, 1.5]
    )

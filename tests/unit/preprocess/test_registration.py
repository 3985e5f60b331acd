"""Registration recovers known rigid and affine transforms of the template (4 mm, fast), and
large poses of the real ICBM152 anatomy seen on a scan-like grid (3 mm, as the pipeline)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from mripipe.core.config import with_defaults
from mripipe.core.errors import InputError
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


#: Seeded poses within +-30 deg about each axis and +-20 mm along each: (angles deg, shift mm).
_RNG = np.random.default_rng(20240607)
LARGE_POSES = [(tuple(_RNG.uniform(-30, 30, 3)), tuple(_RNG.uniform(-20, 20, 3))) for _ in range(3)]


def _scan_of_template(truth: sitk.Transform) -> sitk.Image:
    """The 1 mm ICBM152 T1 seen in pose ``truth`` (template -> scan) on a 1.5 mm scan grid of
    240 x 264 x 240 mm around the moved head, then downsampled to 3 mm as the pipeline does."""
    size = np.array([160, 176, 160])
    grid = sitk.Image(size.tolist(), sitk.sitkFloat32)
    grid.SetSpacing([1.5] * 3)
    centre = np.array(truth.TransformPoint((0.0, -18.0, 18.0)))
    grid.SetOrigin((centre - 0.75 * (size - 1)).tolist())
    scan = sitk.Resample(
        load_template().t1, grid, truth.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32
    )
    return registration.downsample(scan, 3.0)


@pytest.mark.parametrize("pose", LARGE_POSES, ids=[f"pose{i}" for i in range(len(LARGE_POSES))])
def test_template_registration_recovers_large_poses_of_real_anatomy(
    pose: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> None:
    # the pipeline's template registration with the schema's defaults, at 3 mm; the error is the
    # mean displacement difference over the template brain (2 mm grid) as in qc.json
    params = with_defaults("preprocess", {})
    fixed, mask = registration.template_fixed(3.0, float(params["template_mask_dilation_mm"]))
    truth = _rigid(*pose)
    grid = reference_grid((2.0,) * 3)
    brain = to_array(template_brainmask((2.0,) * 3)) > 0
    assert mapping_error_mm(sitk.Euler3DTransform(), truth, grid, brain) > 15.0
    est = registration.register_to_template(fixed, _scan_of_template(truth), params, 7, mask)
    assert mapping_error_mm(est, truth, grid, brain) < 1.0


def test_bounded_steps_keep_the_first_affine_step_physical() -> None:
    # the cause of the phantom's 3 failures: after a converged rigid stage the translation
    # gradient is near 0, and a regular step of reg_step = 2 *parameter* units went into the
    # matrix entries (brain voxels moved 9-40 mm); bounded, none moves by more than 2 mm
    fixed, brain = _fixed()
    truth = sitk.AffineTransform(3)
    truth.SetCenter((0.0, -18.0, 18.0))
    truth.Scale((1.06, 1.06, 1.06))
    moving = _native(fixed, truth, 3.0)
    rigid = registration.rigid_register(fixed, moving, PARAMS, 3, prefix="template")
    before = registration.displacement(registration.affine_from_rigid(rigid), fixed)
    moved = {}
    for bounded in (False, True):
        start = registration.affine_from_rigid(rigid)
        reg = registration._method(PARAMS, [1], [0.0], 1, seed=4, bounded=bounded)
        reg.SetInitialTransform(start, inPlace=True)
        reg.Execute(fixed, moving)
        step = registration.displacement(start, fixed) - before
        moved[bounded] = float(np.linalg.norm(step, axis=-1)[brain].max())
    assert moved[True] <= 2.0
    assert moved[False] > 8.0


def test_rotation_search_is_deterministic_and_finds_the_rotation() -> None:
    fixed, brain = _fixed()
    truth = _rigid((25.0, -20.0, 15.0), (4.0, -6.0, 3.0))
    moving = _native(fixed, truth, 4.0)
    threads = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)  # as a pipeline job (--threads 1)
    try:
        runs = [registration.rotation_search(fixed, moving, PARAMS, seed=5) for _ in range(2)]
    finally:
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)
    assert runs[0].GetParameters() == runs[1].GetParameters()
    moments = registration.moments_init(fixed, moving)
    assert mapping_error_mm(moments, truth, fixed, brain) > 15.0
    assert mapping_error_mm(runs[0], truth, fixed, brain) < 3.0


def test_unknown_template_init_is_an_input_error() -> None:
    fixed, _ = _fixed(8.0)
    with pytest.raises(InputError, match="template_init"):
        registration.register_to_template(fixed, fixed, {"template_init": "flirt"})

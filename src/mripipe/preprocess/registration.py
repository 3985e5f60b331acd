"""Registration with SimpleITK: rigid co-registration and rigid -> affine template registration.

Both use Mattes mutual information on a seeded random sample of voxels, a multi-resolution pyramid
(shrink factors with Gaussian smoothing in mm) and a regular-step gradient descent with scales from
physical shifts. Transforms follow SimpleITK's resampling convention: a registration with ``fixed``
and ``moving`` returns ``T`` mapping a physical point of ``fixed`` to the matching point of
``moving`` (so ``sitk.Resample(moving, fixed, T)`` aligns them).

Template registration (``template_init: search``, the default) starts like FLIRT's and antsAI's:
moments centring, then a coarse grid of rotations at low resolution (:func:`rotation_search`)
whose best few start short rigid runs, the best of which starts the rigid and affine stages. With
``template_bounded_step`` its every step moves no point of the template by more than ``reg_step``
mm: ITK's regular-step descent otherwise takes steps of ``reg_step`` *parameter* units, and right
after a converged rigid stage (translation gradient near 0) the first affine step went into the
matrix entries and scaled the head by 25-35 %, from which Mattes MI did not come back on 3 of the
50 phantom scans.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import SimpleITK as sitk

from mripipe.core.config import param
from mripipe.core.errors import InputError
from mripipe.core.template import load_template, reference_grid, template_brainmask

log = logging.getLogger(__name__)


def _p(params: dict[str, Any], key: str) -> Any:
    """``preprocess.<key>``: as given, else the schema's default (the one place defaults live)."""
    return param("preprocess", params, key)

#: Starts of template registration (``preprocess.template_init``); ``moments`` is the method
#: before the rotation search, kept for comparison (bench/bench_registration.py).
TEMPLATE_INITS = ("search", "moments")


def _levels(
    params: dict[str, Any], prefix: str, default_shrink: list[int]
) -> tuple[list[int], list[float]]:
    """Shrink factors and smoothing sigmas (mm) of a pyramid from ``params``."""
    shrink = [int(s) for s in params.get(f"{prefix}_shrink", default_shrink)]
    default_sigma = [0.5 * s for s in shrink]
    sigmas = [float(s) for s in params.get(f"{prefix}_smoothing", default_sigma)]
    if len(sigmas) != len(shrink):
        raise InputError(f"{prefix}_smoothing must have one value per level of {prefix}_shrink")
    return shrink, sigmas


def _method(
    params: dict[str, Any],
    shrink: list[int],
    sigmas: list[float],
    iterations: int,
    seed: int,
    bounded: bool = False,
) -> sitk.ImageRegistrationMethod:
    """A configured Mattes-MI registration method (transform not set yet).

    ``bounded``: re-estimate the learning rate at every iteration so that a step moves no point
    of the fixed image by more than ``reg_step`` mm (times the relaxation after direction
    changes), stopping when relaxation x learning rate < ``template_min_step`` (default 0.001);
    otherwise a step is ``reg_step`` long in parameter units (radians, matrix entries too) and
    the optimizer stops below ``reg_min_step``.
    """
    reg = _metric(params, seed, float(_p(params, "reg_sampling")))
    step = float(_p(params, "reg_step"))
    least = _p(params, "template_min_step") if bounded else _p(params, "reg_min_step")
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=step,
        minStep=float(least),
        numberOfIterations=int(iterations),
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
        estimateLearningRate=reg.EachIteration if bounded else reg.Never,
        maximumStepSizeInPhysicalUnits=step if bounded else 0.0,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def _metric(params: dict[str, Any], seed: int, sampling: float) -> sitk.ImageRegistrationMethod:
    """A registration method with Mattes MI on a seeded random ``sampling`` fraction of voxels."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(_p(params, "reg_bins")))
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(min(1.0, sampling), int(seed) % (2**31))
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


def _run(
    reg: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image, what: str
) -> None:
    """Execute a registration, logging its end state."""
    reg.Execute(sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32))
    log.debug(
        "%s: metric %.4f after %d iterations (%s)",
        what,
        reg.GetMetricValue(),
        reg.GetOptimizerIteration(),
        reg.GetOptimizerStopConditionDescription(),
    )


def moments_init(fixed: sitk.Image, moving: sitk.Image) -> sitk.Euler3DTransform:
    """Rigid transform aligning the intensity centres of mass (rotation left at identity)."""
    init = sitk.CenteredTransformInitializer(
        sitk.Cast(fixed, sitk.sitkFloat32),
        sitk.Cast(moving, sitk.sitkFloat32),
        sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    return sitk.Euler3DTransform(init)


def identity_init(fixed: sitk.Image) -> sitk.Euler3DTransform:
    """Identity rigid transform centred on the fixed image (scanner coordinates already agree)."""
    tx = sitk.Euler3DTransform()
    centre = [(n - 1) / 2 for n in fixed.GetSize()]
    tx.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint(centre))
    return tx


def rigid_register(
    fixed: sitk.Image,
    moving: sitk.Image,
    params: dict[str, Any],
    seed: int = 0,
    fixed_mask: sitk.Image | None = None,
    prefix: str = "coreg",
    init: str | sitk.Euler3DTransform = "moments",
    bounded: bool = False,
) -> sitk.Euler3DTransform:
    """Rigid registration (6 parameters), multi-resolution Mattes MI.

    Args:
        fixed: 3-D image of shape (X, Y, Z) defining the output space.
        moving: 3-D image of shape (X', Y', Z').
        params: ``{prefix}_shrink`` (default [4, 2, 1]), ``{prefix}_smoothing`` (mm, default
            half the shrink factors), ``{prefix}_iterations`` (default 60), ``reg_sampling``
            (fraction of voxels, default 0.1), ``reg_bins`` (default 32), ``reg_step``,
            ``reg_min_step``.
        seed: seed of the random metric sampling.
        fixed_mask: optional uint8 mask restricting the metric samples in ``fixed``.
        prefix: parameter prefix (``coreg`` or ``template``).
        init: ``moments`` (align intensity centres of mass), ``identity`` (trust the scanner
            coordinates, right for channels of one session) or a start transform (copied).
        bounded: steps bounded to ``reg_step`` mm of displacement (see :func:`_method`).

    Returns:
        Euler3D transform mapping ``fixed`` points to ``moving`` points.
    """
    shrink, sigmas = _levels(params, prefix, [4, 2, 1])
    iterations = int(params.get(f"{prefix}_iterations", 60))
    reg = _method(params, shrink, sigmas, iterations, seed, bounded)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    if isinstance(init, sitk.Euler3DTransform):
        tx = sitk.Euler3DTransform(init)
    elif init == "moments":
        tx = moments_init(fixed, moving)
    elif init == "identity":
        tx = identity_init(fixed)
    else:
        raise InputError(f"unknown registration init {init!r}; expected moments or identity")
    reg.SetInitialTransform(tx, inPlace=True)
    _run(reg, fixed, moving, f"{prefix} rigid")
    return tx


def _search_grid(
    fixed: sitk.Image,
    moving: sitk.Image,
    mask: sitk.Image | None,
    start: sitk.Euler3DTransform,
    params: dict[str, Any],
    seed: int,
) -> list[tuple[float, tuple[float, ...]]]:
    """Mattes MI at every rotation of the search grid about ``start`` (translation kept), best first.

    The grid spans +- ``template_search_deg`` in steps of ``template_search_step_deg`` about each
    axis (5 x 5 x 5 = 125 rotations by default), evaluated with SimpleITK's exhaustive optimizer.

    Returns:
        (metric value, Euler3D parameters) per grid point, lowest (best) metric first.
    """
    half = float(_p(params, "template_search_deg"))
    step = float(_p(params, "template_search_step_deg"))
    if step <= 0 or half < 0:
        raise InputError(
            "rotation search: need template_search_step_deg > 0 and template_search_deg >= 0, "
            f"got {step} and {half}"
        )
    n = int(half // step)
    reg = _metric(params, seed, float(_p(params, "template_search_sampling")))
    if mask is not None:
        reg.SetMetricFixedMask(mask)
    reg.SetOptimizerAsExhaustive([n, n, n, 0, 0, 0], float(np.deg2rad(step)))
    reg.SetOptimizerScales([1.0] * 6)
    reg.SetInitialTransform(sitk.Euler3DTransform(start), inPlace=True)
    seen: list[tuple[float, tuple[float, ...]]] = []
    reg.AddCommand(
        sitk.sitkIterationEvent,
        lambda: seen.append((reg.GetMetricValue(), tuple(reg.GetOptimizerPosition()))),
    )
    reg.Execute(fixed, moving)
    return sorted(seen)


def rotation_search(
    fixed: sitk.Image,
    moving: sitk.Image,
    params: dict[str, Any],
    seed: int = 0,
    fixed_mask: sitk.Image | None = None,
) -> sitk.Euler3DTransform:
    """A rigid start robust to the pose: moments centring, then a coarse rotation search.

    Both images are smoothed and resampled to ``template_search_spacing`` mm (default 6); the
    grid of :func:`_search_grid` is scored about the moments start, the best
    ``template_search_starts`` rotations (default 3) each start a short rigid run at that
    resolution (``template_search_iterations``), and the run ending with the best metric wins. Every run uses the
    same seeded samples, so the metric values compare and the result is deterministic.

    Args:
        fixed: template image (X, Y, Z).
        moving: native image (X', Y', Z').
        params: the ``preprocess:`` keys above plus the metric's (``reg_bins``, ``reg_step``).
        seed: seed of the random metric sampling.
        fixed_mask: optional uint8 mask of ``fixed`` restricting the metric samples.

    Returns:
        Euler3D transform (fixed -> moving) to start the rigid stage from.
    """
    spacing = float(_p(params, "template_search_spacing"))
    f, m = downsample(fixed, spacing), downsample(moving, spacing)
    mask = None
    if fixed_mask is not None:
        mask = sitk.Resample(
            fixed_mask, f, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
        )
    start = moments_init(fixed, moving)
    grid = _search_grid(f, m, mask, start, params, seed)
    iterations = int(_p(params, "template_search_iterations"))
    bounded = bool(_p(params, "template_bounded_step"))
    runs: list[tuple[float, sitk.Euler3DTransform]] = []
    for value, position in grid[: max(1, int(_p(params, "template_search_starts")))]:
        cand = sitk.Euler3DTransform(start)
        cand.SetParameters(position)
        reg = _method(params, [1], [0.0], iterations, seed, bounded)
        if mask is not None:
            reg.SetMetricFixedMask(mask)
        reg.SetInitialTransform(cand, inPlace=True)
        _run(reg, f, m, f"search start at {np.rad2deg(position[:3]).round(1)} deg (grid {value:.4f})")
        runs.append((reg.GetMetricValue(), cand))
    value, best = min(runs, key=lambda run: run[0])
    log.debug("rotation search: best start %s (metric %.4f)", best.GetParameters(), value)
    return best


def affine_from_rigid(rigid: sitk.Euler3DTransform) -> sitk.AffineTransform:
    """The same mapping as ``rigid`` as a 12-parameter affine transform (same centre)."""
    aff = sitk.AffineTransform(3)
    aff.SetCenter(rigid.GetCenter())
    aff.SetMatrix(rigid.GetMatrix())
    aff.SetTranslation(rigid.GetTranslation())
    return aff


def register_to_template(
    template: sitk.Image,
    moving: sitk.Image,
    params: dict[str, Any],
    seed: int = 0,
    template_mask: sitk.Image | None = None,
) -> sitk.AffineTransform:
    """Rigid then affine registration of a scan to the template.

    The template is the fixed image, so the result maps template points to native points (the
    contract's ``transform.tfm`` direction). The rigid stage starts from :func:`rotation_search`
    (``template_init: search``) or from the moments centring alone (``moments``).

    Args:
        template: template image (X, Y, Z), ideally already at the registration spacing.
        moving: native reference channel (X', Y', Z').
        params: as :func:`rigid_register` with prefix ``template`` (rigid stage) plus
            ``affine_shrink``, ``affine_smoothing``, ``affine_iterations`` (affine stage),
            ``template_affine`` (bool, default True: False stops after the rigid stage),
            ``template_init`` (default search), ``template_bounded_step`` (default True) and the
            ``template_search_*`` keys of :func:`rotation_search`.
        seed: seed of the random metric sampling.
        template_mask: optional uint8 mask of the template restricting the metric samples.

    Returns:
        Affine transform (template -> native).
    """
    how = str(_p(params, "template_init"))
    if how not in TEMPLATE_INITS:
        raise InputError(f"unknown template_init {how!r}; expected one of {', '.join(TEMPLATE_INITS)}")
    bounded = bool(_p(params, "template_bounded_step"))
    start: str | sitk.Euler3DTransform = "moments"
    if how == "search":
        start = rotation_search(template, moving, params, seed, template_mask)
    rigid = rigid_register(
        template, moving, params, seed, template_mask, prefix="template", init=start, bounded=bounded
    )
    aff = affine_from_rigid(rigid)
    if not bool(_p(params, "template_affine")):
        return aff
    shrink, sigmas = _levels(params, "affine", [2, 1])
    iterations = int(_p(params, "affine_iterations"))
    reg = _method(params, shrink, sigmas, iterations, seed + 1, bounded)
    if template_mask is not None:
        reg.SetMetricFixedMask(template_mask)
    reg.SetInitialTransform(aff, inPlace=True)
    _run(reg, template, moving, "template affine")
    return aff


def chain(first: sitk.Transform, then: sitk.Transform) -> sitk.CompositeTransform:
    """Composite transform ``x -> then(first(x))`` (SimpleITK applies the last-added first)."""
    comp = sitk.CompositeTransform(3)
    comp.AddTransform(then)
    comp.AddTransform(first)
    return comp


def displacement(transform: sitk.Transform, grid: sitk.Image) -> np.ndarray:
    """Displacement ``T(x) - x`` at every voxel of ``grid``.

    Args:
        transform: any 3-D transform.
        grid: image whose geometry defines the points.

    Returns:
        float64 array of shape (X, Y, Z, 3) in mm.
    """
    f = sitk.TransformToDisplacementFieldFilter()
    f.SetReferenceImage(grid)
    f.SetOutputPixelType(sitk.sitkVectorFloat64)
    field = f.Execute(transform)
    return np.asarray(sitk.GetArrayFromImage(field)).transpose(2, 1, 0, 3)


def downsample(img: sitk.Image, spacing: float) -> sitk.Image:
    """Gaussian-smoothed copy of ``img`` on an isotropic grid of ``spacing`` mm (same extent).

    Registration cost is dominated by the image pyramid of full-resolution inputs; working on
    copies near the registration's finest resolution makes it several times cheaper.

    Args:
        img: 3-D image of shape (X, Y, Z).
        spacing: target spacing in mm (no-op when every axis is already at least as coarse).

    Returns:
        The resampled float32 image.
    """
    old = np.array(img.GetSpacing(), dtype=float)
    if np.all(old >= spacing - 1e-6):
        return sitk.Cast(img, sitk.sitkFloat32)
    sigma = [max(float(np.sqrt(max(spacing**2 - s**2, 0.0)) / 2.355), 0.25 * s) for s in old]
    smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(img, sitk.sitkFloat32), sigma)
    size = [max(1, int(round(n * s / spacing))) for n, s in zip(img.GetSize(), old, strict=True)]
    out = sitk.Image(size, sitk.sitkFloat32)
    out.SetDirection(img.GetDirection())
    out.SetSpacing([spacing] * 3)
    origin_index = [(spacing / s - 1) / 2 for s in old]
    out.SetOrigin(img.TransformContinuousIndexToPhysicalPoint(origin_index))
    return sitk.Resample(smooth, out, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def template_fixed(spacing: float, dilation_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """The template T1 at the registration spacing and its dilated brain mask (uint8).

    Args:
        spacing: isotropic spacing in mm of the template grid used for registration.
        dilation_mm: dilation of the brain mask restricting the metric samples.

    Returns:
        The float32 template image and its uint8 mask on the same grid.
    """
    tpl = load_template()
    grid = reference_grid((spacing,) * 3)
    fixed = sitk.Resample(tpl.t1, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    mask = template_brainmask((spacing,) * 3)
    radius = int(round(dilation_mm / spacing))
    if radius > 0:
        mask = sitk.BinaryDilate(mask, [radius] * 3)
    return fixed, mask

"""Registration with SimpleITK: rigid co-registration and rigid -> affine template registration.

Both use Mattes mutual information on a random sample of voxels, a multi-resolution pyramid
(shrink factors with Gaussian smoothing in mm), a regular-step gradient descent with scales from
physical shifts, and a moments initialisation. Transforms follow SimpleITK's resampling
convention: a registration with ``fixed`` and ``moving`` returns ``T`` mapping a physical point of
``fixed`` to the matching point of ``moving`` (so ``sitk.Resample(moving, fixed, T)`` aligns them).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import SimpleITK as sitk

from mripipe.core.errors import InputError
from mripipe.core.template import load_template, reference_grid, template_brainmask

log = logging.getLogger(__name__)


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
) -> sitk.ImageRegistrationMethod:
    """A configured Mattes-MI registration method (transform not set yet)."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(params.get("reg_bins", 32)))
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(float(params.get("reg_sampling", 0.1)), int(seed) % (2**31))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=float(params.get("reg_step", 2.0)),
        minStep=float(params.get("reg_min_step", 0.01)),
        numberOfIterations=int(iterations),
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
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
    init: str = "moments",
) -> sitk.Euler3DTransform:
    """Rigid registration (6 parameters), moments-initialised, multi-resolution Mattes MI.

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
        init: ``moments`` (align intensity centres of mass) or ``identity`` (trust the scanner
            coordinates, right for channels of one session).

    Returns:
        Euler3D transform mapping ``fixed`` points to ``moving`` points.
    """
    shrink, sigmas = _levels(params, prefix, [4, 2, 1])
    reg = _method(params, shrink, sigmas, int(params.get(f"{prefix}_iterations", 60)), seed)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    if init not in ("moments", "identity"):
        raise InputError(f"unknown registration init {init!r}; expected moments or identity")
    tx = moments_init(fixed, moving) if init == "moments" else identity_init(fixed)
    reg.SetInitialTransform(tx, inPlace=True)
    _run(reg, fixed, moving, f"{prefix} rigid")
    return tx


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
    """Rigid (moments-initialised) then affine registration of a scan to the template.

    The template is the fixed image, so the result maps template points to native points (the
    contract's ``transform.tfm`` direction).

    Args:
        template: template image (X, Y, Z), ideally already at the registration spacing.
        moving: native reference channel (X', Y', Z').
        params: as :func:`rigid_register` with prefix ``template`` (rigid stage) plus
            ``affine_shrink``, ``affine_smoothing``, ``affine_iterations`` (affine stage) and
            ``template_affine`` (bool, default True: False stops after the rigid stage).
        seed: seed of the random metric sampling.
        template_mask: optional uint8 mask of the template restricting the metric samples.

    Returns:
        Affine transform (template -> native).
    """
    rigid = rigid_register(template, moving, params, seed, template_mask, prefix="template")
    aff = affine_from_rigid(rigid)
    if not bool(params.get("template_affine", True)):
        return aff
    shrink, sigmas = _levels(params, "affine", [2, 1])
    reg = _method(params, shrink, sigmas, int(params.get("affine_iterations", 60)), seed + 1)
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

"""Intensity steps of preprocessing: head mask, N4 bias correction, denoising, z-scoring.

Everything works on 3-D SimpleITK images in their native geometry. N4 is fitted on a shrunk copy
inside a head mask and its B-spline field is evaluated at full resolution (seconds instead of
minutes). Denoising offers ``none``, ``curvature`` (curvature anisotropic diffusion), ``nlm``
(patch-based non-local means, SimpleITK's ``PatchBasedDenoisingImageFilter``) and ``median``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

log = logging.getLogger(__name__)

DENOISE_METHODS = ("none", "curvature", "nlm", "median")


@dataclass(frozen=True)
class N4Result:
    """Output of :func:`n4_correct`.

    Attributes:
        corrected: bias-corrected image, float32, same grid as the input.
        bias: estimated multiplicative bias field, float32, same grid (image = corrected * bias).
        mask: head mask used for the fit, uint8, same grid.
    """

    corrected: sitk.Image
    bias: sitk.Image
    mask: sitk.Image


def _shrink_factors(img: sitk.Image, shrink: int) -> list[int]:
    """Per-axis integer shrink factors so every axis keeps at least 8 voxels."""
    return [max(1, min(int(shrink), n // 8)) for n in img.GetSize()]


def head_mask(img: sitk.Image, shrink: int = 4) -> sitk.Image:
    """Foreground (head) mask by Otsu thresholding, closed, hole-filled, largest component.

    Computed on a shrunk copy for speed and resampled back (nearest neighbour) to the input grid.

    Args:
        img: 3-D image of shape (X, Y, Z).
        shrink: shrink factor used for the computation.

    Returns:
        uint8 mask (0/1) on the grid of ``img``.
    """
    small = sitk.Shrink(sitk.Cast(img, sitk.sitkFloat32), _shrink_factors(img, shrink))
    fg = sitk.OtsuThreshold(small, 0, 1)
    fg = sitk.BinaryMorphologicalClosing(fg, [1, 1, 1])
    fg = sitk.BinaryFillhole(fg)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(fg), sortByObjectSize=True)
    fg = sitk.Cast(cc == 1, sitk.sitkUInt8)
    full = sitk.Resample(fg, img, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(full)):
        # degenerate (e.g. constant) image: everything is foreground
        full = sitk.Cast(sitk.Image(img.GetSize(), sitk.sitkUInt8) + 1, sitk.sitkUInt8)
        full.CopyInformation(img)
    return full


def n4_correct(img: sitk.Image, params: dict[str, Any], mask: sitk.Image | None = None) -> N4Result:
    """N4 bias-field correction fitted on a shrunk copy, applied at full resolution.

    Args:
        img: 3-D image of shape (X, Y, Z) (any real pixel type; non-positive values are clipped).
        params: ``n4_shrink`` (int, default 4), ``n4_iterations`` (list of ints, one per fitting
            level, default [20, 20]), ``n4_control_points`` (int, default 4),
            ``n4_convergence`` (float, default 0.001).
        mask: head mask on the grid of ``img``; computed with :func:`head_mask` if None.

    Returns:
        The corrected image, the multiplicative bias field and the mask, all on ``img``'s grid.
    """
    shrink = int(params.get("n4_shrink", 4))
    iterations = [int(i) for i in params.get("n4_iterations", [20, 20])]
    img = sitk.Cast(img, sitk.sitkFloat32)
    if mask is None:
        mask = head_mask(img, shrink)
    arr = sitk.GetArrayViewFromImage(img)
    floor = float(np.percentile(arr[arr > 0], 1)) * 0.1 if np.any(arr > 0) else 1.0
    positive = sitk.Maximum(img, floor)  # N4 works on log intensities
    factors = _shrink_factors(img, shrink)
    small = sitk.Shrink(positive, factors)
    small_mask = sitk.Shrink(mask, factors)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(iterations)
    n4.SetNumberOfControlPoints([int(params.get("n4_control_points", 4))] * 3)
    n4.SetConvergenceThreshold(float(params.get("n4_convergence", 0.001)))
    n4.Execute(small, small_mask)
    log_bias = n4.GetLogBiasFieldAsImage(img)
    bias = sitk.Cast(sitk.Exp(log_bias), sitk.sitkFloat32)
    corrected = sitk.Cast(img / bias, sitk.sitkFloat32)
    return N4Result(corrected=corrected, bias=bias, mask=mask)


def denoise(img: sitk.Image, method: str, params: dict[str, Any], seed: int = 0) -> sitk.Image:
    """Denoise a 3-D image with one of :data:`DENOISE_METHODS`.

    Args:
        img: 3-D image of shape (X, Y, Z).
        method: ``none``, ``curvature``, ``nlm`` or ``median``.
        params: ``curvature_iterations`` (default 3), ``curvature_conductance`` (default 1.0),
            ``median_radius`` (default 1), ``nlm_patch_radius`` (default 1),
            ``nlm_iterations`` (default 1), ``nlm_sample_patches`` (default 50).
        seed: seed of the patch sampling of ``nlm``.

    Returns:
        The denoised image, float32, same grid.

    Raises:
        ValueError: unknown method.
    """
    img = sitk.Cast(img, sitk.sitkFloat32)
    if method == "none":
        return img
    if method == "curvature":
        f = sitk.CurvatureAnisotropicDiffusionImageFilter()
        f.SetNumberOfIterations(int(params.get("curvature_iterations", 3)))
        f.SetConductanceParameter(float(params.get("curvature_conductance", 1.0)))
        # stable explicit step for 3-D: below min(spacing) / 2**(N+1)
        f.SetTimeStep(min(img.GetSpacing()) / 2**4 * 0.9)
        return f.Execute(img)
    if method == "median":
        r = int(params.get("median_radius", 1))
        return sitk.Median(img, [r, r, r])
    if method == "nlm":
        f = sitk.PatchBasedDenoisingImageFilter()
        f.SetPatchRadius(int(params.get("nlm_patch_radius", 1)))
        f.SetNumberOfIterations(int(params.get("nlm_iterations", 1)))
        f.SetNumberOfSamplePatches(int(params.get("nlm_sample_patches", 50)))
        f.SetKernelBandwidthEstimation(False)
        f.SetNoiseModel(sitk.PatchBasedDenoisingImageFilter.RICIAN)
        f.SetNoiseModelFidelityWeight(0.0)
        f.SetSampleVariance(float(params.get("nlm_sample_variance", 400.0)))
        return sitk.Cast(f.Execute(img), sitk.sitkFloat32)
    raise ValueError(f"unknown denoise method {method!r}; expected one of {DENOISE_METHODS}")


def zscore_in_mask(arr: np.ndarray, mask: np.ndarray, zero_outside: bool = True) -> np.ndarray:
    """Z-score an array with the mean and standard deviation of the voxels inside a mask.

    Args:
        arr: image values of shape (X, Y, Z).
        mask: boolean or 0/1 array of shape (X, Y, Z).
        zero_outside: set voxels outside the mask to 0 (skull strip); otherwise they are
            z-scored with the same statistics.

    Returns:
        float32 array of shape (X, Y, Z) (std of a constant region is taken as 1; an empty mask
        gives zeros).
    """
    m = mask.astype(bool)
    if not m.any():
        return np.zeros(arr.shape, dtype=np.float32)
    vals = arr[m].astype(np.float64)
    std = float(vals.std())
    out = ((arr.astype(np.float64) - vals.mean()) / (std if std > 0 else 1.0)).astype(np.float32)
    if zero_outside:
        out[~m] = 0
    return out

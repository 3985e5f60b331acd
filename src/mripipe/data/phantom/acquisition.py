"""Acquisition of one contrast of one scan: native grid, sampling, bias field, Rician noise.

The chain, for a native voxel centre ``q`` (scanner space):
``y = scanner_to_template @ q`` (pose, then global scaling), ``p = y + u(y)`` (anatomy warp),
then the template's contrast map and the lesions are evaluated at ``p``. Thick slices are
simulated by sampling ``factors`` sub-voxels per voxel and averaging them (a box slice profile).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from mripipe.data.phantom.anatomy import Deformation, PreparedTemplate
from mripipe.data.phantom.geometry import Grid, apply, orientation_matrix
from mripipe.data.phantom.lesions import Lesion, render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Acquired:
    """One simulated image and its ground truth, all on the same native grid.

    Attributes:
        grid: the native grid.
        image: (X, Y, Z) int16 magnitude image (what a scanner would store).
        clean: (X, Y, Z) float32 noise- and bias-free image, same intensity units.
        bias: (X, Y, Z) float32 multiplicative bias field.
        brain_mean: mean of ``clean * bias`` inside the brain (sets the noise sigma).
        noise_sigma: Rician noise sigma (standard deviation of each Gaussian component).
        labels: (X, Y, Z) uint16 lesion instance mask (1-based index into the lesion list),
            or None when not requested.
    """

    grid: Grid
    image: np.ndarray
    clean: np.ndarray
    bias: np.ndarray
    brain_mean: float
    noise_sigma: float
    labels: np.ndarray | None


def supersampling(spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """Sub-voxels per axis so that every sub-voxel is about as fine as the finest axis."""
    finest = min(spacing)
    f = [max(1, int(round(s / finest))) for s in spacing]
    return f[0], f[1], f[2]


def native_grid(
    prep: PreparedTemplate,
    scanner_to_template: np.ndarray,
    orientation: str,
    spacing: tuple[float, float, float],
    margin_mm: float,
) -> Grid:
    """The scanner's grid: axis-aligned in scanner space, ``orientation`` axis order, covering the head.

    Args:
        prep: prepared template (points sampling the head in template space).
        scanner_to_template: (4, 4) map from scanner points to (undeformed) template points.
        orientation: axis code such as "LPS" or "PIR" (see ``orientation_matrix``).
        spacing: voxel size (mm) along the index axes.
        margin_mm: air around the head (mm).
    """
    q = apply(np.linalg.inv(scanner_to_template), prep.head_points.T)
    direction = orientation_matrix(orientation)
    w = direction.T @ q
    lo = w.min(axis=1) - margin_mm
    hi = w.max(axis=1) + margin_mm
    sp = np.asarray(spacing, dtype=float)
    shape = np.ceil((hi - lo) / sp).astype(int) + 1
    return Grid(origin=direction @ lo, direction=direction, spacing=sp, shape=(int(shape[0]), int(shape[1]), int(shape[2])))


def bias_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float) -> np.ndarray:
    """Smooth multiplicative bias: ``exp`` of a random cubic polynomial with std ``strength``.

    Returns:
        (X, Y, Z) float32 field on a 2**-8 lattice (exactly what the stored truth holds).
    """
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    log_b = np.zeros(shape, dtype=np.float32)
    for a in range(4):
        for b in range(4 - a):
            for c in range(4 - a - b):
                if a + b + c == 0:
                    continue
                log_b += np.float32(rng.standard_normal() / (a + b + c)) * (x**a * y**b * z**c)
    std = float(log_b.std())
    log_b = (log_b - log_b.mean()) * np.float32(strength / std if std > 0 else 0.0)
    return dyadic(np.exp(log_b), 8)


def dyadic(arr: np.ndarray, bits: int) -> np.ndarray:
    """Round to multiples of 2**-bits as float32: exact, and the zero low mantissa bits compress well."""
    scale = float(2**bits)
    return (np.round(np.asarray(arr, dtype=np.float64) * scale) / scale).astype(np.float32)


def _block_mean(arr: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    if factors == (1, 1, 1):
        return arr
    fx, fy, fz = factors
    x, y, z = arr.shape
    return arr.reshape(x // fx, fx, y // fy, fy, z // fz, fz).mean(axis=(1, 3, 5))


def acquire(
    prep: PreparedTemplate,
    deformation: Deformation,
    lesions: list[Lesion],
    grid: Grid,
    scanner_to_template: np.ndarray,
    contrast: str,
    gain: float,
    bias_strength: float,
    snr: float,
    rng: np.random.Generator,
    with_labels: bool,
) -> Acquired:
    """Simulate one image of one contrast on ``grid``.

    Args:
        prep: prepared template.
        deformation: the subject's anatomy warp (template space).
        lesions: the session's lesions (template space).
        grid: native grid (see ``native_grid``).
        scanner_to_template: (4, 4) pose-and-scaling map, scanner -> template points.
        contrast: "T1w" (lesions hypointense) or "FLAIR" (lesions hyperintense).
        gain: intensity scale of this acquisition.
        bias_strength: standard deviation of the log bias field.
        snr: mean brain intensity (after bias) over the Rician sigma.
        rng: this acquisition's generator (bias and noise).
        with_labels: also return the lesion instance mask on this grid.
    """
    factors = supersampling((float(grid.spacing[0]), float(grid.spacing[1]), float(grid.spacing[2])))
    sub = grid.supersampled(factors)
    keep, p = template_points(prep, deformation, scanner_to_template, sub, 1)
    tissue = prep.t1 if contrast == "T1w" else prep.flair
    rel = np.zeros(int(np.prod(sub.shape)), dtype=np.float32)
    rel[keep] = ndi.map_coordinates(tissue, apply(prep.grid.physical_to_index(), p), order=1, mode="constant", cval=0.0)
    labels: np.ndarray | None = np.zeros(grid.shape, dtype=np.uint16) if with_labels else None
    if lesions:
        member, which_k, inside_k = render(lesions, p, float(sub.spacing.min()))
        values = np.array([les.t1 if contrast == "T1w" else les.flair for les in lesions], dtype=np.float32)
        hit = which_k >= 0
        at = keep[hit]
        rel[at] = rel[at] * (1.0 - member[hit]) + member[hit] * values[which_k[hit]]
        if with_labels:
            which = np.full(rel.shape, -1, dtype=np.int16)
            which[keep] = which_k
            inside = np.zeros(rel.shape, dtype=bool)
            inside[keep] = inside_k
            labels = _instance_mask(which.reshape(sub.shape), inside.reshape(sub.shape), len(lesions), factors)
    del p
    clean = dyadic(_block_mean(rel.reshape(sub.shape), factors) * np.float32(gain), 1)
    bias = bias_field(rng, grid.shape, bias_strength)
    signal = clean * bias
    # the brain's mean intensity, from every other voxel along each axis (8x cheaper, same mean)
    keep2, q = template_points(prep, deformation, scanner_to_template, grid, 2)
    in_brain = ndi.map_coordinates(prep.brain, apply(prep.grid.physical_to_index(), q), order=1, mode="constant", cval=0.0) >= 0.5
    strided = signal[::2, ::2, ::2].ravel()[keep2]
    brain_mean = float(strided[in_brain].mean()) if in_brain.any() else float(signal.mean())
    sigma = brain_mean / snr
    n1 = rng.standard_normal(grid.shape, dtype=np.float32) * np.float32(sigma)
    n2 = rng.standard_normal(grid.shape, dtype=np.float32) * np.float32(sigma)
    magnitude = np.sqrt((signal + n1) ** 2 + n2**2)
    image = np.clip(np.round(magnitude), 0, np.iinfo(np.int16).max).astype(np.int16)
    return Acquired(grid=grid, image=image, clean=clean, bias=bias, brain_mean=brain_mean, noise_sigma=sigma, labels=labels)


def template_points(
    prep: PreparedTemplate, deformation: Deformation, scanner_to_template: np.ndarray, grid: Grid, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Template physical points seen by the voxels of ``grid`` that may hold tissue.

    Voxels whose (undeformed) template point is surely air are skipped: about two thirds of a
    head-sized field of view, and the displacement field is only sampled for the rest.

    Args:
        prep: prepared template.
        deformation: the subject's anatomy warp.
        scanner_to_template: (4, 4) pose-and-scaling map.
        grid: the voxels' grid.
        stride: use every ``stride``-th voxel along each axis.

    Returns:
        ``(keep, points)``: (M,) flat C-order indices (into the strided grid) of the voxels
        kept, and their (3, M) float32 template points.
    """
    shape = [len(range(0, n, stride)) for n in grid.shape]
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    if stride != 1:
        idx *= np.float32(stride)
    y = apply(scanner_to_template @ grid.index_to_physical(), idx)
    del idx
    keep = np.flatnonzero(prep.may_be_nonzero(y, deformation.max_displacement))
    return keep, deformation.displace(y[:, keep])


def _instance_mask(which: np.ndarray, inside: np.ndarray, n: int, factors: tuple[int, int, int]) -> np.ndarray:
    """Label each voxel with the lesion covering at least half of its sub-voxels (1-based)."""
    shape = tuple(s // f for s, f in zip(which.shape, factors, strict=True))
    if factors == (1, 1, 1):
        return np.where(inside, which + 1, 0).astype(np.uint16)
    best = np.zeros(shape, dtype=np.float32)
    out = np.zeros(shape, dtype=np.uint16)
    for k in range(n):
        frac = _block_mean((inside & (which == k)).astype(np.float32), factors)
        take = (frac >= 0.5) & (frac > best)
        out[take] = k + 1
        best = np.maximum(best, frac)
    return out

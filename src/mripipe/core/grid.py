"""The one rule for "the same grid": whether a label map lies on its image's voxels, whatever the
order and direction of its axes (dcm2niix may write a label with its axes permuted or flipped).

Two grids are the same when a pure permutation and flip of the label's voxel axes puts every
voxel of the label on a voxel of the image, the voxel corners of both at most ``tolerance_mm``
apart (``data.grid_tolerance_mm``). The corner distance bounds every difference in mm: origin,
spacing (times the extent) and direction (a rotation by ``a`` radians moves the corners by about
``a`` times the extent). :func:`match_grid` decides it, for validation (NIfTI headers as RAS
affines) and for :func:`mripipe.core.imageio.read_label` (SimpleITK images, LPS): the relation of
two grids does not depend on the world convention, as long as both are given in the same one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import SimpleITK as sitk

from mripipe.core.config import with_defaults


class Grid(NamedTuple):
    """A voxel grid: ``affine`` (4 x 4, voxel index (x, y, z) -> world mm) and ``shape`` (X, Y, Z)."""

    affine: np.ndarray
    shape: tuple[int, ...]

    @classmethod
    def of(cls, img: sitk.Image) -> Grid:
        """The spatial (first three axes') grid of a SimpleITK image (LPS world)."""
        n = img.GetDimension()
        direction = np.array(img.GetDirection(), float).reshape(n, n)[:3, :3]
        affine = np.eye(4)
        affine[:3, :3] = direction * np.array(img.GetSpacing()[:3], float)
        affine[:3, 3] = img.GetOrigin()[:3]
        return cls(affine, tuple(int(s) for s in img.GetSize()[:3]))

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each index axis."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)


class AxisOrder(NamedTuple):
    """How a label's voxel axes map onto its image's: image axis ``r`` runs along label axis
    ``source[r]``, reversed where ``flip[r]``."""

    source: tuple[int, ...]
    flip: tuple[bool, ...]

    @property
    def identity(self) -> bool:
        """The label is already in the image's voxel order."""
        return self.source == (0, 1, 2) and not any(self.flip)

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """An (X, Y, Z) array of the label in the image's voxel order (a view: no interpolation)."""
        out = arr.transpose(self.source)
        return out[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]


class GridMatch(NamedTuple):
    """The outcome of :func:`match_grid`: ``order`` when the grids are the same (else None) and
    ``detail``, what differs ("" when they are the same)."""

    order: AxisOrder | None
    detail: str


@dataclass(frozen=True)
class LabelGrid:
    """How a label map must lie on its image's grid (the ``data`` section's keys).

    Attributes:
        tolerance_mm: ``data.grid_tolerance_mm``, the largest corner distance of the same grid.
        resample: ``data.resample_labels``: a label off its image's grid is resampled onto it
            (nearest neighbour) instead of refused.
    """

    tolerance_mm: float
    resample: bool

    @classmethod
    def from_params(cls, data: Mapping[str, Any] | None = None) -> LabelGrid:
        """From the ``data`` section (or a part of it); missing keys take the schema's defaults."""
        p = with_defaults("data", {k: v for k, v in (data or {}).items()
                                   if k in ("grid_tolerance_mm", "resample_labels")})
        return cls(float(p["grid_tolerance_mm"]), bool(p["resample_labels"]))


def _corners(shape: tuple[int, ...]) -> np.ndarray:
    """The 8 outer voxel corners of a grid as homogeneous voxel indices (4, 8)."""
    return np.array([[i, j, k, 1.0] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                     for k in (-0.5, shape[2] - 0.5)]).T


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _axis_order(grid: Grid, reference: Grid) -> AxisOrder | None:
    """The permutation and flip nearest to the label's axes in the image's index space (None
    when two label axes run along the same image axis: a rotation, not a permutation)."""
    try:
        steps = np.linalg.solve(reference.affine, grid.affine)[:3, :3]  # label step -> image index
    except np.linalg.LinAlgError:
        return None
    source = tuple(int(np.argmax(np.abs(steps[r]))) for r in range(3))
    if sorted(source) != [0, 1, 2]:
        return None
    return AxisOrder(source, tuple(bool(steps[r, source[r]] < 0) for r in range(3)))


def _difference(grid: Grid, reference: Grid, order: AxisOrder, gap: float, tolerance_mm: float) -> str:
    """What differs between two grids of matching shape whose corners are ``gap`` mm apart."""
    extent = float(max(reference.shape))
    spacing = grid.spacing[list(order.source)]
    if float(np.abs(spacing - reference.spacing).max()) * extent > tolerance_mm:
        what = f"spacing {_fmt(spacing)} vs {_fmt(reference.spacing)} mm"
    else:
        signs = np.where(order.flip, -1.0, 1.0)
        cos_l = grid.affine[:3, list(order.source)] / spacing * signs
        cos_r = reference.affine[:3, :3] / reference.spacing
        angle = float(np.degrees(np.arccos(np.clip(np.sum(cos_l * cos_r, axis=0), -1.0, 1.0)).max()))
        what = f"axes rotated by {angle:.3g} degrees" if np.radians(angle) * extent > tolerance_mm \
            else "origin shifted"
    return f"{what}: voxel corners up to {gap:.3g} mm apart, more than {tolerance_mm:g} mm"


def match_grid(grid: Grid, reference: Grid, tolerance_mm: float) -> GridMatch:
    """Whether a label's grid is its image's, up to a permutation and flip of its voxel axes.

    Args:
        grid: the label's grid.
        reference: the image's grid (the same world convention).
        tolerance_mm: the largest distance between matched voxel corners (``data.grid_tolerance_mm``).

    Returns:
        The :class:`GridMatch`: the axis order that brings the label onto the image's voxels, or
        None and what differs (shape, spacing, direction or origin, and by how much).
    """
    if sorted(grid.shape) != sorted(reference.shape):
        return GridMatch(None, f"shape {tuple(grid.shape)} vs {tuple(reference.shape)}")
    order = _axis_order(grid, reference)
    if order is None:
        return GridMatch(None, "axes rotated beyond a permutation or flip of the image's axes")
    shape = tuple(grid.shape[s] for s in order.source)
    if shape != tuple(reference.shape):
        return GridMatch(None, f"shape {tuple(grid.shape)} vs {tuple(reference.shape)} "
                               f"(in the image's axis order {shape})")
    corners = _corners(grid.shape)
    mapped = np.ones_like(corners)
    for r, (s, f) in enumerate(zip(order.source, order.flip, strict=True)):
        mapped[r] = reference.shape[r] - 1 - corners[s] if f else corners[s]
    gap = float(np.linalg.norm((grid.affine @ corners - reference.affine @ mapped)[:3], axis=0).max())
    if gap > tolerance_mm:
        return GridMatch(None, _difference(grid, reference, order, gap, tolerance_mm))
    return GridMatch(order, "")

"""Read one image file's voxels in bounded slabs (:mod:`mripipe.data.voxels`) after its header
has passed (:mod:`mripipe.data.header`), and report what is wrong with the values: truncated,
readable, finite, constant, overflow; a label map's distinct values; a coarse copy's contrast
signature (:mod:`mripipe.data.contrast`). Nothing holds the whole array.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mripipe.data.contrast import signature
from mripipe.data.header import Header, Issue
from mripipe.data.voxels import TruncatedError, slabs

#: the coarse copy kept of each volume: voxels about this far apart (mm) ...
COARSE_MM = 4.0
#: ... unless that makes more than about this many
COARSE_VOXELS = 1 << 18
#: distinct values of a label map kept (sorted, smallest first)
MAX_LABEL_VALUES = 1 << 16


@dataclass
class FileInfo:
    """What validation needs of one file (``issues``: empty when fine).

    Attributes:
        shape: spatial size (X, Y, Z); volumes: 1, or the 4th dimension of a 4-D file.
        affine: 4x4 voxel -> RAS mm.
        values: the distinct values (label maps only, else None).
        signatures: each volume's contrast signature (None where it has none).
    """

    path: Path
    shape: tuple[int, ...] = ()
    volumes: int = 1
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    values: np.ndarray | None = None
    issues: list[Issue] = field(default_factory=list)
    signatures: list[np.ndarray | None] = field(default_factory=list)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each index axis."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def ok(self) -> bool:
        """No error (warnings allowed)."""
        return not any(i.severity == "error" for i in self.issues)


@dataclass
class _Summary:
    """What one pass over the slabs gathers."""

    nonfinite: int
    lo: np.ndarray
    hi: np.ndarray
    values: np.ndarray
    coarse: list[list[np.ndarray]]


def coarse_step(header: Header) -> tuple[int, int, int]:
    """Every k-th voxel along each axis: about :data:`COARSE_MM` apart (coarser where the field of
    view would give more than about :data:`COARSE_VOXELS` per volume), whatever the voxel size."""
    target = max(COARSE_MM, (float(np.prod(header.fov_mm)) / COARSE_VOXELS) ** (1 / 3))
    kx, ky, kz = (max(1, round(target / float(s))) for s in header.spacing)
    return kx, ky, kz


def _summarise(header: Header, label: bool) -> _Summary:
    kx, ky, kz = coarse_step(header)
    out = _Summary(0, np.full(header.volumes, np.inf), np.full(header.volumes, -np.inf),
                   np.array([]), [[] for _ in range(header.volumes)])
    for v, z0, slab in slabs(header):
        if slab.dtype.kind == "f":
            out.nonfinite += int(slab.size - np.count_nonzero(np.isfinite(slab)))
            if out.nonfinite:  # reported alone: the other checks need finite values
                continue
        out.lo[v] = min(out.lo[v], float(slab.min()))
        out.hi[v] = max(out.hi[v], float(slab.max()))
        if label:
            out.values = np.union1d(out.values, _distinct(slab))[:MAX_LABEL_VALUES]
        else:
            out.coarse[v].append(np.asarray(slab[::kx, ::ky, (-z0) % kz::kz], dtype=np.float32))
    return out


def _distinct(slab: np.ndarray) -> np.ndarray:
    """The distinct values of a slab (counted by value for small non-negative integers: fast)."""
    if slab.dtype.kind in "ui" and slab.size and 0 <= slab.min() and slab.max() < MAX_LABEL_VALUES:
        return np.flatnonzero(np.bincount(slab.ravel()))
    return np.unique(slab)


def _read_issue(exc: Exception) -> Issue:
    if isinstance(exc, TruncatedError):
        return Issue("truncated", f"the voxel data ends after {exc.present:,} of the {exc.promised:,} bytes "
                                  "its header promises (compressed stream cut short)")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    return Issue("readable", f"cannot be read in full ({type(exc).__name__}: {first[:200]})")


def inspect_file(header: Header, label: bool = False, magnitude: bool = True,
                 overflow_fraction: float = 0.001) -> FileInfo:
    """Stream the voxels of a file whose header passed and run every value check on them.

    Args:
        header: the file's header (:func:`mripipe.data.header.read_header`); its issues are
            carried over, and with an error among them nothing is read.
        label: a label map (values are collected; the constant and overflow checks do not apply).
        magnitude: the intensities cannot be negative (every channel but ``data.signed_channels``).
        overflow_fraction: the share of voxels far below zero that makes an overflow.

    Returns:
        The file's geometry and everything wrong with it: the header's issues, then truncated,
        readable, finite, constant, overflow.
    """
    info = FileInfo(header.path, header.shape, header.volumes, header.affine, issues=list(header.issues))
    if not info.ok:
        return info
    try:
        summary = _summarise(header, label)
    except (TruncatedError, OSError, EOFError, ValueError, RuntimeError, zlib.error) as exc:
        info.issues.append(_read_issue(exc))
        return info
    if summary.nonfinite:
        info.issues.append(Issue("finite", f"{summary.nonfinite} voxel(s) are NaN or infinite"))
        return info
    if label:
        info.values = summary.values
        return info
    for v in range(info.volumes):
        where = f"volume {v} " if info.volumes > 1 else ""
        if summary.lo[v] == summary.hi[v]:
            info.issues.append(Issue("constant", f"{where}every voxel is {summary.lo[v]:g}"))
            info.signatures.append(None)
            continue
        coarse = np.concatenate(summary.coarse[v], axis=2)
        if magnitude:
            _overflow(info, coarse, where, header, overflow_fraction)
        info.signatures.append(signature(coarse, header.spacing * np.array(coarse_step(header))))
    return info


def _overflow(info: FileInfo, sample: np.ndarray, where: str, header: Header, fraction: float) -> None:
    """Many voxels far below zero in a magnitude image (below -0.2 x its maximum): the bright
    voxels of an unsigned export read as signed wrap around to large negative values."""
    hi = max(float(sample.max()), 0.0)
    below = -0.2 * hi
    share = float(np.mean(sample < below)) if hi > 0 else float(np.mean(sample < 0))
    if share > fraction:
        info.issues.append(Issue("overflow", f"{where}{share:.2%} of voxels below {below:.4g} (min {sample.min():.4g}, "
                                             f"max {hi:.4g}, stored as {header.dtype.name}) in a magnitude image: integer "
                                             "overflow is the likely cause (e.g. a uint16 export read as int16)"))

"""Online patch sampling from cached volumes, with foreground oversampling (as nnU-Net does).

Each training epoch draws fresh patches from the brain-cropped volumes that ``mripipe patches``
caches (:mod:`mripipe.learn.patches`). Sample ``i`` of epoch ``e`` depends only on
``(seed, e, i)``:

- whether it is a *foreground* sample is fixed by its index: exactly
  ``floor((i + 1) p) - floor(i p)`` with ``p = pos_fraction``, so any ``n`` consecutive samples
  hold ``floor(n p)`` or ``ceil(n p)`` of them (a batch of 4 at ``p = 0.5`` holds 2);
- a foreground sample picks a scan with lesions, a lesion *instance* uniformly (small lesions are
  sampled as often as large ones), a voxel inside it, and places that voxel at a random offset
  within the middle half of the patch (so lesions are not always centred);
- any other sample is uniform: a scan, then a patch centre anywhere in its cropped volume (it may
  still hold lesion).

Multi-class (K >= 2 classes, the cached labels being class indices 0..K): the foreground share
is split evenly across the classes, as MONAI's ``RandCropByLabelClassesd`` ratios do: the j-th
foreground sample of an epoch (``j = floor(i p)``) is of class ``j mod K + 1``, so any ``n K``
consecutive foreground samples hold ``n`` of each class. It picks a scan holding that class, then
a voxel of the class uniformly (a class absent from every scan falls back to any foreground
group); the patch placement is the same.

Patches reaching past the volume are zero-padded (0 is the normalised background value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mripipe.core.utils import rng


@dataclass(frozen=True)
class Foreground:
    """Lesion voxels of one scan, grouped by instance.

    Attributes:
        voxels: flat (C-order) indices of lesion voxels, sorted by instance id.
        starts: ``(K + 1,)`` offsets of each of the K instances in ``voxels``.
        ids: ``(K,)`` the label value of each instance (the class index, multi-class).
    """

    voxels: np.ndarray
    starts: np.ndarray
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def n_instances(self) -> int:
        """Number of lesion instances."""
        return len(self.starts) - 1


def foreground(label: np.ndarray) -> Foreground:
    """Group the lesion voxels of an instance label ``(X, Y, Z)`` (0 = background) by instance."""
    flat = np.asarray(label).ravel()
    voxels = np.flatnonzero(flat)
    ids = flat[voxels]
    order = np.argsort(ids, kind="stable")
    voxels, ids = voxels[order], ids[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if ids.size else np.zeros(0, np.int64)
    return Foreground(voxels.astype(np.int64), np.r_[starts, ids.size].astype(np.int64),
                      ids[starts].astype(np.int64))


def is_positive(index: int, pos_fraction: float) -> bool:
    """Whether sample ``index`` is a foreground sample (exactly a ``pos_fraction`` share)."""
    return int(np.floor((index + 1) * pos_fraction)) > int(np.floor(index * pos_fraction))


def sample_class(index: int, pos_fraction: float, n_classes: int) -> int:
    """The class (1..K) of foreground sample ``index``: the classes in turn over the epoch's
    foreground samples."""
    return int(np.floor(index * pos_fraction)) % n_classes + 1


def crop(volume: np.ndarray, start: Sequence[int] | np.ndarray, size: Sequence[int]) -> np.ndarray:
    """The ``size`` window of ``volume`` ``(C, X, Y, Z)`` starting at voxel ``start`` (may be
    negative or reach past the end: zero-padded). Returns ``(C, px, py, pz)`` of its dtype."""
    out = np.zeros((volume.shape[0], *size), dtype=volume.dtype)
    src, dst = [], []
    for s, n, dim in zip(start, size, volume.shape[1:], strict=True):
        lo, hi = max(0, s), min(dim, s + n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out


def patch_start(
    shape: Sequence[int], size: Sequence[int], fg: Foreground | None, gen: np.random.Generator
) -> np.ndarray:
    """Start voxel of one patch: around a lesion voxel of ``fg``, else uniform in the volume.

    Args:
        shape: the cached volume's spatial shape ``(X, Y, Z)``.
        size: patch size ``(px, py, pz)``.
        fg: the scan's lesions for a foreground sample; None for a uniform one.
        gen: the sample's generator.

    Returns:
        int64 ``(3,)``: the patch covers ``start .. start + size - 1`` on each axis.
    """
    size_a = np.asarray(size, dtype=np.int64)
    if fg is None or fg.n_instances == 0:
        centre = np.array([gen.integers(0, s) for s in shape], dtype=np.int64)
        return centre - size_a // 2
    return _around(shape, size_a, fg, int(gen.integers(fg.n_instances)), gen)


def _around(shape: Sequence[int], size_a: np.ndarray, fg: Foreground, k: int,
            gen: np.random.Generator) -> np.ndarray:
    """Start of a patch holding a uniformly drawn voxel of group ``k`` of ``fg``."""
    flat = fg.voxels[int(gen.integers(fg.starts[k], fg.starts[k + 1]))]
    voxel = np.array(np.unravel_index(int(flat), tuple(shape)), dtype=np.int64)
    # The voxel lands anywhere in the middle half of the patch.
    offset = np.array([gen.integers(s // 4, s - s // 4) for s in size_a], dtype=np.int64)
    return voxel - offset


@dataclass(frozen=True)
class Draw:
    """Where sample ``i`` of an epoch comes from: the scan's position and the patch start."""

    scan: int
    start: np.ndarray
    positive: bool


def draw(
    index: int,
    seed: int,
    epoch: int,
    shapes: Sequence[Sequence[int]],
    fgs: Sequence[Foreground],
    size: Sequence[int],
    pos_fraction: float,
    n_classes: int = 1,
) -> Draw:
    """The source of sample ``index`` of ``epoch``; depends only on ``(seed, epoch, index)`` and
    the scans (``shapes`` and ``fgs`` in a fixed order).

    A foreground sample falls back to a uniform one when no scan has a lesion. ``n_classes``
    >= 2: the groups of ``fgs`` are classes, and the foreground share is split evenly across them.
    """
    gen = rng(seed, "sample", epoch, index)
    lesion_scans = [k for k, f in enumerate(fgs) if f.n_instances > 0]
    positive = bool(lesion_scans) and is_positive(index, pos_fraction)
    if positive and n_classes >= 2:
        cls = sample_class(index, pos_fraction, n_classes)
        having = [(k, int(np.flatnonzero(f.ids == cls)[0])) for k, f in enumerate(fgs)
                  if np.any(f.ids == cls)]
        if having:
            k, group = having[int(gen.integers(len(having)))]
            start = _around(shapes[k], np.asarray(size, dtype=np.int64), fgs[k], group, gen)
            return Draw(k, start, True)
    if positive:
        k = lesion_scans[int(gen.integers(len(lesion_scans)))]
        return Draw(k, patch_start(shapes[k], size, fgs[k], gen), True)
    k = int(gen.integers(len(shapes)))
    return Draw(k, patch_start(shapes[k], size, None, gen), False)

"""Lesion components of binary masks (26-connectivity), shared by prediction and evaluation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

STRUCTURE = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a ``(X, Y, Z)`` mask: ``(labels, count)``, int32 labels
    1..count (0 = background)."""
    labels, k = ndimage.label(np.asarray(mask, dtype=bool), structure=STRUCTURE)
    return labels.astype(np.int32, copy=False), int(k)


def remove_small(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    """``mask`` as booleans without its components of fewer than ``min_voxels`` voxels."""
    if min_voxels <= 0:
        return np.asarray(mask, dtype=bool)
    labels, k = components(mask)
    if k == 0:
        return np.asarray(mask, dtype=bool)
    keep = np.bincount(labels.ravel(), minlength=k + 1) >= min_voxels
    keep[0] = False
    return keep[labels]

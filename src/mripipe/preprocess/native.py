"""The anatomy-agnostic path: a scan stays in its own (scanner) space.

With ``register: false`` and ``skull_strip: false`` (prostate, abdomen, any non-brain task) the
output grid is the reference channel's own grid after reorientation to RAS, cropped to the
bounding box of its foreground (non-zero voxels, or voxels whose magnitude exceeds
``foreground_threshold``; holes filled, as nnU-Net crops) and resampled to the target spacing
over the same physical extent. Physical coordinates are untouched, so ``transform.tfm`` is the
identity and the inverse mapping of predict/evaluate (:func:`mripipe.infer.apply.to_native`)
puts a prediction back on the raw grid unchanged. ``brainmask.nii.gz`` holds the foreground.

Normalisation (``normalise``), on either path:

- ``true`` / ``zscore_foreground``: z-score with the statistics inside the mask (the template brain
  mask, or the foreground here); the native path sets voxels outside the foreground to 0.
- ``zscore_image``: z-score with the statistics of the whole image.
- ``ct_clip``: clip to ``ct_window`` [low, high] (e.g. Hounsfield units), then map the window
  linearly onto [-1, 1] (fixed, dataset-independent: intensities keep their physical meaning).
- ``false``: none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mripipe.core.imageio import to_array
from mripipe.preprocess import intensity

log = logging.getLogger(__name__)

NORMALISE_MODES = (True, False, "zscore_foreground", "zscore_image", "ct_clip")


@dataclass(frozen=True)
class Crop:
    """A box of voxels of the (reoriented) reference image, in (X, Y, Z) index order.

    Attributes:
        start: first index kept along each axis.
        size: number of voxels kept along each axis.
        full: size of the uncropped reference image.
    """

    start: tuple[int, int, int]
    size: tuple[int, int, int]
    full: tuple[int, int, int]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (qc.json ``crop``)."""
        return {"start": list(self.start), "size": list(self.size), "full": list(self.full)}


def is_native(p: dict[str, Any]) -> bool:
    """Whether ``preprocess:`` keeps scans in their own space (no template, no skull strip)."""
    return not p["register"] and not p["skull_strip"]


def foreground(img: sitk.Image, threshold: float) -> np.ndarray:
    """Foreground of an image: voxels with ``|value| > threshold``, holes filled.

    Args:
        img: 3-D image (X, Y, Z).
        threshold: 0 keeps every non-zero voxel.

    Returns:
        bool array (X, Y, Z).
    """
    mask = np.abs(to_array(img)) > float(threshold)
    return np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)


def crop_box(mask: np.ndarray, crop: str) -> Crop:
    """The bounding box of ``mask`` (``crop: nonzero``) or the whole image (``none``, or an empty
    mask, which is logged)."""
    full = (int(mask.shape[0]), int(mask.shape[1]), int(mask.shape[2]))
    if crop == "none" or not mask.any():
        if crop != "none":
            log.warning("empty foreground: the image is not cropped")
        return Crop((0, 0, 0), full, full)
    idx = np.nonzero(mask)
    lo = [int(i.min()) for i in idx]
    hi = [int(i.max()) + 1 for i in idx]
    return Crop((lo[0], lo[1], lo[2]), (hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]), full)


def output_grid(ref: sitk.Image, box: Crop, spacing: tuple[float, float, float]) -> sitk.Image:
    """The output grid: the cropped extent of ``ref`` resampled to ``spacing``.

    The grid covers the same physical box as the cropped voxels (outer corners kept, the number
    of voxels rounded, as nnU-Net resamples), in ``ref``'s direction. At the reference's own
    spacing it is exactly the cropped voxels, so mapping back is lossless.

    Args:
        ref: the reoriented reference image (X, Y, Z).
        box: the crop in ``ref``'s indices.
        spacing: target spacing in mm along the grid axes.

    Returns:
        An empty float32 image carrying the grid's geometry.
    """
    old = np.array(ref.GetSpacing(), dtype=float)
    new = np.array(spacing, dtype=float)
    size = [max(1, int(round(n * o / s))) for n, o, s in zip(box.size, old, new, strict=True)]
    # the first new voxel centre, in old continuous indices: same outer corner of the box
    first = [b - 0.5 + 0.5 * s / o for b, s, o in zip(box.start, new, old, strict=True)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetDirection(ref.GetDirection())
    grid.SetSpacing([float(s) for s in new])
    grid.SetOrigin(ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in first]))
    return grid


def mask_on_grid(mask: np.ndarray, ref: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """A boolean mask on ``ref``'s grid resampled (nearest neighbour) onto ``grid``."""
    img = sitk.GetImageFromArray(mask.astype(np.uint8).transpose(2, 1, 0))
    img.CopyInformation(ref)
    out = sitk.Resample(img, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return to_array(out) > 0


def normalise(stack: np.ndarray, mask: np.ndarray, p: dict[str, Any], native: bool) -> np.ndarray:
    """Normalise every channel of ``stack`` (C, X, Y, Z) in place per ``p["normalise"]``.

    Args:
        stack: float32 channels (C, X, Y, Z).
        mask: (X, Y, Z) brain mask (template path) or foreground (native path).
        p: the complete ``preprocess:`` section (``normalise``, ``skull_strip``, ``ct_window``).
        native: the native path (the foreground is zeroed outside after a foreground z-score).

    Returns:
        ``stack``.
    """
    mode = p["normalise"]
    zero_outside = True if native else bool(p["skull_strip"])
    for c in range(stack.shape[0]):
        if mode is True or mode == "zscore_foreground":
            stack[c] = intensity.zscore_in_mask(stack[c], mask, zero_outside=zero_outside)
        elif mode == "zscore_image":
            stack[c] = intensity.zscore_in_mask(stack[c], np.ones(mask.shape, bool), zero_outside=False)
        elif mode == "ct_clip":
            low, high = (float(v) for v in p["ct_window"])
            stack[c] = (np.clip(stack[c], low, high) - (low + high) / 2) / ((high - low) / 2)
        if p["skull_strip"] and not (mode is True or mode == "zscore_foreground"):
            stack[c][~mask] = 0
    return stack

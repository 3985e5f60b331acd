"""Per-scan segmentation scores: Dice and HD95 (MONAI) with the empty-mask convention, volumes
and lesion detection, on the grid the truth is given on (native or template space).

HD95 convention (BraTS's): when the prediction and the truth both hold voxels, HD95 is MONAI's
95th-percentile Hausdorff distance in mm; when exactly one of them is empty, it is the diagonal
of the scored image in mm (``sqrt(sum((size * spacing)^2))``, the largest distance the grid
allows: 373.13 mm for BraTS's 240 x 240 x 155 grid of 1 mm); when both are empty, 0 mm. Such a
scan is counted, never dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from mripipe.core.components import remove_small
from mripipe.core.config import param
from mripipe.core.froc import ScanDetections
from mripipe.core.grid import LabelGrid
from mripipe.core.imageio import read_image, read_label, to_array
from mripipe.core.matching import detect_scan, find_candidates

HD95_CONVENTION = ("HD95 (mm, MONAI, 95th percentile) when prediction and truth both hold voxels; "
                   "the image diagonal in mm when exactly one is empty (BraTS); 0 when both are "
                   "empty. Every scan is counted.")


def image_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the grid's diagonal in mm: ``sqrt(sum((shape * spacing)^2))``."""
    return float(np.sqrt(np.sum((np.asarray(shape, float) * np.asarray(spacing, float)) ** 2)))


def overlap_scores(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]
                   ) -> tuple[float, float, str]:
    """Dice and HD95 (mm) of two binary masks, from MONAI, with the empty-mask convention.

    Args:
        pred: predicted lesion mask, shape (X, Y, Z).
        truth: true lesion mask, shape (X, Y, Z).
        spacing: voxel size in mm (X, Y, Z).

    Returns:
        ``(dice, hd95, convention)``: Dice is 1.0 when both masks are empty and 0.0 when only one
        is; ``convention`` is "" (measured), ``empty_prediction``, ``empty_truth`` or
        ``both_empty`` (see the module docstring for the HD95 each gets).
    """
    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))[None, None]
    t = torch.from_numpy(np.ascontiguousarray(truth, dtype=np.float32))[None, None]
    dice = float(compute_dice(p, t, include_background=True, ignore_empty=False)[0, 0])
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return dice, 0.0, "both_empty"
    if not has_pred or not has_truth:
        return dice, image_diagonal(pred.shape, spacing), "empty_truth" if has_pred else "empty_prediction"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95,
                                        spacing=list(spacing))
    return dice, float(hd[0, 0]), ""


def truth_on_grid(label_path: Path | None, prob_img: sitk.Image, prob_path: Path,
                  label_grid: LabelGrid | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """The truth array on the prediction's grid (zeros without a label file) and its spacing.

    The label is read by :func:`~mripipe.core.imageio.read_label`, the reader preprocessing uses:
    on the same grid with permuted or flipped axes it is reordered losslessly; on another grid it
    is an InputError naming it (or resampled, with ``label_grid.resample``).
    """
    if label_path is None or str(label_path) == "":
        size = tuple(int(s) for s in prob_img.GetSize()[:3])
        return np.zeros(size, np.uint16), tuple(float(s) for s in prob_img.GetSpacing()[:3])
    label_img = read_label(Path(label_path), prob_img, label_grid, str(prob_path))
    return to_array(label_img), tuple(float(s) for s in label_img.GetSpacing())


def score_scan(scan: str, prob_path: Path, label_path: Path | None, params: Mapping[str, Any],
               label_grid: LabelGrid | None = None) -> tuple[dict[str, Any], ScanDetections]:
    """Per-scan segmentation and detection results of one predicted probability map.

    Args:
        scan: scan id.
        prob_path: lesion probability map (X, Y, Z).
        label_path: instance label map on the same grid, or None for a scan without lesions.
        params: the ``evaluate`` section.
        label_grid: how the label must lie on the prediction's grid (default the schema's).

    Returns:
        ``(row, detections)``: the ``per_case.tsv`` row and the matching outcome.
    """
    prob_img = read_image(prob_path)
    prob = to_array(prob_img)
    label, spacing = truth_on_grid(label_path, prob_img, prob_path, label_grid)
    thr = float(param("evaluate", params, "threshold"))
    # Candidates come from a lower threshold than the mask, so the FROC curve sweeps operating
    # points beyond the mask's; each is scored by its maximum probability (DESIGN.md).
    cand = param("evaluate", params, "candidate_threshold")  # null: none chosen, the mask's own
    det = detect_scan(scan, prob, label, threshold=min(thr, float(thr if cand is None else cand)),
                      min_overlap=float(param("evaluate", params, "min_overlap")),
                      measure=str(param("evaluate", params, "overlap_measure")), instances=True)
    min_voxels = float(params.get("min_lesion_mm3") or 0.0) / float(np.prod(spacing))
    pred, truth = remove_small(prob >= thr, min_voxels), label > 0
    dice, hd95, convention = overlap_scores(pred, truth, spacing)
    ml = float(np.prod(spacing)) / 1000.0
    n_cand = len(find_candidates(prob, thr)[1])  # lesion load at the operating threshold
    row = {
        "scan": scan, "n_lesions": det.n_lesions, "n_candidates": n_cand,
        "n_tp": len(det.tp_scores), "n_fp": len(det.fp_scores), "n_ignored": det.n_ignored,
        "n_missed": det.n_missed, "case_score": det.case_score, "dice": dice, "hd95_mm": hd95,
        "hd95_convention": convention,
        "true_volume_ml": float(truth.sum()) * ml, "pred_volume_ml": float(pred.sum()) * ml,
    }
    row["volume_error_ml"] = (float(pred.sum()) - float(truth.sum())) * ml
    return row, det

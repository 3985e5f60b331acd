"""Multi-class segmentation scores (K >= 2 foreground classes): per class, per region, and lesion
detection per named class or region.

The label map (``predict.json``'s ``labels``: name -> integer value, background 0 implicit) orders
the foreground classes by value; network channel ``k`` (1..K) and the value ``k`` of the uint8
``{scan}_seg.nii.gz`` are the k-th class. Truth label files hold the label *values*.

Per scan (one row of ``per_case.tsv``):

- ``dice``, ``hd95_mm``, ``hd95_convention``, volumes, ``n_lesions`` and the detection columns
  score every foreground class as one lesion class (the binary path's columns, same meaning);
- per class and per ``evaluate.regions`` region ``R`` (the union of its classes): ``dice_R``,
  ``hd95_mm_R``, ``hd95_convention_R``, ``true_volume_ml_R``, ``pred_volume_ml_R``, from the
  segmentation as written (argmax; no threshold or minimum lesion size);
- per ``evaluate.detection_classes`` name ``D``: ``n_lesions_D``, ``n_tp_D``, ``n_fp_D``,
  ``case_score_D``. Candidates are the components of that class's probability (a region's: the sum
  of its classes' probabilities) at the candidate threshold; lesions are the 26-connected
  components of its truth mask.

Headline (:func:`class_headline`): ``dice_R`` / ``hd95_mm_R`` / ``hd95_mm_median_R`` are the mean /
mean / median over the test scans whose truth holds ``R`` (as the binary ``dice`` is over scans with
lesions); ``dice``, ``hd95_mm`` and ``hd95_mm_median`` are their means over the K classes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from mripipe.core.config import param
from mripipe.core.errors import InputError
from mripipe.core.froc import FP_RATES, ScanDetections, detection_metrics
from mripipe.core.grid import LabelGrid
from mripipe.core.imageio import read_image, to_array
from mripipe.core.labels import class_index
from mripipe.core.matching import detect_scan, find_candidates
from mripipe.evaluate.labelmap import LabelSpec
from mripipe.evaluate.scoring import overlap_scores, truth_on_grid


def _channels(img: sitk.Image, path: Path, n: int) -> np.ndarray:
    """A K+1-channel probability image as (C, X, Y, Z) float array, C checked."""
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = to_array(img)
    elif img.GetDimension() == 4:
        arr = np.ascontiguousarray(sitk.GetArrayFromImage(img).transpose(0, 3, 2, 1))
    else:
        arr = to_array(img)[None]
    if arr.shape[0] != n:
        raise InputError(f"{path}: {arr.shape[0]} channel(s), expected {n} (background + the "
                         f"label map's classes)")
    return arr.astype(np.float32, copy=False)


def _grid(img: sitk.Image) -> sitk.Image:
    """A 3-D image on the spatial grid of ``img`` (for the grid checks against the truth)."""
    if img.GetDimension() == 4:
        size = list(img.GetSize())
        return sitk.Extract(img, size[:3] + [0], [0, 0, 0, 0], sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
    return img


def read_scan(prob_path: Path, seg_path: Path | None, label_path: Path | None, spec: LabelSpec,
              label_grid: LabelGrid | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
    """``(prob (C, X, Y, Z), seg (X, Y, Z), truth (X, Y, Z), spacing)``, seg and truth as channel
    indices 0..K (a truth value outside the label map is an InputError naming the file).

    Without ``seg_path`` (template space) the segmentation is the argmax of the probabilities.
    """
    prob_img = read_image(prob_path)
    prob = _channels(prob_img, prob_path, spec.n_classes + 1)
    if seg_path is not None:
        seg = to_array(read_image(seg_path))
        if seg.shape != prob.shape[1:]:
            raise InputError(f"{seg_path}: shape {seg.shape} differs from {prob_path} {prob.shape[1:]}")
        if seg.size and (seg.min() < 0 or seg.max() > spec.n_classes):
            raise InputError(f"{seg_path}: values outside 0..{spec.n_classes} (the label map's classes)")
    else:
        seg = np.argmax(prob, axis=0)
    truth, spacing = truth_on_grid(label_path, _grid(prob_img), prob_path, label_grid)
    truth = class_index(truth, spec.classes, str(label_path))  # values -> channels 0..K, checked
    return prob, seg.astype(np.int64, copy=False), truth, spacing


def score_scan_classes(scan: str, prob_path: Path, seg_path: Path | None, label_path: Path | None,
                       spec: LabelSpec, params: Mapping[str, Any], label_grid: LabelGrid | None = None
                       ) -> tuple[dict[str, Any], ScanDetections, dict[str, ScanDetections]]:
    """One scan's ``per_case.tsv`` row, its all-foreground detections and those per detection name.

    Args:
        scan: scan id.
        prob_path: K+1-channel probabilities (background first).
        seg_path: uint8 segmentation 0..K on the same grid, or None for the argmax of ``prob``.
        label_path: truth label values on the same grid, or None for a scan without foreground.
        spec: :func:`label_spec`.
        params: the ``evaluate`` section (threshold, candidate_threshold, min_overlap, ...).
        label_grid: how the truth must lie on the prediction's grid (default the schema's).
    """
    prob, seg, truth, spacing = read_scan(prob_path, seg_path, label_path, spec, label_grid)
    thr = float(param("evaluate", params, "threshold"))
    cand = param("evaluate", params, "candidate_threshold")
    det_kw = {"threshold": min(thr, float(thr if cand is None else cand)),
              "min_overlap": float(param("evaluate", params, "min_overlap")),
              "measure": str(param("evaluate", params, "overlap_measure")), "instances": False}
    ml = float(np.prod(spacing)) / 1000.0
    fg_prob = prob[1:].sum(axis=0)
    fg_pred, fg_truth = seg > 0, truth > 0
    fg_det = detect_scan(scan, fg_prob, fg_truth, **det_kw)  # type: ignore[arg-type]
    dice, hd95, convention = overlap_scores(fg_pred, fg_truth, spacing)
    row: dict[str, Any] = {
        "scan": scan, "n_lesions": fg_det.n_lesions, "n_candidates": len(find_candidates(fg_prob, thr)[1]),
        "n_tp": len(fg_det.tp_scores), "n_fp": len(fg_det.fp_scores), "n_ignored": fg_det.n_ignored,
        "n_missed": fg_det.n_missed, "case_score": fg_det.case_score, "dice": dice, "hd95_mm": hd95,
        "hd95_convention": convention, "true_volume_ml": float(fg_truth.sum()) * ml,
        "pred_volume_ml": float(fg_pred.sum()) * ml,
        "volume_error_ml": (float(fg_pred.sum()) - float(fg_truth.sum())) * ml,
    }
    for name, values in spec.scored().items():
        pred, true = np.isin(seg, spec.channels(values)), np.isin(truth, spec.channels(values))
        d, h, c = overlap_scores(pred, true, spacing)
        row.update({f"dice_{name}": d, f"hd95_mm_{name}": h, f"hd95_convention_{name}": c,
                    f"true_volume_ml_{name}": float(true.sum()) * ml,
                    f"pred_volume_ml_{name}": float(pred.sum()) * ml})
    dets: dict[str, ScanDetections] = {}
    for name, values in spec.detection.items():
        det = detect_scan(scan, prob[spec.channels(values)].sum(axis=0), np.isin(truth, spec.channels(values)),
                          **det_kw)  # type: ignore[arg-type]
        dets[name] = det
        row.update({f"n_lesions_{name}": det.n_lesions, f"n_tp_{name}": len(det.tp_scores),
                    f"n_fp_{name}": len(det.fp_scores), f"case_score_{name}": det.case_score})
    return row, fg_det, dets


def class_headline(rows: pd.DataFrame, dets: Mapping[str, Sequence[ScanDetections]], spec: LabelSpec,
                   params: Mapping[str, Any]) -> dict[str, float]:
    """Per-class, per-region and per-detection-name headline metrics of a set of scans.

    Args:
        rows: per-case rows (:func:`score_scan_classes`), duplicates allowed (bootstrap).
        dets: detection name -> the scans' detections, aligned with ``rows``.
        spec: :func:`label_spec`.
        params: the ``evaluate`` section.

    Returns:
        ``dice_R``, ``hd95_mm_R``, ``hd95_mm_median_R`` per class and region; ``dice``, ``hd95_mm``,
        ``hd95_mm_median`` (means over the classes); ``froc_score_D``, ``ap_D``, ``auroc_D`` and
        ``sensitivity_at_<k>_fp_D`` per detection name.
    """
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in spec.scored():
            has = rows[f"true_volume_ml_{name}"] > 0
            dice, hd = rows.loc[has, f"dice_{name}"], rows.loc[has, f"hd95_mm_{name}"]
            out[f"dice_{name}"] = float(np.nanmean(dice)) if has.any() else np.nan
            out[f"hd95_mm_{name}"] = float(np.mean(hd)) if has.any() else np.nan
            out[f"hd95_mm_median_{name}"] = float(np.median(hd)) if has.any() else np.nan
        for key in ("dice", "hd95_mm", "hd95_mm_median"):
            per_class = [out[f"{key}_{c}"] for c in spec.classes]
            out[key] = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else np.nan
    interpolate = bool(param("evaluate", params, "interpolate"))
    for name, sample in dets.items():
        det = detection_metrics(sample, interpolate=interpolate)
        out.update({f"{k}_{name}": float(det[k]) for k in ("froc_score", "ap", "auroc")})  # type: ignore[arg-type]
        sens: dict[str, float] = det["sensitivity_at_fp"]  # type: ignore[assignment]
        out.update({f"sensitivity_at_{k}_fp_{name}": v for k, v in sens.items()})
    return out


def class_metrics(per_case: pd.DataFrame, headline: Mapping[str, float], spec: LabelSpec) -> dict[str, Any]:
    """The entries ``metrics.json`` adds for K >= 2: the label map, regions, detection names, per
    detection name ``sensitivity_at_fp_D`` and ``n_lesions_D``, per scored name ``hd95_n_convention_R``."""
    out: dict[str, Any] = {
        "classes": dict(spec.classes),
        "regions": {r: list(v) for r, v in spec.regions.items()},
        "detection_classes": list(spec.detection),
    }
    for name in spec.scored():
        has = per_case[f"true_volume_ml_{name}"] > 0
        out[f"hd95_n_convention_{name}"] = int((per_case.loc[has, f"hd95_convention_{name}"] != "").sum())
    for name in spec.detection:
        out[f"sensitivity_at_fp_{name}"] = {f"{k:g}": headline[f"sensitivity_at_{k:g}_fp_{name}"] for k in FP_RATES}
        out[f"n_lesions_{name}"] = int(per_case[f"n_lesions_{name}"].sum())
    return out

"""Test-set evaluation: segmentation (Dice, HD95, volume, lesion FROC/AP, case AUROC, burden
class) and classification (confusion matrix, accuracy, balanced accuracy, sensitivity/specificity,
one-vs-rest AUROC), each headline metric with a 95 % bootstrap CI over subjects.

Writes ``metrics.json`` (headline values at the top level, ``ci95: {metric: [low, high]}``),
``per_case.tsv``, ``froc.tsv``, ``confusion.tsv``, ``roc.tsv`` and PNG plots into the eval folder,
then logs them to an MLflow evaluation run linked to the selected trial (:mod:`mripipe.track.evaluation`).
"""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from sklearn.metrics import roc_curve

from mripipe.core.config import param, with_defaults
from mripipe.core.errors import InputError
from mripipe.core.imageio import read_image, to_array
from mripipe.core.splits import load_splits
from mripipe.core.subjects import subject_predictions
from mripipe.core.utils import atomic_path, json_safe, read_json, write_json
from mripipe.data.manifest import held_out_scans
from mripipe.evaluate import plots
from mripipe.evaluate.detection import detect_scan, find_candidates
from mripipe.evaluate.froc import (
    FP_RATES,
    ScanDetections,
    detection_metrics,
    froc_curve,
    froc_table,
    sensitivity_at,
)
from mripipe.evaluate.stats import bootstrap_ci, classification_metrics

log = logging.getLogger(__name__)

FROC_GRID = np.geomspace(0.125, 8.0, 25)



def overlap_scores(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]
                   ) -> tuple[float, float]:
    """Dice and HD95 (mm) of two binary masks, from MONAI.

    Args:
        pred: predicted lesion mask, shape (X, Y, Z).
        truth: true lesion mask, shape (X, Y, Z).
        spacing: voxel size in mm (X, Y, Z).

    Returns:
        ``(dice, hd95)``: Dice is 1.0 when both masks are empty and 0.0 when only one is; HD95 is
        NaN unless both masks hold voxels.
    """
    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))[None, None]
    t = torch.from_numpy(np.ascontiguousarray(truth, dtype=np.float32))[None, None]
    dice = float(compute_dice(p, t, include_background=True, ignore_empty=False)[0, 0])
    if not pred.any() or not truth.any():
        return dice, float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95,
                                        spacing=list(spacing))
    return dice, float(hd[0, 0])


def burden_class(count: float, classes: list[str], cuts: list[float]) -> str:
    """Burden class of a lesion count: ``classes[i]`` for ``cuts[i-1] <= count < cuts[i]``."""
    if len(classes) != len(cuts) + 1:
        raise InputError(f"burden_classes {classes} needs exactly {len(classes) - 1} cuts, got {cuts}")
    return classes[int(np.searchsorted(np.asarray(cuts, dtype=float), count, side="right"))]


def score_scan(scan: str, prob_path: Path, label_path: Path, params: Mapping[str, Any]
               ) -> tuple[dict[str, Any], ScanDetections]:
    """Per-scan segmentation and detection results of one predicted probability map.

    Returns:
        ``(row, detections)``: the ``per_case.tsv`` row and the matching outcome.
    """
    prob_img, label_img = read_image(prob_path), read_image(label_path)
    prob, label = to_array(prob_img), to_array(label_img)
    if prob.shape != label.shape:
        raise InputError(f"{prob_path}: shape {prob.shape} differs from {label_path} {label.shape}")
    thr = float(param("evaluate", params, "threshold"))
    # Candidates come from a lower threshold than the mask, so the FROC curve sweeps operating
    # points beyond the mask's; each is scored by its maximum probability (DESIGN.md).
    det = detect_scan(scan, prob, label, threshold=min(thr, float(param("evaluate", params, "candidate_threshold"))),
                      min_overlap=float(param("evaluate", params, "min_overlap")),
                      measure=str(param("evaluate", params, "overlap_measure")), instances=True)
    spacing = tuple(float(s) for s in label_img.GetSpacing())
    pred, truth = prob >= thr, label > 0
    dice, hd95 = overlap_scores(pred, truth, spacing)
    ml = float(np.prod(spacing)) / 1000.0
    n_cand = len(find_candidates(prob, thr)[1])  # lesion load at the operating threshold
    row = {
        "scan": scan, "n_lesions": det.n_lesions, "n_candidates": n_cand,
        "n_tp": len(det.tp_scores), "n_fp": len(det.fp_scores), "n_ignored": det.n_ignored,
        "n_missed": det.n_missed, "case_score": det.case_score, "dice": dice, "hd95_mm": hd95,
        "true_volume_ml": float(truth.sum()) * ml, "pred_volume_ml": float(pred.sum()) * ml,
    }
    row["volume_error_ml"] = (float(pred.sum()) - float(truth.sum())) * ml
    return row, det


def segmentation_headline(rows: pd.DataFrame, dets: list[ScanDetections], subj: pd.DataFrame,
                          params: Mapping[str, Any]) -> dict[str, float]:
    """Headline segmentation metrics of a set of scans (duplicates allowed, as in a bootstrap).

    Args:
        rows: per-case rows of the scans, aligned with ``dets``.
        dets: the scans' detections.
        subj: subject-level table (``true_class``, ``pred_class``) of the subjects in the set.
        params: the ``evaluate`` section.
    """
    lesion = rows["n_lesions"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out: dict[str, float] = {
            "dice": float(np.nanmean(rows.loc[lesion, "dice"])) if lesion.any() else np.nan,
            "dice_empty": float(np.nanmean(rows.loc[~lesion, "dice"])) if (~lesion).any() else np.nan,
            "hd95_mm": float(np.nanmean(rows.loc[lesion, "hd95_mm"])) if lesion.any() else np.nan,
            "abs_volume_error_ml": float(np.mean(np.abs(rows["volume_error_ml"]))),
        }
    det = detection_metrics(dets, interpolate=bool(param("evaluate", params, "interpolate")))
    out.update({k: float(det[k]) for k in ("froc_score", "ap", "auroc")})  # type: ignore[arg-type]
    sens: dict[str, float] = det["sensitivity_at_fp"]  # type: ignore[assignment]
    out.update({f"sensitivity_at_{k}_fp": v for k, v in sens.items()})
    known = subj[subj["true_class"] != ""]
    if len(known):
        cm = classification_metrics(known["true_class"], known["pred_class"],
                                    list(param("evaluate", params, "burden_classes")))
        out["burden_accuracy"] = cm["accuracy"]
        out["burden_balanced_accuracy"] = cm["balanced_accuracy"]
    return out


def _subject_table(cases: pd.DataFrame, per_subject_value: pd.Series, classes: list[str],
                   cuts: list[float]) -> pd.DataFrame:
    """Subject-level burden: mean predicted lesion count over a subject's scans -> class."""
    truth = cases.groupby("subject")["class"].agg(lambda s: next((c for c in s if c), ""))
    table = pd.DataFrame({"true_class": truth, "lesion_count": per_subject_value})
    table["pred_class"] = [burden_class(c, classes, cuts) for c in table["lesion_count"]]
    return table


def evaluate_segmentation(predictions: Path, preprocessed: Path, cases: pd.DataFrame,
                          out_dir: Path, params: Mapping[str, Any], seed: int,
                          experiment: str = "segmentation") -> dict[str, Any]:
    """Evaluate ``{scan}_prob.nii.gz`` maps against the preprocessed labels (template space).

    Args:
        predictions: folder with ``{scan}_prob.nii.gz`` (lesion probability, (X, Y, Z)).
        preprocessed: ``results/preprocessed`` (``{scan}/label.nii.gz``, ``image.nii.gz``).
        cases: the test scans: columns ``scan``, ``subject``, ``class`` (may be empty strings).
        out_dir: eval folder to fill (created).
        params: the ``evaluate`` config section.
        seed: master seed (bootstrap stream).
        experiment: experiment name (seed derivation, logging).

    Returns:
        The ``metrics.json`` content.
    """
    cases = cases.reset_index(drop=True)
    rows, dets = [], []
    for scan in cases["scan"]:
        row, det = score_scan(scan, Path(predictions) / f"{scan}_prob.nii.gz",
                              Path(preprocessed) / scan / "label.nii.gz", params)
        rows.append(row)
        dets.append(det)
        log.info("%s: Dice %.3f, %d/%d lesions found, %d FP", scan, row["dice"], row["n_tp"],
                 row["n_lesions"], row["n_fp"])
    per_case = pd.DataFrame(rows)
    per_case.insert(1, "subject", cases["subject"].to_numpy())
    classes, cuts = list(param("evaluate", params, "burden_classes")), list(param("evaluate", params, "burden_cuts"))
    subj = _subject_table(cases, per_case.groupby("subject")["n_candidates"].mean(), classes, cuts)
    per_case["true_class"] = cases["class"].to_numpy()
    per_case["pred_class"] = subj.loc[per_case["subject"], "pred_class"].to_numpy()
    by_subject = {s: list(idx) for s, idx in per_case.groupby("subject").groups.items()}

    def statistic(subjects: list[str]) -> dict[str, float]:
        idx = [i for s in subjects for i in by_subject[s]]
        sample = [dets[i] for i in idx]
        values = segmentation_headline(per_case.iloc[idx], sample, subj.loc[subjects], params)
        _, fps, sens = froc_curve(sample)
        band = sensitivity_at(fps, sens, list(FROC_GRID), bool(param("evaluate", params, "interpolate")))
        values.update({f"_froc_grid_{i}": float(v) for i, v in enumerate(band)})
        return values

    headline = statistic(sorted(by_subject))
    ci = bootstrap_ci(sorted(by_subject), statistic, int(param("evaluate", params, "bootstrap")), seed, experiment)
    band = np.array([[np.nan if v is None else v for v in ci.get(f"_froc_grid_{i}", [None, None])]
                     for i in range(len(FROC_GRID))], dtype=float)
    metrics = _metrics_json("segmentation", headline, ci, per_case, params)
    metrics["sensitivity_at_fp"] = {f"{k:g}": headline[f"sensitivity_at_{k:g}_fp"] for k in FP_RATES}
    metrics.update({"n_lesions": int(per_case["n_lesions"].sum()), "n_scans": len(per_case)})

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    froc = froc_table(dets)
    _write_tsv(per_case, out / "per_case.tsv")
    _write_tsv(froc, out / "froc.tsv")
    confusion = _confusion_table(subj["true_class"], subj["pred_class"], classes)
    _write_tsv(confusion, out / "confusion.tsv", index=True)
    scan_has = (per_case["n_lesions"] > 0).astype(int)
    roc = _roc_table({"lesion": (scan_has.to_numpy(), per_case["case_score"].to_numpy())})
    _write_tsv(roc, out / "roc.tsv")
    plots.froc_plot(froc, FROC_GRID, band, out / "froc.png")
    plots.confusion_plot(confusion, out / "confusion.png", "subject burden class (predicted load)")
    plots.roc_plot(roc, metrics, out / "roc.png")
    plots.dice_plot(per_case, out / "dice.png")
    worst_first = per_case.sort_values(["n_lesions", "dice"], ascending=[False, True])
    for scan in list(worst_first["scan"])[: int(param("evaluate", params, "n_overlays"))]:
        plots.overlay_plot(Path(preprocessed) / scan, Path(predictions) / f"{scan}_prob.nii.gz",
                           float(param("evaluate", params, "threshold")), out / f"overlay_{scan}.png")
    write_json(out / "metrics.json", json_safe(metrics))
    return metrics


def evaluate_classification(predictions: Path, out_dir: Path, params: Mapping[str, Any],
                            seed: int, experiment: str = "classification") -> dict[str, Any]:
    """Subject-level classification metrics from ``predictions.tsv``.

    Args:
        predictions: folder with ``predictions.tsv`` (``subject``, ``scan``, ``true_class``,
            ``pred_class``, ``prob_<class>`` per class); a subject's scans are averaged.
        out_dir: eval folder to fill (created).
        params: the ``evaluate`` config section.
        seed: master seed (bootstrap stream).
        experiment: experiment name (seed derivation).

    Returns:
        The ``metrics.json`` content.
    """
    path = Path(predictions) / "predictions.tsv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    table = pd.read_csv(path, sep="\t", dtype={"subject": str, "scan": str, "true_class": str},
                        keep_default_na=False)
    prob_cols = [c for c in table.columns if c.startswith("prob_")]
    missing = {"subject", "scan", "true_class"} - set(table.columns)
    if missing or not prob_cols:
        raise InputError(f"{path}: needs subject, scan, true_class and prob_<class> columns")
    classes = [c[len("prob_"):] for c in prob_cols]
    subj = subject_predictions(table, classes)
    subj = subj[subj["true_class"] != ""]
    if subj.empty:
        raise InputError(f"{path}: no subject with a known true class")

    def statistic(subjects: list[str]) -> dict[str, float]:
        s = subj.loc[subjects]
        cm = classification_metrics(s["true_class"], s["pred_class"], classes,
                                    s[prob_cols].to_numpy())
        out = {k: cm[k] for k in ("accuracy", "balanced_accuracy", "auroc_macro")}
        out.update({f"sensitivity_{c}": v for c, v in cm["sensitivity"].items()})
        out.update({f"specificity_{c}": v for c, v in cm["specificity"].items()})
        out.update({f"auroc_{c}": v for c, v in cm["auroc"].items()})
        return out

    subjects = sorted(subj.index)
    headline = statistic(subjects)
    ci = bootstrap_ci(subjects, statistic, int(param("evaluate", params, "bootstrap")), seed, experiment)
    per_case = subj.reset_index()
    metrics = _metrics_json("classification", headline, ci, per_case, params)
    metrics.update({"n_subjects": len(subjects), "n_scans": len(table), "classes": classes})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_tsv(per_case, out / "per_case.tsv")
    confusion = _confusion_table(subj["true_class"], subj["pred_class"], classes)
    _write_tsv(confusion, out / "confusion.tsv", index=True)
    roc = _roc_table({c: ((subj["true_class"] == c).astype(int).to_numpy(), subj[f"prob_{c}"].to_numpy())
                      for c in classes})
    _write_tsv(roc, out / "roc.tsv")
    _write_tsv(pd.DataFrame(columns=["threshold", "fp_per_scan", "sensitivity"]), out / "froc.tsv")
    plots.confusion_plot(confusion, out / "confusion.png", "subject class")
    plots.roc_plot(roc, metrics, out / "roc.png")
    write_json(out / "metrics.json", json_safe(metrics))
    return metrics


def _metrics_json(task: str, headline: dict[str, float], ci: dict[str, list[float | None]],
                  per_case: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, Any]:
    public = {k: v for k, v in headline.items() if not k.startswith("_")}
    return {
        "task": task, **public,
        "ci95": {k: v for k, v in ci.items() if not k.startswith("_")},
        "bootstrap": int(param("evaluate", params, "bootstrap")),
        "params": with_defaults("evaluate", params),
    }


def _confusion_table(true: pd.Series, pred: pd.Series, classes: list[str]) -> pd.DataFrame:
    cm = classification_metrics(list(true), list(pred), classes)["confusion"]
    return pd.DataFrame(cm, index=pd.Index(classes, name="true"), columns=classes)


def _roc_table(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """One-vs-rest ROC curves: ``curve``, ``fpr``, ``tpr``, ``threshold`` (skips one-class sets)."""
    parts = []
    for name, (y, score) in curves.items():
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, thr = roc_curve(y, score)
        parts.append(pd.DataFrame({"curve": name, "fpr": fpr, "tpr": tpr, "threshold": thr}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["curve", "fpr", "tpr", "threshold"])


def _write_tsv(table: pd.DataFrame, path: Path, index: bool = False) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=index, na_rep="nan")


def cli_evaluate(ns: argparse.Namespace) -> None:
    """Adapter for ``mripipe evaluate``: segmentation or classification, then MLflow logging."""
    from mripipe.track.evaluation import log_evaluation

    splits = load_splits(ns.splits, "evaluate")
    cases = held_out_scans(Path(ns.manifest), list(splits["test"]))
    pred = Path(ns.predictions)
    if (pred / "predictions.tsv").exists():
        metrics = evaluate_classification(pred, Path(ns.out_dir), ns.params, ns.seed, ns.experiment)
    else:
        metrics = evaluate_segmentation(pred, Path(ns.preprocessed), cases, Path(ns.out_dir),
                                        ns.params, ns.seed, ns.experiment)
    log_evaluation(ns.experiment, read_json(ns.selected), Path(ns.selected), Path(ns.out_dir),
                   metrics, ns.params)

"""Test-set evaluation: segmentation (Dice, HD95, volume, lesion FROC/AP, case AUROC, burden
class) and classification (confusion matrix, accuracy, balanced accuracy, sensitivity/specificity,
one-vs-rest AUROC), each headline metric with a 95 % bootstrap CI over subjects.

Writes ``metrics.json`` (headline values at the top level, ``ci95: {metric: [low, high]}``),
``per_case.tsv``, ``froc.tsv``, ``confusion.tsv``, ``roc.tsv`` and PNG plots into the eval folder,
then logs them to an MLflow evaluation run linked to the selected trial (:mod:`mripipe.track.eval_run`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from mripipe.core.config import param, with_defaults
from mripipe.core.errors import InputError
from mripipe.core.froc import (
    FP_RATES,
    ScanDetections,
    detection_metrics,
    froc_curve,
    froc_table,
    sensitivity_at,
)
from mripipe.core.grid import LabelGrid
from mripipe.core.split_guard import load_splits
from mripipe.core.subjects import subject_predictions
from mripipe.core.utils import atomic_path, json_safe, read_json, write_json
from mripipe.data.manifest import held_out_scans, read_manifest
from mripipe.evaluate import plots
from mripipe.evaluate.classes import class_headline, class_metrics, score_scan_classes
from mripipe.evaluate.labelmap import LabelSpec, label_spec, prediction_labels
from mripipe.evaluate.scoring import HD95_CONVENTION, overlap_scores, score_scan
from mripipe.evaluate.stats import bootstrap_ci, classification_metrics

__all__ = ["evaluate_classification", "evaluate_segmentation", "overlap_scores", "score_scan"]

log = logging.getLogger(__name__)

FROC_GRID = np.geomspace(0.125, 8.0, 25)



def burden_class(count: float, classes: list[str], cuts: list[float]) -> str:
    """Burden class of a lesion count: ``classes[i]`` for ``cuts[i-1] <= count < cuts[i]``."""
    if len(classes) != len(cuts) + 1:
        raise InputError(f"burden_classes {classes} needs exactly {len(classes) - 1} cuts, got {cuts}")
    return classes[int(np.searchsorted(np.asarray(cuts, dtype=float), count, side="right"))]


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
            # every scan enters HD95 (empty masks by the convention of evaluate.scoring)
            "hd95_mm": float(np.mean(rows.loc[lesion, "hd95_mm"])) if lesion.any() else np.nan,
            "hd95_mm_median": float(np.median(rows.loc[lesion, "hd95_mm"])) if lesion.any() else np.nan,
            "hd95_empty_mm": float(np.mean(rows.loc[~lesion, "hd95_mm"])) if (~lesion).any() else np.nan,
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


def prediction_paths(predictions: Path, preprocessed: Path, cases: pd.DataFrame, space: str
                     ) -> list[tuple[Path, Path | None]]:
    """The (probability map, truth) pair each scan is scored on.

    ``native``: ``{scan}_prob.nii.gz`` (on the raw reference grid) against the original label
    file of the manifest (``cases["label"]``; empty = no lesion). ``template``:
    ``{scan}_prob_template.nii.gz`` against ``results/preprocessed/{scan}/label.nii.gz``.
    """
    if space == "template":
        return [(Path(predictions) / f"{scan}_prob_template.nii.gz",
                 Path(preprocessed) / scan / "label.nii.gz") for scan in cases["scan"]]
    if space != "native":
        raise InputError(f"evaluate.space {space!r}: expected native or template")
    if "label" not in cases.columns:
        raise InputError("native-space evaluation needs the manifest's label column")
    return [(Path(predictions) / f"{scan}_prob.nii.gz", Path(label) if label else None)
            for scan, label in zip(cases["scan"], cases["label"], strict=True)]


def score_scans(predictions: Path, preprocessed: Path, cases: pd.DataFrame, space: str,
                spec: LabelSpec | None, params: Mapping[str, Any], label_grid: LabelGrid | None = None
                ) -> tuple[list[dict[str, Any]], list[ScanDetections], dict[str, list[ScanDetections]]]:
    """Every test scan's ``per_case.tsv`` row and detections (all foreground as one lesion class),
    and with ``spec`` (K >= 2) the detections per ``evaluate.detection_classes`` name; each truth
    read onto its prediction's grid as ``label_grid`` allows (:func:`~mripipe.core.imageio.read_label`)."""
    rows, dets = [], []
    class_dets: dict[str, list[ScanDetections]] = {n: [] for n in (spec.detection if spec else {})}
    for scan, (prob, label) in zip(cases["scan"], prediction_paths(predictions, preprocessed, cases, space), strict=True):
        if spec is None:
            row, det = score_scan(scan, prob, label, params, label_grid)
        else:
            seg = Path(predictions) / f"{scan}_seg.nii.gz" if space == "native" else None
            row, det, by_name = score_scan_classes(scan, prob, seg, label, spec, params, label_grid)
            for name, found in by_name.items():
                class_dets[name].append(found)
        rows.append(row)
        dets.append(det)
        log.info("%s: Dice %.3f, HD95 %.1f mm%s, %d/%d lesions found, %d FP", scan, row["dice"],
                 row["hd95_mm"], f" ({row['hd95_convention']})" if row["hd95_convention"] else "",
                 row["n_tp"], row["n_lesions"], row["n_fp"])
    return rows, dets, class_dets


def multiclass_spec(predictions: Path, params: Mapping[str, Any]) -> LabelSpec | None:
    """The classes, regions and detection names to score, from ``predict.json``'s ``labels``;
    None (the binary path) without a label map or with one foreground class. Region and detection
    names are checked against the map either way."""
    labels = prediction_labels(Path(predictions))
    if labels is None:
        return None
    spec = label_spec(labels, params)
    return spec if spec.n_classes >= 2 else None


def evaluate_segmentation(predictions: Path, preprocessed: Path, cases: pd.DataFrame,
                          out_dir: Path, params: Mapping[str, Any], seed: int, experiment: str = "segmentation",
                          label_grid: LabelGrid | None = None) -> dict[str, Any]:
    """Evaluate lesion probability maps in native space (default) or template space.

    Args:
        predictions: ``results/{experiment}/predictions`` (see :func:`prediction_paths`).
        preprocessed: ``results/preprocessed`` (template labels, overlay images).
        cases: the test scans: columns ``scan``, ``subject``, ``class`` (may be empty strings)
            and, for native space, ``label`` (original label path, may be empty).
        out_dir: eval folder to fill (created).
        params: the ``evaluate`` config section (``space``: native | template).
        seed: master seed (bootstrap stream).
        experiment: experiment name (seed derivation, logging).
        label_grid: how a native truth must lie on its prediction's grid (default the schema's).

    Returns:
        The ``metrics.json`` content.

    With K >= 2 foreground classes in ``predict.json``'s ``labels`` the probability maps hold K+1
    channels and the scores are per class, per region and per detection name as well
    (:mod:`mripipe.evaluate.classes`); without a label map, or with one class, the binary path.
    """
    cases = cases.reset_index(drop=True)
    space = str(param("evaluate", params, "space"))
    spec = multiclass_spec(predictions, params)
    rows, dets, class_dets = score_scans(predictions, preprocessed, cases, space, spec, params, label_grid)
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
        if spec is not None:
            values.update(class_headline(per_case.iloc[idx], {n: [d[i] for i in idx] for n, d in class_dets.items()},
                                         spec, params))
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
    conv = per_case["hd95_convention"]
    metrics.update({"n_lesions": int(per_case["n_lesions"].sum()), "n_scans": len(per_case),
                    "space": space, "hd95_convention": HD95_CONVENTION,
                    "hd95_n_convention": int((conv != "").sum()),
                    "hd95_n_empty_prediction": int((conv == "empty_prediction").sum()),
                    "hd95_n_empty_truth": int(conv.isin(["empty_truth", "both_empty"]).sum())})
    if spec is not None:
        metrics.update(class_metrics(per_case, headline, spec))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    froc = froc_table(dets)
    _write_tsv(per_case, out / "per_case.tsv")
    _write_tsv(froc, out / "froc.tsv")
    for name, found in class_dets.items():
        _write_tsv(froc_table(found), out / f"froc_{name}.tsv")
    confusion = _confusion_table(subj["true_class"], subj["pred_class"], classes)
    _write_tsv(confusion, out / "confusion.tsv", index=True)
    scan_has = (per_case["n_lesions"] > 0).astype(int)
    roc = _roc_table({"lesion": (scan_has.to_numpy(), per_case["case_score"].to_numpy())})
    _write_tsv(roc, out / "roc.tsv")
    plots.froc_plot(froc, FROC_GRID, band, out / "froc.png")
    plots.confusion_plot(confusion, out / "confusion.png", "subject burden class (predicted load)")
    plots.roc_plot(roc, metrics, out / "roc.png")
    _overlays(per_case, Path(predictions), Path(preprocessed), out, params)
    write_json(out / "metrics.json", json_safe(metrics))
    return metrics


def _overlays(per_case: pd.DataFrame, predictions: Path, preprocessed: Path, out: Path,
              params: Mapping[str, Any]) -> None:
    """``dice.png`` and the overlays of the worst scans (template grid, QC pictures)."""
    plots.dice_plot(per_case, out / "dice.png")
    worst_first = per_case.sort_values(["n_lesions", "dice"], ascending=[False, True])
    for scan in list(worst_first["scan"])[: int(param("evaluate", params, "n_overlays"))]:
        template_prob = Path(predictions) / f"{scan}_prob_template.nii.gz"  # QC picture, template grid
        if template_prob.is_file() and (Path(preprocessed) / scan / "label.nii.gz").is_file():
            plots.overlay_plot(Path(preprocessed) / scan, template_prob,
                               float(param("evaluate", params, "threshold")), out / f"overlay_{scan}.png")


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
    if not set(true) & set(classes):  # no subject with a known class (e.g. an MSD dataset): zeros
        return pd.DataFrame(0, index=pd.Index(classes, name="true"), columns=classes)
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


def evaluate_experiment(experiment: str, predictions: Path, selected: Path, splits: Path,
                        manifest: Path, preprocessed: Path, params: dict[str, Any], seed: int,
                        out_dir: Path, label_grid: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``mripipe evaluate``: :func:`evaluate_segmentation` or :func:`evaluate_classification` (a
    ``predictions.tsv`` in ``predictions``) of the test scans of ``splits``, logged to MLflow
    (:func:`mripipe.track.eval_run.log_evaluation`).

    The selected model's threshold, minimum lesion volume and candidate threshold (chosen on
    validation, in ``selected``) override ``params`` (the ``evaluate`` section), except a number in
    ``evaluate.candidate_threshold``. ``label_grid``: ``data.grid_tolerance_mm`` and
    ``data.resample_labels``, the rule validation applied to the labels. Returns the metrics.
    """
    from mripipe.track.eval_run import log_evaluation

    test = load_splits(splits, "evaluate")["test"]
    cases = held_out_scans(manifest, list(test))
    labels = read_manifest(manifest).set_index("scan")
    cases["label"] = labels.loc[cases["scan"], "label"].to_numpy() if "label" in labels else ""
    chosen = read_json(selected).get("postprocess") or {}
    keys = ["threshold", "min_lesion_mm3"]
    if params.get("candidate_threshold") is None:
        keys.append("candidate_threshold")
    params = {**params, **{k: chosen[k] for k in keys if k in chosen}}
    if (predictions / "predictions.tsv").exists():
        metrics = evaluate_classification(predictions, out_dir, params, seed, experiment)
    else:
        metrics = evaluate_segmentation(predictions, preprocessed, cases, out_dir, params, seed,
                                        experiment, LabelGrid.from_params(label_grid))
    log_evaluation(experiment, read_json(selected), selected, out_dir, metrics, params)
    return metrics

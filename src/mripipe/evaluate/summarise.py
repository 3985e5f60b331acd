"""``results/summary.json`` (headline metrics of every experiment, DVC's metrics file) and
``mripipe where`` (where the report, the metrics and the MLflow runs are)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import json_safe, read_json, write_json

log = logging.getLogger(__name__)

HEADLINE: Mapping[str, tuple[str, ...]] = {
    "segmentation": ("space", "dice", "dice_empty", "hd95_mm", "hd95_mm_median", "hd95_n_convention",
                     "abs_volume_error_ml", "froc_score", "ap", "auroc", "sensitivity_at_1_fp",
                     "burden_accuracy", "burden_balanced_accuracy"),
    "classification": ("accuracy", "balanced_accuracy", "auroc_macro"),
}
#: per class and region (K >= 2 classes): ``<metric>_<name>``
PER_CLASS = ("dice", "hd95_mm", "hd95_mm_median")
#: per ``evaluate.detection_classes`` name: ``<metric>_<name>``
PER_DETECTION = ("froc_score", "ap", "auroc", "sensitivity_at_1_fp")
REPORT = "results/report.html"
SUMMARY = "results/summary.json"
TRACKING_URI = "sqlite:///mlflow.db"


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The headline values of one ``metrics.json`` with their 95 % CI bounds.

    Returns:
        ``{metric: value, metric_ci95_low: ..., metric_ci95_high: ..., "n_scans": ...}`` for the
        task's headline metrics that are present (None where undefined on the test set); a
        multi-class segmentation (``classes`` in ``metrics.json``) adds :data:`PER_CLASS` per class
        and region and :data:`PER_DETECTION` per detection name (``dice_PZ``, ``froc_score_ET``).
    """
    task = str(metrics.get("task", ""))
    if task not in HEADLINE:
        raise InputError(f"unknown task {task!r} (expected {sorted(HEADLINE)})")
    ci = metrics.get("ci95", {})
    out: dict[str, Any] = {"task": task}
    for key in [*HEADLINE[task], *class_keys(metrics)]:
        if key not in metrics:
            continue
        out[key] = metrics[key]
        if key in ci:
            out[f"{key}_ci95_low"], out[f"{key}_ci95_high"] = ci[key]
    for key in ("n_scans", "n_subjects", "n_lesions"):
        if key in metrics:
            out[key] = metrics[key]
    return out


def class_keys(metrics: Mapping[str, Any]) -> list[str]:
    """The per-class, per-region and per-detection-name keys of a multi-class ``metrics.json``
    (none for the binary path, which has no ``classes`` entry)."""
    if metrics.get("task") != "segmentation" or not isinstance(metrics.get("classes"), Mapping):
        return []
    names = list(dict.fromkeys([*metrics["classes"], *(metrics.get("regions") or {})]))
    keys = [f"{m}_{n}" for n in names for m in PER_CLASS]
    keys += [f"{m}_{n}" for n in metrics.get("detection_classes") or [] for m in PER_DETECTION]
    return keys


def excluded_scans(path: Path) -> dict[str, Any]:
    """``results/excluded.tsv`` (scan, stage, check, reason) as the summary's ``excluded`` entry:
    how many scans did not make it, by stage, and why (one line per scan)."""
    import pandas as pd

    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    why = {scan: "; ".join(f"{r.stage}/{r.check}: {r.reason}" for r in rows.itertuples())
           for scan, rows in table.groupby("scan", sort=True)}
    stages = table.drop_duplicates("scan")["stage"].value_counts()
    return {"n_scans": len(why), "by_stage": {str(k): int(v) for k, v in stages.items()}, "scans": why}


def summarise(metrics_paths: Sequence[Path], out: Path, excluded: Path | None = None) -> dict[str, dict[str, Any]]:
    """Gather the headline metrics of every experiment into one JSON file.

    Args:
        metrics_paths: ``results/{experiment}/eval/metrics.json`` files; the experiment is the
            name of the folder above ``eval/``.
        out: ``results/summary.json``.
        excluded: ``results/excluded.tsv``: adds ``excluded`` (scans left out, by stage, why).

    Returns:
        ``{experiment: {metric: value, ...}}`` (and ``excluded``) as written.
    """
    summary: dict[str, dict[str, Any]] = {}
    for path in map(Path, metrics_paths):
        metrics = read_json(path)
        if not isinstance(metrics, dict):
            raise InputError(f"{path}: expected a JSON object")
        try:
            summary[path.parent.parent.name] = headline(metrics)
        except ValueError as exc:
            raise InputError(f"{path}: {exc}") from None
    if excluded is not None:
        summary["excluded"] = excluded_scans(Path(excluded))
    write_json(out, json_safe(summary))
    log.info("headline metrics of %d experiments -> %s", len(summary), out)
    return summary


def where(root: Path) -> list[str]:
    """Lines saying where the report, the metrics and the MLflow runs are (and whether they exist).

    Args:
        root: the working directory of the pipeline.
    """
    def state(path: Path) -> str:
        return "" if path.exists() else "  (not yet: run `make run`)"

    report, summary, db = root / REPORT, root / SUMMARY, root / "mlflow.db"
    return [
        f"report:  {report}{state(report)}",
        f"metrics: {summary}{state(summary)}",
        f"MLflow:  {db}{state(db)}",
        f"         mlflow ui --backend-store-uri {TRACKING_URI} --host 127.0.0.1 --port 5000"
        "   (or `make ui`), then open http://127.0.0.1:5000",
    ]

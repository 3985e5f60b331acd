"""Select the best trial of a search on the validation metric only, and log it to MLflow.

Only each trial's ``val_metrics.json`` (validation fold) decides; the test split is never read.
The selected weights are logged as an MLflow PyTorch model on the selected trial's run, the run
is tagged ``selected=true`` and the parent (search) run gets ``selected_trial``.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import read_json, write_json
from mripipe.track import tracking

log = logging.getLogger(__name__)


def rank_trials(trial_dirs: Sequence[str | Path], metric: str) -> list[dict[str, Any]]:
    """Trials ranked by ``metric`` from their ``val_metrics.json``, best (highest) first.

    Ties are broken by trial name; a NaN value ranks last.

    Returns:
        ``[{"trial", "trial_dir", "value", "epoch"}, ...]``.
    """
    rows = []
    for d in trial_dirs:
        path = Path(d) / "val_metrics.json"
        metrics = read_json(path)
        if metric not in metrics:
            raise InputError(f"{path}: no {metric!r} (has {sorted(metrics)})")
        value = float(metrics[metric])
        rows.append({"trial": Path(d).name, "trial_dir": str(d), "value": value,
                     "epoch": int(metrics.get("epoch", 0))})
    if not rows:
        raise InputError("select: no trial given")

    def key(row: dict[str, Any]) -> tuple[bool, float, str]:
        nan = math.isnan(row["value"])
        return (nan, 0.0 if nan else -row["value"], row["trial"])

    return sorted(rows, key=key)


def log_selected_model(search: dict[str, Any], run_id: str, trial_dir: str | Path) -> str | None:
    """Log the trial's best weights as an MLflow PyTorch model on its run; return the model URI."""
    import mlflow
    import mlflow.pytorch
    import monai
    import numpy as np
    import torch

    from mripipe.learn.networks import load_trained

    tracking.no_telemetry()
    model, ckpt = load_trained(trial_dir, "cpu")
    mlflow.set_tracking_uri(search["tracking_uri"])
    reqs = [f"torch=={torch.__version__.split('+')[0]}", f"monai=={monai.__version__}"]
    example = np.zeros((1, int(ckpt["in_channels"]), *ckpt["roi_size"]), dtype=np.float32)
    with mlflow.start_run(run_id=run_id):
        info = tracking.retry(
            mlflow.pytorch.log_model, model, name="model", pip_requirements=reqs,
            serialization_format="pickle", input_example=example,
            params={"trial": Path(trial_dir).name, "epoch": int(ckpt["epoch"])},
        )
    return str(info.model_uri)


def select_trial(
    experiment: str,
    trial_dirs: Sequence[str | Path],
    search_path: str | Path,
    params: dict[str, Any],
    out: str | Path,
    log_model: bool = True,
) -> dict[str, Any]:
    """Pick the trial with the highest validation metric and write ``selected.json``.

    Args:
        experiment: experiment name.
        trial_dirs: the trial folders (each with ``val_metrics.json`` and ``checkpoint.pt``).
        search_path: ``results/{experiment}/search.json``.
        params: the experiment's config section (``search.metric``).
        out: ``results/{experiment}/selected.json``.
        log_model: log the selected model to MLflow (``mlflow.pytorch.log_model``).

    Returns:
        selected.json: ``{"experiment", "trial", "trial_dir", "metric", "value", "epoch",
        "ranking", "mlflow_run_id", "mlflow_experiment_id", "parent_run_id", "tracking_uri",
        "model_uri"}``.
    """
    from mripipe.learn.search import default_metric

    search = read_json(search_path)
    metric = str((params.get("search") or {}).get("metric")
                 or default_metric(params.get("task", "segmentation")))
    ranking = rank_trials(trial_dirs, metric)
    best = ranking[0]
    import torch

    ckpt = torch.load(Path(best["trial_dir"]) / "checkpoint.pt", map_location="cpu", weights_only=True)
    run_id = str(ckpt.get("mlflow_run_id", ""))
    model_uri = None
    if run_id:
        c = tracking.client(search["tracking_uri"])
        if log_model:
            model_uri = log_selected_model(search, run_id, best["trial_dir"])
        tracking.retry(c.set_tag, run_id, "selected", "true")
        parent = str(search["parent_run_id"])
        tracking.retry(c.set_tag, parent, "selected_trial", best["trial"])
        tracking.retry(c.set_tag, parent, "selected_run_id", run_id)
        tracking.log_epoch(c, parent, {f"selected_{metric}": best["value"]}, 0)
        tracking.retry(c.set_terminated, parent, "FINISHED")
    else:
        log.warning("%s: checkpoint has no MLflow run id; nothing logged", best["trial_dir"])
    doc = {
        "experiment": experiment,
        "trial": best["trial"],
        "trial_dir": best["trial_dir"],
        "metric": metric,
        "value": best["value"],
        "epoch": best["epoch"],
        "ranking": ranking,
        "mlflow_run_id": run_id,
        "mlflow_experiment_id": str(search["mlflow_experiment_id"]),
        "parent_run_id": str(search["parent_run_id"]),
        "tracking_uri": search["tracking_uri"],
        "model_uri": model_uri,
    }
    write_json(out, doc)
    log.info("%s: selected %s (%s=%.4f) of %d trials", experiment, best["trial"], metric,
             best["value"], len(ranking))
    return doc


def cli_select(ns: argparse.Namespace) -> None:
    """Adapter for ``mripipe select``."""
    select_trial(ns.experiment, ns.trials, ns.search, ns.params, ns.out)

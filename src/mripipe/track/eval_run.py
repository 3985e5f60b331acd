"""MLflow evaluation run: metrics, tables and plots of ``eval/``, linked to the selected trial.

The run goes into the selected trial's MLflow experiment (same tracking URI), tagged with the
trial's run id (``mripipe.trial_run_id``) and named ``evaluate``. The URI comes from
``selected.json`` (``tracking_uri``) or, failing that, ``search.json`` beside it. Without a URI
the stage still succeeds and only logs a warning; a trial run id missing from ``selected.json``
or from the store also only warns (the evaluation run is then unlinked).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mripipe.core.utils import read_json

log = logging.getLogger(__name__)

TRIAL_RUN_TAG = "mripipe.trial_run_id"


def flat_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Finite numeric headline values, nested dicts flattened (``sensitivity_at_fp.0.125``) and
    CIs as ``<metric>_ci95_low`` / ``_ci95_high``; names made MLflow-safe."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "ci95" and isinstance(value, Mapping):
            for name, (lo, hi) in value.items():
                out[f"{name}_ci95_low"], out[f"{name}_ci95_high"] = lo, hi
        elif isinstance(value, Mapping) and key not in ("params", "classes"):  # classes: the label map
            out.update({f"{key}.{k}": v for k, v in value.items()})
        elif key != "params":
            out[key] = value
    return {k.replace("@", "_"): float(v) for k, v in out.items()
            if isinstance(v, int | float | np.floating) and not isinstance(v, bool)
            and np.isfinite(v)}


def tracking_uri(selected: Mapping[str, Any], selected_path: Path) -> str | None:
    """The tracking URI of the selected trial: ``selected.json``, else ``search.json`` beside it."""
    uri = selected.get("tracking_uri")
    search = selected_path.parent / "search.json"
    if not uri and search.exists():
        uri = read_json(search).get("tracking_uri")
    return str(uri) if uri else None


def summarise_search(c: Any, parent: str, selected: Mapping[str, Any], metrics: Mapping[str, Any],
                     eval_run: str) -> None:
    """Give the parent (search) run the test result of its selected trial, so one row of the runs
    table tells the story: ``test_*`` metrics (the metrics with a CI, their bounds, the counts), the evaluation
    run, and where the model is (the package folder, the registered model and its alias).

    The selected trial and its validation metric are logged there by ``mripipe package``.
    """
    from mlflow.entities import Metric, RunTag

    from mripipe.track.tracking import retry

    # the headline metrics (those with a bootstrap CI), their CI bounds and the test-set counts;
    # not the evaluation settings that metrics.json also records
    headline = set(metrics.get("ci95") or {})
    keep = headline | {f"{k}_ci95_{b}" for k in headline for b in ("low", "high")} | {"n_scans", "n_subjects", "n_lesions"}
    values = [Metric(f"test_{k}", v, 0, 0) for k, v in sorted(flat_metrics(metrics).items()) if k in keep]
    tags = {"mripipe.evaluation_run_id": eval_run, "mripipe.model_package": selected.get("model_dir"),
            "mripipe.registered_model": selected.get("registered_model"),
            "mripipe.registered_model_version": selected.get("model_version"),
            "mripipe.champion_uri": selected.get("champion_uri")}
    retry(c.log_batch, parent, metrics=values,
          tags=[RunTag(k, str(v)) for k, v in tags.items() if v])


def log_evaluation(experiment: str, selected: Mapping[str, Any], selected_path: Path,
                   eval_dir: Path, metrics: Mapping[str, Any], params: Mapping[str, Any]
                   ) -> str | None:
    """Log an evaluation run linked to the selected trial's run.

    Args:
        experiment: mripipe experiment name (MLflow experiment when the trial run is unknown).
        selected: ``selected.json`` content (``mlflow_run_id``, ``trial``, ``tracking_uri``).
        selected_path: its path (to find ``search.json``).
        eval_dir: the eval folder; every file in it is logged as an artifact.
        metrics: the ``metrics.json`` content.
        params: the ``evaluate`` config section.

    Returns:
        The evaluation run id, or None when no tracking URI is known.
    """
    uri = tracking_uri(selected, selected_path)
    if uri is None:
        log.warning("%s: no tracking_uri (nor search.json); evaluation not logged to MLflow",
                    selected_path)
        return None
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    from mripipe.track.tracking import client, finish_run, get_or_create_experiment, retry

    c = client(uri)
    trial_run = selected.get("mlflow_run_id")
    exp_id = None
    if trial_run:
        try:
            exp_id = str(retry(c.get_run, str(trial_run)).info.experiment_id)
        except MlflowException as exc:
            log.warning("trial run %s not found in %s (%s); evaluation run left unlinked",
                        trial_run, uri, str(exc).splitlines()[0])
            trial_run = None
    else:
        log.warning("%s: no mlflow_run_id; evaluation run left unlinked", selected_path)
    if exp_id is None:
        exp_id = get_or_create_experiment(c, experiment, uri)
    tags = {"mlflow.runName": "evaluate", "stage": "evaluate", "task": str(metrics.get("task"))}
    if trial_run:
        tags[TRIAL_RUN_TAG] = str(trial_run)
    if selected.get("trial"):
        tags["trial"] = str(selected["trial"])
    run_id = str(retry(c.create_run, exp_id, tags=tags).info.run_id)
    batch = [Param(f"evaluate.{k}", str(v)) for k, v in sorted(params.items())]
    values = [Metric(k, v, 0, 0) for k, v in sorted(flat_metrics(metrics).items())]
    retry(c.log_batch, run_id, metrics=values, params=batch)
    finish_run(c, run_id, sorted(p for p in Path(eval_dir).iterdir() if p.is_file()))
    if trial_run:
        retry(c.set_tag, str(trial_run), "mripipe.evaluation_run_id", run_id)
    if selected.get("parent_run_id"):
        summarise_search(c, str(selected["parent_run_id"]), selected, metrics, run_id)
    log.info("evaluation logged to MLflow run %s (trial run %s) at %s", run_id, trial_run, uri)
    return run_id

"""MLflow helpers: the store, one experiment per mripipe experiment, a nested run per trial;
robust to several trial jobs writing one SQLite store at once (the parent run of a search is
created by :mod:`mripipe.track.search_init`).

Everything goes through an explicit :class:`mlflow.tracking.MlflowClient` built from the
tracking URI (no global active run), except model logging in :mod:`mripipe.learn.package`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mripipe.core.utils import sha256_file, sha256_text

log = logging.getLogger(__name__)

T = TypeVar("T")
TRIAL_TAG = "trial"
#: names a run's search (the search run's name) on the search run and its trials: MLflow's
#: "Group by" on it shows one group per search, e.g. one per seed (:mod:`mripipe.track.ui`)
SEARCH_TAG = "search"
#: MLflow 3 opens an experiment with this tag on its training-runs table (not the GenAI overview).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def no_telemetry() -> None:
    """Switch off MLflow telemetry (no network at run time) before mlflow is used."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URI (relative to the working directory), else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


def artifact_location(uri: str, experiment: str) -> str | None:
    """``mlartifacts/{experiment}`` beside a SQLite database, as a file URI (else MLflow's default)."""
    db = sqlite_path(uri)
    return (db.resolve().parent / "mlartifacts" / experiment).as_uri() if db is not None else None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Exclusive lock beside a SQLite store (creating the schema must not race); no-op otherwise."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.resolve().parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db.resolve()}.lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def retry(fn: Callable[..., T], *args: Any, attempts: int = 8, **kwargs: Any) -> T:
    """Call an MLflow function, retrying while the SQLite store reports it is locked.

    SQLite allows one writer at a time; MLflow already waits 20 s per statement
    (``busy_timeout``), and this adds back-off retries on top for long bursts.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            text = str(exc).lower()
            if attempt == attempts - 1 or ("locked" not in text and "temporarily" not in text):
                raise
            wait = min(0.5 * 2**attempt, 8.0)
            log.warning("MLflow store busy (%s); retrying in %.1f s", text[:80], wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri``; its store (and SQLite schema) is created under a lock."""
    no_telemetry()
    from mlflow.tracking import MlflowClient

    with store_lock(uri):
        # Creating the client creates the SQLite schema (tracking and model-registry tables):
        # two jobs starting at once must not both run the migrations.
        c = retry(MlflowClient, tracking_uri=uri)
        retry(c.search_experiments, max_results=1)
        retry(c.search_registered_models, max_results=1)
    return c


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of ``cwd`` (None without git or outside a repository)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def config_hash(cfg: dict[str, Any]) -> str:
    """sha256 of a config section as canonical JSON."""
    return sha256_text(json.dumps(cfg, sort_keys=True, default=str))


def data_hash(paths: Sequence[str | Path]) -> str:
    """sha256 over the named files' hashes (missing files count as empty)."""
    parts = [f"{Path(p).name}:{sha256_file(p) if Path(p).exists() else ''}" for p in paths]
    return sha256_text("\n".join(parts))


def get_or_create_experiment(c: Any, name: str, uri: str) -> str:
    """The id of MLflow experiment ``name``, created (artifacts beside the store) if missing,
    and tagged as a model-training experiment (:data:`EXPERIMENT_KIND`)."""
    from mlflow.exceptions import MlflowException

    exp = retry(c.get_experiment_by_name, name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            retry(c.set_experiment_tag, exp.experiment_id, *EXPERIMENT_KIND)
        return str(exp.experiment_id)
    with store_lock(uri):
        exp = retry(c.get_experiment_by_name, name)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(retry(c.create_experiment, name, artifact_location=artifact_location(uri, name),
                             tags=dict([EXPERIMENT_KIND])))
        except MlflowException:
            exp = retry(c.get_experiment_by_name, name)
            if exp is None:
                raise
            return str(exp.experiment_id)


def search_name(c: Any, parent: str) -> str:
    """A search's :data:`SEARCH_TAG`: the search run's own tag, else its run name."""
    run = retry(c.get_run, parent)
    return str(run.data.tags.get(SEARCH_TAG) or run.info.run_name)


def open_trial_run(
    c: Any, search: dict[str, Any], trial: str, flat_params: dict[str, Any], tags: dict[str, str],
    run_id: str | None = None,
) -> str:
    """The trial's nested run: the existing one if a previous attempt created it, else a new one.

    Args:
        c: MLflow client.
        search: search.json dict.
        trial: trial name (``trial-000``).
        flat_params: the full resolved parameters, flat dotted names.
        tags: extra tags (git commit, config hash, data hash, device...).
        run_id: the trial's own run, continued whatever its status (a trial promoted to the
            next rung of successive halving).

    Returns:
        The run id (status RUNNING).
    """
    from mlflow.entities import Param, RunStatus

    exp_id, parent = str(search["mlflow_experiment_id"]), str(search["parent_run_id"])
    tags = {SEARCH_TAG: search_name(c, parent)} | tags
    # continue only an interrupted attempt (not FINISHED) of this trial on the same data
    query = (f"tags.mlflow.parentRunId = '{parent}' and tags.{TRIAL_TAG} = '{trial}' "
             f"and attributes.status != 'FINISHED'")
    if "data_hash" in tags:
        query += f" and tags.data_hash = '{tags['data_hash']}'"
    found = [run_id] if run_id else [str(r.info.run_id) for r in retry(
        c.search_runs, [exp_id], filter_string=query, order_by=["attributes.start_time DESC"])]
    if found:
        run_id = found[0]
        retry(c.update_run, run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        for key, value in tags.items():
            retry(c.set_tag, run_id, key, value)
        log.info("%s: continuing MLflow run %s", trial, run_id)
    else:
        all_tags = {"mlflow.parentRunId": parent, "mlflow.runName": trial, TRIAL_TAG: trial}
        run_id = str(retry(c.create_run, exp_id, tags=all_tags | tags).info.run_id)
        batch = [Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v))
                 for k, v in sorted(flat_params.items())]
        for i in range(0, len(batch), 100):
            retry(c.log_batch, run_id, params=batch[i : i + 100])
        if search.get("dataset"):
            from mripipe.track.dataset import log_dataset

            retry(log_dataset, c, run_id, search["dataset"])
        log.info("%s: new MLflow run %s (parent %s)", trial, run_id, parent)
    return run_id


def log_epoch(c: Any, run_id: str, metrics: dict[str, float], step: int,
              keep_nan: Collection[str] = ()) -> None:
    """Log one epoch's metrics at ``step``, in the dict's order; NaN values are skipped but for
    the keys in ``keep_nan`` (MLflow stores NaN: "not measured at this step").

    The order matters once: MLflow lists a run's metrics in the order each key was first logged,
    and its compare page plots the first one the compared runs share.
    """
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v == v or k in keep_nan]
    retry(c.log_batch, run_id, metrics=batch)


def finish_run(c: Any, run_id: str, artifacts: Sequence[str | Path] = (), status: str = "FINISHED") -> None:
    """Log artifact files and set the run's final status."""
    for path in artifacts:
        retry(c.log_artifact, run_id, str(path))
    retry(c.set_terminated, run_id, status)

"""``mripipe search-init``: the MLflow experiment (if needed) and the parent run of a search, with
the data it uses as the run's dataset input; writes ``results/{experiment}/search.json``, which
every trial of the search reads (:func:`mripipe.track.tracking.open_trial_run`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mripipe.core.utils import write_json
from mripipe.track.tracking import (
    SEARCH_TAG,
    client,
    config_hash,
    get_or_create_experiment,
    git_commit,
    retry,
)

log = logging.getLogger(__name__)


def search_init(
    experiment: str, tracking_uri: str, params: dict[str, Any], out: str | Path,
    workdir: str | Path | None = None, dataset: dict[str, Any] | None = None,
    train_seed: int | None = None,
) -> dict[str, Any]:
    """Create the MLflow experiment (if needed) and the parent run of a search; write search.json.

    Args:
        experiment: mripipe experiment name (also the MLflow experiment name).
        tracking_uri: MLflow tracking URI, e.g. ``sqlite:///mlflow.db``.
        params: the experiment's config section.
        out: ``results/{experiment}/search.json``.
        workdir: folder whose git commit is tagged (default: the working directory).
        dataset: the data the search uses (:func:`mripipe.track.dataset.describe_dataset`),
            logged as the parent run's input (context ``training``) and kept in search.json
            for the trials.
        train_seed: the training seed of the trials (logged as the run's ``seed`` param and in
            its name, so the searches of a seed spread sit side by side).

    Returns:
        The search.json dict: ``experiment``, ``mlflow_experiment_id``, ``parent_run_id``,
        ``tracking_uri`` (and ``dataset``).
    """
    c = client(tracking_uri)
    exp_id = get_or_create_experiment(c, experiment, tracking_uri)
    search = params.get("search") or {}
    tags = {
        "mlflow.runName": f"search-{experiment}" + ("" if train_seed is None else f"-seed-{train_seed}"),
        "mripipe.role": "search",
        "task": str(params.get("task", "")),
        "config_hash": config_hash(params),
    }
    tags[SEARCH_TAG] = tags["mlflow.runName"]  # one "Group by" group per search (one per seed)
    commit = git_commit(workdir)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = retry(c.create_run, exp_id, tags=tags)
    run_id = run.info.run_id
    from mlflow.entities import Param

    seed = [] if train_seed is None else [Param("seed", str(train_seed))]
    retry(c.log_batch, run_id, params=[
        *seed,
        Param("n_trials", str(search.get("n_trials", ""))),
        Param("search_seed", str(search.get("seed", ""))),
        Param("metric", str(search.get("metric", ""))),
        Param("space", json.dumps(search.get("space") or {}, sort_keys=True)[:6000]),
    ])
    doc = {
        "experiment": experiment,
        "mlflow_experiment_id": exp_id,
        "parent_run_id": run_id,
        "tracking_uri": tracking_uri,
    }
    if dataset is not None:
        from mripipe.track.dataset import log_dataset

        retry(log_dataset, c, run_id, dataset)
        doc["dataset"] = dataset
    write_json(out, doc)
    log.info("%s: MLflow experiment %s, parent run %s", experiment, exp_id, run_id)
    return doc


def start_search(experiment: str, tracking_uri: str, params: dict[str, Any], out: Path,
                 manifest: Path | None = None, splits: Path | None = None,
                 dataset_name: str | None = None, train_seed: int | None = None) -> dict[str, Any]:
    """``mripipe search-init``: :func:`search_init`; with ``manifest`` and ``splits``, the data the
    trials read (fold ``params["fold"]``) is described and logged as the dataset ``dataset_name``
    (default: the manifest's name)."""
    dataset = None
    if manifest and splits:
        from mripipe.track.dataset import describe_dataset

        dataset = describe_dataset(manifest, splits, dataset_name or manifest.stem,
                                   int(params.get("fold", 0)))
    return search_init(experiment, tracking_uri, params, out, dataset=dataset, train_seed=train_seed)

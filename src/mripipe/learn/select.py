"""Select the best trial of a search on the validation metric only, and log it to MLflow.

Only each trial's ``val_metrics.json`` (validation fold) decides; the test split is never read.
The selected trial becomes the self-contained model package ``results/{experiment}/model/``
(:mod:`mripipe.learn.package`), logged as an MLflow pyfunc model on the trial's run and registered
as ``{experiment}`` with the alias ``champion``; the run is tagged ``selected=true`` and the parent
(search) run gets ``selected_trial``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import read_json, write_json
from mripipe.learn.ladder import survivors
from mripipe.learn.package import log_package
from mripipe.learn.rungs import ladder_record, rank_trials
from mripipe.learn.search import search_metric
from mripipe.track import tracking

__all__ = ["build_package", "cli_select", "rank_trials", "select_trial"]

log = logging.getLogger(__name__)


def build_package(ranked: dict[str, Any], search: dict[str, Any], inputs: Mapping[str, Any],
                  model_dir: str | Path, fold: int = 0) -> dict[str, Any]:
    """Write the selected trial's model package (:func:`mripipe.learn.package.write_package`).

    Args:
        ranked: the best row of :func:`rank_trials`.
        search: search.json (MLflow experiment and tracking URI).
        inputs: ``manifest``, ``splits``, ``fingerprint`` (paths), ``patches`` (folder, read for
            classification volumes) and ``settings`` (see :func:`~mripipe.learn.package.package_meta`).
        model_dir: ``results/{experiment}/model``.
        fold: the fold the trials trained on.
    """
    from mripipe.core.config import with_defaults
    from mripipe.data.manifest import channel_columns, read_manifest
    from mripipe.learn.package import training_fingerprint, write_package
    from mripipe.learn.patches import META

    fingerprint = training_fingerprint(inputs["fingerprint"], inputs["manifest"], inputs["splits"], fold)
    settings = dict(inputs["settings"])
    settings["preprocess"] = with_defaults("preprocess", settings.get("preprocess"))
    settings.setdefault("target_spacing", read_json(inputs["fingerprint"])["target_spacing"])
    if inputs.get("preprocessed"):  # segmentation: threshold and minimum lesion on validation
        from mripipe.learn.postprocess import validation_postprocess

        chosen = validation_postprocess(ranked["trial_dir"], inputs, fold, settings)
        settings |= {"threshold": chosen.get("threshold", settings.get("threshold")), "postprocess": chosen}
    meta_path = Path(inputs.get("patches") or "") / META
    volume = read_json(meta_path) if inputs.get("patches") and meta_path.is_file() else None
    return write_package(ranked["trial_dir"], model_dir, channel_columns(read_manifest(inputs["manifest"])),
                         settings, fingerprint, volume,
                         {"experiment_id": str(search.get("mlflow_experiment_id", "")),
                          "tracking_uri": search.get("tracking_uri")})


def select_trial(
    experiment: str,
    trial_dirs: Sequence[str | Path],
    search_path: str | Path,
    params: dict[str, Any],
    out: str | Path,
    log_model: bool = True,
    model_dir: str | Path | None = None,
    package_inputs: Mapping[str, Any] | None = None,
    rung_files: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Pick the trial with the highest validation metric and write ``selected.json``.

    Args:
        experiment: experiment name.
        trial_dirs: the trial folders (each with ``val_metrics.json`` and ``checkpoint.pt``).
        search_path: ``results/{experiment}/search.json``.
        params: the experiment's config section (``search.metric``).
        out: ``results/{experiment}/selected.json``.
        log_model: log the package to MLflow as a pyfunc model, registered as ``experiment``
            with the alias ``champion`` (needs ``model_dir``).
        model_dir: where to write the model package (``results/{experiment}/model``); None = none.
        package_inputs: what the package is built from (see :func:`build_package`).
        rung_files: successive halving: the ranked rungs' files, in order; ``trial_dirs`` are then
            the last rung's slots, holding the survivors of the last file.

    Returns:
        selected.json: ``{"experiment", "trial", "trial_dir", "metric", "value", "epoch",
        "ranking", "mlflow_run_id", "mlflow_experiment_id", "parent_run_id", "tracking_uri",
        "model_dir", "model_uri", "registered_model", "model_version", "champion_uri"}``, and
        ``"rungs"`` (:func:`~mripipe.learn.rungs.ladder_record`) with ``rung_files``.
    """
    search, metric = read_json(search_path), search_metric(params)
    names = [row["trial"] for row in survivors(rung_files[-1])] if rung_files else None
    ranking = rank_trials(trial_dirs, metric, names)
    best = ranking[0]
    import torch

    ckpt = torch.load(Path(best["trial_dir"]) / "checkpoint.pt", map_location="cpu", weights_only=True)
    run_id = str(ckpt.get("mlflow_run_id", ""))
    registry: dict[str, Any] = {"model_uri": None}
    postprocess = None
    if model_dir is not None:
        meta = build_package(best, search, package_inputs or {}, model_dir, int(params.get("fold", 0)))
        postprocess = meta.get("postprocess")
    if run_id:
        c = tracking.client(search["tracking_uri"])
        if log_model and model_dir is not None:
            registry = log_package(model_dir, search["tracking_uri"], run_id, experiment)
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
        "model_dir": str(model_dir) if model_dir is not None else None,
        "postprocess": postprocess,
        **registry,
    }
    if rung_files:  # which trial each slot held, and every rung's decisions
        doc["rungs"] = ladder_record(rung_files)
    write_json(out, doc)
    log.info("%s: selected %s (%s=%.4f) of %d trials", experiment, best["trial"], metric,
             best["value"], len(ranking))
    return doc


def cli_select(ns: argparse.Namespace) -> None:
    """Adapter for ``mripipe select``: selected.json and, with ``--model-dir``, the package."""
    model_dir = getattr(ns, "model_dir", None)
    inputs = {"manifest": getattr(ns, "manifest", None), "splits": getattr(ns, "splits", None),
              "fingerprint": getattr(ns, "fingerprint", None), "patches": getattr(ns, "patches", None),
              # segmentation: the post-processing is chosen on the validation scans
              "preprocessed": getattr(ns, "preprocessed", None)
              if ns.params.get("task", "segmentation") == "segmentation" else None,
              "settings": getattr(ns, "package_params", None) or {}}
    if model_dir is not None and not all(inputs[k] for k in ("manifest", "splits", "fingerprint")):
        raise InputError("select --model-dir needs --manifest, --splits and --fingerprint")
    select_trial(ns.experiment, ns.trials, ns.search, ns.params, ns.out, model_dir=model_dir,
                 package_inputs=inputs, rung_files=getattr(ns, "rungs", None) or ())

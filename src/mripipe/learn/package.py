"""``mripipe package``: the self-contained model package of the chosen trial
(``results/{experiment}/model/``) and ``selected.json``, logged to MLflow as a pyfunc model
registered with the alias ``champion``.

It reads ``choice.json`` (:mod:`mripipe.learn.choose`) and, with ``split.n_folds > 1``, the fold
models (:mod:`mripipe.learn.folds`); the selected run is tagged ``selected=true`` and the parent
(search) run gets ``selected_trial``.

The package (format in :mod:`mripipe.core.package_format`) holds the weights as a bare ``state_dict``
and ``model.json``: the trial's network definition, the channel names in order, the label
names, the ``preprocess`` section and target spacing, the sliding-window settings, the
post-processing, the training data's fingerprint and the MLflow run. ``mripipe infer`` and
``predict`` (``mripipe.infer.apply``) read only this folder, so what is evaluated is what is
shipped. The MLflow model wraps the same folder (``artifacts/package``) with the code model
``mripipe/infer/mlflow_model.py``, referenced by path: this module does not import ``infer``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mripipe.core.config import with_defaults
from mripipe.core.errors import InputError
from mripipe.core.labels import foreground
from mripipe.core.package_format import FORMAT, META_FILE, WEIGHTS_FILE
from mripipe.core.split_guard import load_splits
from mripipe.core.utils import atomic_path, read_json, sha256_file, write_json
from mripipe.data.manifest import channel_columns, read_manifest
from mripipe.learn.checkpoint import CHECKPOINT, Checkpoint, load_checkpoint, save_state_dict
from mripipe.learn.choose import choose_trial
from mripipe.learn.folds import fold_members, member_rows, search_fold
from mripipe.track import tracking

log = logging.getLogger(__name__)

#: A new scan's spacing may lie this factor outside the training range on any axis.
SPACING_TOLERANCE = 2.0
ALIAS = "champion"
CODE_MODEL = Path(__file__).resolve().parents[1] / "infer" / "mlflow_model.py"


def training_fingerprint(fingerprint: str | Path, manifest: str | Path, splits: str | Path,
                         fold: int = 0) -> dict[str, Any]:
    """Native voxel spacings of the training and validation scans of ``fold``, per channel.

    Args:
        fingerprint: ``results/fingerprint.json`` (``spacings: {scan: {channel: [x, y, z]}}``,
            RAS axis order).
        manifest: ``results/manifest.tsv`` (scan -> subject).
        splits: ``results/splits.json``, read with role ``select`` (no test subject is seen).
        fold: the fold the trials trained on.

    Returns:
        ``{"axes": "RAS", "n_scans", "tolerance", "spacing": {channel: {"min", "median",
        "max"}}}`` (mm per axis).
    """
    split = load_splits(splits, "select")
    if not 0 <= fold < len(split["folds"]):
        raise InputError(f"{splits}: fold {fold} requested, {len(split['folds'])} available")
    subjects = set(split["folds"][fold]["train"]) | set(split["folds"][fold]["val"])
    table = read_manifest(manifest)
    scans = set(table.loc[table["subject"].isin(subjects), "scan"])
    spacings = read_json(fingerprint).get("spacings", {})
    out: dict[str, dict[str, list[float]]] = {}
    for channel in channel_columns(table):
        values = np.array([s[channel] for scan, s in spacings.items() if scan in scans and channel in s])
        if len(values) == 0:
            raise InputError(f"{fingerprint}: no {channel} spacing of a training scan")
        out[channel] = {"min": values.min(0).tolist(), "median": np.median(values, 0).tolist(),
                        "max": values.max(0).tolist()}
    return {"axes": "RAS", "n_scans": len(scans), "tolerance": SPACING_TOLERANCE, "spacing": out}


def package_meta(ckpt: Checkpoint, channels: list[str], settings: Mapping[str, Any],
                 fingerprint: dict[str, Any], volume: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``model.json`` of a checkpoint (without the weights entry).

    Args:
        ckpt: the trial's ``checkpoint.pt``.
        channels: the manifest's channel names, in order (the first is the reference).
        settings: ``{"preprocess": section, "target_spacing": [x, y, z], "predict": section,
            "threshold": float, "seed": int}``.
        fingerprint: :func:`training_fingerprint`.
        volume: classification input parameters (``volume_shape``, ``volume_pooling``), or None.
    """
    info, params = ckpt.meta, ckpt.params.to_dict()
    task = info.task
    predict = with_defaults("predict", settings.get("predict"))  # the schema's defaults, one place
    meta: dict[str, Any] = {
        "format": FORMAT, "task": task,
        "experiment": info.experiment, "trial": info.trial,
        "epoch": ckpt.epoch,
        "network": params["network"], "params": params,
        "in_channels": info.in_channels, "n_classes": info.n_classes,
        "channels": list(channels), "reference_channel": channels[0],
        # segmentation: the label map name -> value (mripipe.core.labels; output channel k is the
        # k-th class by value); classification: the class names, index = network output
        "labels": (foreground(info.labels) if task == "segmentation"
                   else list(info.class_names)),
        "preprocess": dict(settings["preprocess"]),
        "target_spacing": [float(s) for s in settings["target_spacing"]],
        "seed": int(settings.get("seed", 0)),
        "fingerprint": fingerprint | {"data_hash": info.data_hash},
        "validation": {"metric": ckpt.metric, "value": ckpt.value},
        "mlflow": {"run_id": info.mlflow_run_id or None},
        "software": {"torch": torch.__version__.split("+")[0]},
    }
    if task == "segmentation":
        roi = predict.get("roi_size") or info.roi_size
        meta["window"] = {"roi_size": [int(v) for v in roi], "overlap": float(predict["sw_overlap"]),
                          "batch_size": int(predict["sw_batch_size"]), "blend": "gaussian"}
        chosen = dict(settings.get("postprocess") or {})
        if info.n_classes > 2:
            meta["postprocess"] = multiclass_postprocess(chosen, predict)
            return meta
        meta["postprocess"] = {"threshold": float(settings["threshold"]),
                               "min_lesion_mm3": float(chosen.get("min_lesion_mm3", 0.0)),
                               "candidate_threshold": chosen.get("candidate_threshold"),
                               "mask_outside_brain": bool(predict["mask_outside_brain"]),
                               "resample": "linear probabilities to the native grid, then threshold",
                               "chosen_on_validation": chosen or None}
    else:
        if volume is None:
            raise InputError(f"{info.trial}: a classification package needs the volume parameters")
        meta["volume"] = {"volume_shape": [int(v) for v in volume["volume_shape"]],
                          "volume_pooling": [str(v) for v in volume["volume_pooling"]]}
        meta["postprocess"] = {"decision": "argmax"}
    return meta


def multiclass_postprocess(chosen: Mapping[str, Any], predict: Mapping[str, Any]) -> dict[str, Any]:
    """``model.json``'s ``postprocess`` of a K >= 2 class model: argmax of the K + 1
    probabilities resampled to the native grid (no threshold, no minimum volume)."""
    return {"method": "argmax", "candidate_threshold": chosen.get("candidate_threshold"),
            "mask_outside_brain": bool(predict["mask_outside_brain"]),
            "resample": "linear probabilities (K + 1 channels) to the native grid, then argmax",
            "chosen_on_validation": dict(chosen) or None}


def write_package(trial_dir: str | Path, out_dir: str | Path, channels: list[str],
                  settings: Mapping[str, Any], fingerprint: dict[str, Any],
                  volume: Mapping[str, Any] | None = None, mlflow_info: Mapping[str, Any] | None = None,
                  members: Mapping[int, str | Path] | None = None) -> dict[str, Any]:
    """Write the package of a trial's best checkpoint into ``out_dir`` (replaced atomically).

    Args:
        trial_dir: ``results/{experiment}/trials/{trial}`` (``checkpoint.pt``).
        out_dir: ``results/{experiment}/model``.
        channels: channel names in order.
        settings: see :func:`package_meta`.
        fingerprint: :func:`training_fingerprint`.
        volume: classification input parameters, or None.
        mlflow_info: extra entries of ``model.json``'s ``mlflow`` (experiment id, tracking URI).
        members: a fold ensemble (:func:`mripipe.learn.folds.fold_members`, ``trial_dir`` among
            them): every member's weights go in, listed in ``model.json`` ``ensemble``.

    Returns:
        The ``model.json`` content.
    """
    path = Path(trial_dir) / CHECKPOINT
    ckpt = load_checkpoint(path)
    meta = package_meta(ckpt, channels, settings, fingerprint, volume)
    if meta["task"] == "segmentation" and meta["in_channels"] != len(channels):
        raise InputError(f"{path}: network takes {meta['in_channels']} channels, data has {channels}")
    meta["trial"] = meta["trial"] or Path(trial_dir).name
    meta["mlflow"].update(dict(mlflow_info or {}))
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        save_state_dict(ckpt.model, tmp / WEIGHTS_FILE)
        meta["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_file(tmp / WEIGHTS_FILE),
                           "format": "torch state_dict, torch.load(weights_only=True)"}
        if members and len(members) > 1:
            from mripipe.learn.folds import write_members

            meta["ensemble"] = write_members(tmp, members, trial_dir, meta["weights"])
        write_json(tmp / META_FILE, meta)
    log.info("model package of %s -> %s", Path(trial_dir).name, out_dir)
    return meta


def log_package(package_dir: str | Path, tracking_uri: str, run_id: str, name: str) -> dict[str, Any]:
    """Log the package as an MLflow pyfunc model on ``run_id``, register it as ``name`` and point
    the alias ``champion`` at the new version.

    Returns:
        ``{"model_uri", "registered_model", "model_version", "alias", "champion_uri"}``.
    """
    import mlflow
    import mlflow.pyfunc
    import monai

    tracking.no_telemetry()
    client = tracking.client(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    reqs = [f"torch=={torch.__version__.split('+')[0]}", f"monai=={monai.__version__}",
            f"mlflow=={mlflow.__version__}", "SimpleITK", "mripipe"]
    with mlflow.start_run(run_id=run_id):
        info = tracking.retry(mlflow.pyfunc.log_model, name="model", python_model=str(CODE_MODEL),
                              artifacts={"package": str(package_dir)}, pip_requirements=reqs)
    version = tracking.retry(mlflow.register_model, info.model_uri, name).version
    tracking.retry(client.set_registered_model_alias, name, ALIAS, str(version))
    log.info("MLflow model %s registered as %s version %s (alias %s)", info.model_uri, name, version, ALIAS)
    return {"model_uri": str(info.model_uri), "registered_model": name, "model_version": str(version),
            "alias": ALIAS, "champion_uri": f"models:/{name}@{ALIAS}"}


def build_package(ranked: dict[str, Any], search: dict[str, Any], inputs: Mapping[str, Any],
                  model_dir: str | Path, fold: int = 0,
                  members: Mapping[int, str | Path] | None = None) -> dict[str, Any]:
    """Write the selected trial's model package (:func:`mripipe.learn.package.write_package`).

    Args:
        ranked: the best row of :func:`rank_trials`.
        search: search.json (MLflow experiment and tracking URI).
        inputs: ``manifest``, ``splits``, ``fingerprint`` (paths), ``patches`` (folder, read for
            classification volumes) and ``settings`` (see :func:`~mripipe.learn.package.package_meta`).
        model_dir: ``results/{experiment}/model``.
        fold: the fold the trials trained on.
        members: a fold ensemble (:func:`mripipe.learn.folds.fold_members`): post-processing on
            the pooled out-of-fold predictions, every member's weights in the package.
    """
    from mripipe.learn.patches import META

    fingerprint = training_fingerprint(inputs["fingerprint"], inputs["manifest"], inputs["splits"], fold)
    settings = dict(inputs["settings"])
    settings["preprocess"] = with_defaults("preprocess", settings.get("preprocess"))
    settings.setdefault("target_spacing", read_json(inputs["fingerprint"])["target_spacing"])
    if inputs.get("preprocessed"):  # segmentation: threshold and minimum lesion on validation
        from mripipe.learn.postprocess import validation_postprocess

        chosen = validation_postprocess(ranked["trial_dir"], inputs, fold, settings, members)
        settings |= {"threshold": chosen.get("threshold", settings.get("threshold")), "postprocess": chosen}
    meta_path = Path(inputs.get("patches") or "") / META
    volume = read_json(meta_path) if inputs.get("patches") and meta_path.is_file() else None
    return write_package(ranked["trial_dir"], model_dir, channel_columns(read_manifest(inputs["manifest"])),
                         settings, fingerprint, volume,
                         {"experiment_id": str(search.get("mlflow_experiment_id", "")),
                          "tracking_uri": search.get("tracking_uri")}, members)


def package_selected(
    experiment: str,
    trial_dirs: Sequence[str | Path],
    search_path: str | Path,
    params: dict[str, Any],
    out: str | Path,
    log_model: bool = True,
    model_dir: str | Path | None = None,
    package_inputs: Mapping[str, Any] | None = None,
    rung_files: Sequence[str | Path] = (),
    choice: str | Path | None = None,
    fold_dirs: Sequence[str | Path] = (),
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
        choice: ``choice.json`` of :func:`choose_trial` (then ``trial_dirs`` and ``rung_files``
            are not read).
        fold_dirs: ``split.n_folds > 1``: the selected configuration trained on the other folds
            (``results/{experiment}/folds/fold-{f}``); the package is their fold ensemble.

    Returns:
        selected.json: ``{"experiment", "trial", "trial_dir", "metric", "value", "epoch",
        "ranking", "mlflow_run_id", "mlflow_experiment_id", "parent_run_id", "tracking_uri",
        "model_dir", "model_uri", "registered_model", "model_version", "champion_uri"}``, and
        ``"rungs"`` (:func:`~mripipe.learn.rung.ladder_record`) with ``rung_files``; with
        ``fold_dirs``, ``"folds"`` (:func:`~mripipe.learn.folds.member_rows`) and ``"n_folds"``.
    """
    search = read_json(search_path)
    chosen = read_json(choice) if choice else choose_trial(experiment, trial_dirs, params, None, rung_files)
    best, metric = chosen, str(chosen["metric"])
    members = fold_members(best["trial_dir"], fold_dirs) if fold_dirs else None
    run_id = load_checkpoint(Path(best["trial_dir"]) / CHECKPOINT).meta.mlflow_run_id or ""
    registry: dict[str, Any] = {"model_uri": None}
    postprocess = None
    if model_dir is not None:
        meta = build_package(best, search, package_inputs or {}, model_dir, search_fold(params),
                             members)
        postprocess = meta.get("postprocess")
    if run_id:
        registry = _track(search, run_id, best, experiment, model_dir if log_model else None)
    else:
        log.warning("%s: checkpoint has no MLflow run id; nothing logged", best["trial_dir"])
    doc = {
        **{k: chosen[k] for k in ("experiment", "trial", "trial_dir", "metric", "value", "epoch", "ranking")},
        "mlflow_run_id": run_id,
        "mlflow_experiment_id": str(search["mlflow_experiment_id"]),
        "parent_run_id": str(search["parent_run_id"]),
        "tracking_uri": search["tracking_uri"],
        "model_dir": str(model_dir) if model_dir is not None else None,
        "postprocess": postprocess,
        **registry,
    }
    if "rungs" in chosen:
        doc["rungs"] = chosen["rungs"]
    if members:  # each fold model's own validation value; the package averages them all
        doc |= {"n_folds": len(members), "folds": member_rows(members, metric)}
    write_json(out, doc)
    log.info("%s: selected %s (%s=%.4f), %d fold model(s)", experiment, best["trial"], metric,
             best["value"], len(members or {0: None}))
    return doc


def _track(search: dict[str, Any], run_id: str, best: Mapping[str, Any], experiment: str,
           model_dir: str | Path | None) -> dict[str, Any]:
    """Tag the selected run and the search's parent run (finished); with ``model_dir``, log and
    register the package (:func:`~mripipe.learn.package.log_package`): its registry entries."""
    c = tracking.client(search["tracking_uri"])
    registry: dict[str, Any] = {"model_uri": None}
    if model_dir is not None:
        registry = log_package(model_dir, search["tracking_uri"], run_id, experiment)
    tracking.retry(c.set_tag, run_id, "selected", "true")
    parent = str(search["parent_run_id"])
    tracking.retry(c.set_tag, parent, "selected_trial", best["trial"])
    tracking.retry(c.set_tag, parent, "selected_run_id", run_id)
    tracking.log_epoch(c, parent, {f"selected_{best['metric']}": best["value"]}, 0)
    tracking.retry(c.set_terminated, parent, "FINISHED")
    return registry


def package_experiment(
    experiment: str, search: Path, params: dict[str, Any], out: Path, *,
    choice: Path | None = None, trials: Sequence[Path] = (), folds: Sequence[Path] = (),
    rungs: Sequence[Path] = (), model_dir: Path | None = None, manifest: Path | None = None,
    splits: Path | None = None, fingerprint: Path | None = None, patches: Path | None = None,
    preprocessed: Path | None = None, settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``mripipe package``: selected.json and, with ``model_dir``, the model package
    (:func:`package_selected`, whose ``package_inputs`` are ``manifest``, ``splits``,
    ``fingerprint``, ``patches``, ``preprocessed`` and ``settings``).

    ``choice`` or ``trials`` names what is selected; ``model_dir`` needs ``manifest``, ``splits``
    and ``fingerprint``; ``preprocessed`` (the post-processing chosen on the validation scans) is
    read for segmentation only.
    """
    inputs = {"manifest": manifest, "splits": splits, "fingerprint": fingerprint, "patches": patches,
              # segmentation: the post-processing is chosen on the validation scans
              "preprocessed": preprocessed if params.get("task", "segmentation") == "segmentation" else None,
              "settings": settings or {}}
    if model_dir is not None and not all(inputs[k] for k in ("manifest", "splits", "fingerprint")):
        raise InputError("package --model-dir needs --manifest, --splits and --fingerprint")
    if not choice and not trials:
        raise InputError("package needs --choice (choice.json) or --trials")
    return package_selected(experiment, trials, search, params, out, model_dir=model_dir,
                            package_inputs=inputs, rung_files=rungs, choice=choice, fold_dirs=folds)

"""Write the self-contained model package of the selected trial (``results/{experiment}/model/``)
and log it to MLflow as a pyfunc model registered with the alias ``champion``.

The package (format in :mod:`mripipe.core.package`) holds the weights as a bare ``state_dict``
and ``model.json``: the trial's network definition, the channel names in order, the label
names, the ``preprocess`` section and target spacing, the sliding-window settings, the
post-processing, the training data's fingerprint and the MLflow run. ``mripipe infer`` and
``predict`` (``mripipe.infer.package``) read only this folder, so what is evaluated is what is
shipped. The MLflow model wraps the same folder (``artifacts/package``) with the code model
``mripipe/infer/mlflow_model.py``, referenced by path: this module does not import ``infer``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mripipe.core.errors import InputError
from mripipe.core.labels import foreground
from mripipe.core.package import FORMAT, META_FILE, WEIGHTS_FILE
from mripipe.core.splits import load_splits
from mripipe.core.utils import atomic_path, read_json, sha256_file, write_json
from mripipe.data.manifest import channel_columns, read_manifest
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


def package_meta(ckpt: Mapping[str, Any], channels: list[str], settings: Mapping[str, Any],
                 fingerprint: dict[str, Any], volume: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``model.json`` of a checkpoint (without the weights entry).

    Args:
        ckpt: the trial's ``checkpoint.pt`` (``params``, ``task``, ``in_channels``, ...).
        channels: the manifest's channel names, in order (the first is the reference).
        settings: ``{"preprocess": section, "target_spacing": [x, y, z], "predict": section,
            "threshold": float, "seed": int}``.
        fingerprint: :func:`training_fingerprint`.
        volume: classification input parameters (``volume_shape``, ``volume_pooling``), or None.
    """
    task = str(ckpt["task"])
    predict = dict(settings.get("predict") or {})
    meta: dict[str, Any] = {
        "format": FORMAT, "task": task,
        "experiment": ckpt.get("experiment"), "trial": ckpt.get("trial"),
        "epoch": int(ckpt.get("epoch", 0)),
        "network": dict(ckpt["params"]["network"]), "params": dict(ckpt["params"]),
        "in_channels": int(ckpt["in_channels"]), "n_classes": int(ckpt["n_classes"]),
        "channels": list(channels), "reference_channel": channels[0],
        # segmentation: the label map name -> value (mripipe.core.labels; output channel k is the
        # k-th class by value); classification: the class names, index = network output
        "labels": (foreground(ckpt.get("labels")) if task == "segmentation"
                   else list(ckpt.get("class_names") or [])),
        "preprocess": dict(settings["preprocess"]),
        "target_spacing": [float(s) for s in settings["target_spacing"]],
        "seed": int(settings.get("seed", 0)),
        "fingerprint": fingerprint | {"data_hash": ckpt.get("data_hash")},
        "validation": {"metric": ckpt.get("metric"), "value": ckpt.get("value")},
        "mlflow": {"run_id": ckpt.get("mlflow_run_id") or None},
        "software": {"torch": torch.__version__.split("+")[0]},
    }
    if task == "segmentation":
        roi = predict.get("roi_size") or ckpt["roi_size"]
        meta["window"] = {"roi_size": [int(v) for v in roi], "overlap": float(predict.get("sw_overlap", 0.5)),
                          "batch_size": int(predict.get("sw_batch_size", 2)), "blend": "gaussian"}
        chosen = dict(settings.get("postprocess") or {})
        if int(ckpt["n_classes"]) > 2:
            meta["postprocess"] = multiclass_postprocess(chosen, predict)
            return meta
        meta["postprocess"] = {"threshold": float(settings["threshold"]),
                               "min_lesion_mm3": float(chosen.get("min_lesion_mm3", 0.0)),
                               "candidate_threshold": chosen.get("candidate_threshold"),
                               "mask_outside_brain": bool(predict.get("mask_outside_brain", True)),
                               "resample": "linear probabilities to the native grid, then threshold",
                               "chosen_on_validation": chosen or None}
    else:
        if volume is None:
            raise InputError(f"{ckpt.get('trial')}: a classification package needs the volume parameters")
        meta["volume"] = {"volume_shape": [int(v) for v in volume["volume_shape"]],
                          "volume_pooling": [str(v) for v in volume["volume_pooling"]]}
        meta["postprocess"] = {"decision": "argmax"}
    return meta


def multiclass_postprocess(chosen: Mapping[str, Any], predict: Mapping[str, Any]) -> dict[str, Any]:
    """``model.json``'s ``postprocess`` of a K >= 2 class model: argmax of the K + 1
    probabilities resampled to the native grid (no threshold, no minimum volume)."""
    return {"method": "argmax", "candidate_threshold": chosen.get("candidate_threshold"),
            "mask_outside_brain": bool(predict.get("mask_outside_brain", True)),
            "resample": "linear probabilities (K + 1 channels) to the native grid, then argmax",
            "chosen_on_validation": dict(chosen) or None}


def write_package(trial_dir: str | Path, out_dir: str | Path, channels: list[str],
                  settings: Mapping[str, Any], fingerprint: dict[str, Any],
                  volume: Mapping[str, Any] | None = None, mlflow_info: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Write the package of a trial's best checkpoint into ``out_dir`` (replaced atomically).

    Args:
        trial_dir: ``results/{experiment}/trials/{trial}`` (``checkpoint.pt``).
        out_dir: ``results/{experiment}/model``.
        channels: channel names in order.
        settings: see :func:`package_meta`.
        fingerprint: :func:`training_fingerprint`.
        volume: classification input parameters, or None.
        mlflow_info: extra entries of ``model.json``'s ``mlflow`` (experiment id, tracking URI).

    Returns:
        The ``model.json`` content.
    """
    path = Path(trial_dir) / "checkpoint.pt"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise InputError(f"{path}: not a readable checkpoint ({exc})") from None
    meta = package_meta(ckpt, channels, settings, fingerprint, volume)
    if meta["task"] == "segmentation" and meta["in_channels"] != len(channels):
        raise InputError(f"{path}: network takes {meta['in_channels']} channels, data has {channels}")
    meta["trial"] = meta["trial"] or Path(trial_dir).name
    meta["mlflow"].update(dict(mlflow_info or {}))
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        state = {k: v.detach().cpu().contiguous() for k, v in ckpt["model"].items()}
        torch.save(state, tmp / WEIGHTS_FILE)
        meta["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_file(tmp / WEIGHTS_FILE),
                           "format": "torch state_dict, torch.load(weights_only=True)"}
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

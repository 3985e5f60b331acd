"""Train one random-search trial: resolve its parameters, build data, model, loss and validation,
run :func:`mripipe.learn.loop.fit` on an allocated device and track it as a nested MLflow run.

Outputs (``out_dir`` = ``results/{experiment}/trials/{trial}``): ``params.json``,
``checkpoint.pt`` (best), ``last.pt`` (resume state), ``history.tsv``, ``val_metrics.json``,
``history.png``. A killed job rerun with the same arguments resumes from ``last.pt`` and
continues the same MLflow run. With successive halving (:mod:`mripipe.learn.halving`) a trial
stops at its rung's budget; promoted into a rung slot (``results/{experiment}/rungs/{r}/slot-{k}``)
it continues its previous rung's ``last.pt`` and MLflow run, writing the same files there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader

from mripipe.core.devices import allocate, torch_settings
from mripipe.core.errors import InputError
from mripipe.core.split_guard import load_splits
from mripipe.core.utils import atomic_path, derive_seed, read_json, write_json
from mripipe.learn.checkpoint import CHECKPOINT, CheckpointMeta, load_checkpoint
from mripipe.learn.folds import search_fold
from mripipe.learn.halving import RungJob, promoted
from mripipe.learn.loop import FitResult, fit, seed_everything
from mripipe.learn.losses import make_loss
from mripipe.learn.monitor import (
    classification_validator,
    load_val_scans,
    segmentation_validator,
)
from mripipe.learn.networks import build_model, check_input_size
from mripipe.learn.search import resolve_params, search_metric, trial_index, trial_label
from mripipe.learn.trial_params import SegmentationTraining, TrialParams
from mripipe.track import tracking

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


def plot_history(history: Sequence[dict[str, float]], metric: str, path: str | Path) -> None:
    """Loss curves and the validation metric per epoch, as a PNG (written atomically)."""
    table = pd.DataFrame(list(history))
    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(table["epoch"], table["train_loss"], "o-", label="train")
    val = table.dropna(subset=["val_loss"])
    ax1.plot(val["epoch"], val["val_loss"], "s-", label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax1.legend()
    ax2.plot(val["epoch"], val[metric], "s-", color="C2")
    ax2.set(xlabel="epoch", ylabel=metric, title=metric, ylim=(0, 1))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)


def _data(
    p: TrialParams, patches: Path, manifest: Path, preprocessed: Path,
    train: list[str], val: list[str], seed: int, workers: int, device: torch.device,
) -> tuple[Callable[[int], Iterable[Batch]], int, Batch, Any, dict[str, Any]]:
    """Training batches per epoch, steps per epoch, a first batch, validation input and the
    data's checkpoint entries (:class:`~mripipe.learn.checkpoint.CheckpointMeta` fields)."""
    from mripipe.learn import loader
    from mripipe.learn.patches import class_names, patch_labels

    tr = p.training
    bs, aug, cap = tr.batch_size, float(tr.augment), tr.batches_per_epoch
    if isinstance(tr, SegmentationTraining):  # fresh patches every epoch: exactly `cap` batches
        n_samples = cap * bs if cap > 0 else None

        def batches(epoch: int) -> DataLoader[Batch]:
            return loader.segmentation_loader(patches, train, bs, seed, epoch, augment=aug,
                                              num_workers=workers, n_samples=n_samples)

        first_loader = loader.segmentation_loader(patches, train, bs, seed, 0, augment=0.0,
                                                  n_samples=bs)
        steps = len(batches(0))
    else:

        def batches(epoch: int) -> DataLoader[Batch]:
            return loader.classification_loader(patches, train, bs, seed, epoch, augment=aug,
                                                num_workers=workers)

        first_loader = loader.classification_loader(patches, train, bs, seed, 0, augment=0.0,
                                                    shuffle=False)
        steps = min(len(first_loader), cap) if cap > 0 else len(first_loader)
    first = next(iter(first_loader))
    meta: dict[str, Any] = {"in_channels": int(first["image"].shape[1])}
    if isinstance(tr, SegmentationTraining):
        labels = patch_labels(patches)
        names = ["background", *labels] if len(labels) >= 2 else ["background", "lesion"]
        meta |= {"n_classes": len(names), "class_names": names, "labels": labels,
                 "roi_size": [int(s) for s in first["image"].shape[2:]]}
        val_input: Any = load_val_scans(manifest, preprocessed, val, tr.val_max_scans,
                                        labels=labels)
    else:
        names = class_names(patches)
        meta |= {"n_classes": len(names), "class_names": names,
                 "roi_size": [int(s) for s in first["image"].shape[2:]]}

        def val_batches() -> Iterable[Batch]:
            return loader.classification_loader(patches, val, bs, seed, 0, augment=0.0, shuffle=False)

        weights = loader.class_weights(patches, train).to(device)
        val_input = (val_batches, weights)
    return batches, steps, first, val_input, meta


def train_trial(
    experiment: str,
    trial: str,
    patches_dir: str | Path,
    splits_path: str | Path,
    preprocessed_dir: str | Path,
    manifest_path: str | Path,
    search_path: str | Path,
    seed: int,
    params: dict[str, Any],
    out_dir: str | Path,
    threads: int = 1,
    lock_dir: str | Path = ".mripipe/gpu-locks",
    devices: Sequence[str] | None = None,
    per_device: int = 1,
    job: RungJob | None = None,
    loader_workers: int = 0,
    run_name: str | None = None,
) -> FitResult:
    """Train trial ``trial`` of ``experiment`` and track it in MLflow.

    Args:
        experiment: experiment name (``lesion_seg``).
        trial: ``trial-000``, ...; its index selects the sampled parameters.
        patches_dir: ``results/patches`` (read through :mod:`mripipe.learn.loader`).
        splits_path: ``results/splits.json`` (role ``train``; fold ``params["fold"]``, default 0).
        preprocessed_dir: ``results/preprocessed`` (whole validation scans, segmentation).
        manifest_path: ``results/manifest.tsv`` (scans of the validation subjects).
        search_path: ``results/{experiment}/search.json`` (MLflow experiment, parent run, URI).
        seed: master seed; the trial uses ``derive_seed(seed, "train", experiment, trial)``.
        params: the experiment's config section.
        out_dir: the trial folder.
        threads: CPU threads for torch.
        lock_dir: GPU lock folder (see :mod:`mripipe.core.devices`).
        devices: device names for allocation (default: the visible CUDA devices).
        per_device: trials sharing one device (``train.trials_per_gpu``).
        job: its rung of successive halving: the epoch to stop at and, promoted, the folder it
            continues (default: the whole budget, from scratch).
        loader_workers: DataLoader workers on a GPU (``train.loader_workers``; none on CPU).
        run_name: its MLflow run's name and trial tag (a fold model: ``{trial}-fold-{f}``).

    Returns: the :class:`~mripipe.learn.loop.FitResult`.
    """
    out = Path(out_dir)
    p = resolve_params(params, trial_index(trial))
    task, metric, job = p.task, search_metric(params), job or RungJob()
    write_json(out / "params.json", p.to_dict())
    fold, train, val = _fold(splits_path, params)
    search = read_json(search_path)
    trial_seed = derive_seed(seed, "train", experiment, trial)
    with allocate(lock_dir, devices, per_device=per_device) as slot, torch_settings(torch.device(slot.device), threads):
        device = torch.device(slot.device)
        workers = max(0, loader_workers) if device.type == "cuda" else 0
        batches, steps, _, val_input, data = _data(
            p, Path(patches_dir), Path(manifest_path), Path(preprocessed_dir),
            train, val, trial_seed, workers, device,
        )
        loss, validate = _loss_and_validator(p, val_input, data, device)
        check_input_size(p.network, data["roi_size"])
        seed_everything(derive_seed(trial_seed, "init"))
        model = build_model(p, data["in_channels"], data["n_classes"]).to(device)

        c = tracking.client(search["tracking_uri"])
        tags = _run_tags(p, trial, run_name, slot.device, params, (splits_path, patches_dir), job)
        run_id = tracking.open_trial_run(c, search, run_name or trial, p.flat(), tags, _source_run(job))
        meta = CheckpointMeta.from_dict(data | {
            "experiment": experiment, "trial": trial, "mlflow_run_id": run_id, "task": task,
            "fold": fold, "data_hash": tags["data_hash"]}, str(out))
        log.info("%s/%s on %s: %s, %d steps/epoch, %d train / %d val subjects", experiment,
                 trial, slot.device, p.network.name, steps, len(train), len(val))
        try:
            result = fit(model, loss, batches, steps, validate, p, metric, out, device, meta,
                         _epoch_logger(c, run_id, metric), job.stop_at, job.resume_from)
        except BaseException:
            tracking.finish_run(c, run_id, status="FAILED")
            raise
    _finish_run(c, run_id, result, metric, out)
    log.info("%s/%s: best %s=%.4f at epoch %d (%d epochs run)", experiment, trial, metric,
             result.best.get(metric, math.nan), result.best_epoch, len(result.history))
    return result


def _source_run(job: RungJob) -> str | None:
    """A promoted trial's MLflow run (its previous rung's checkpoint says which): it continues there."""
    path = None if job.resume_from is None else Path(job.resume_from) / CHECKPOINT
    if path is None or not path.is_file():
        return None
    return load_checkpoint(path).meta.mlflow_run_id or None


def _fold(splits_path: str | Path, params: dict[str, Any]) -> tuple[int, list[str], list[str]]:
    """The experiment's fold of the split (:func:`~mripipe.learn.folds.search_fold`): its index,
    train and val subjects."""
    splits = load_splits(splits_path, role="train")
    fold = search_fold(params)
    if not 0 <= fold < len(splits["folds"]):
        raise InputError(f"{splits_path}: fold {fold} requested, {len(splits['folds'])} available")
    return fold, list(splits["folds"][fold]["train"]), list(splits["folds"][fold]["val"])


def _loss_and_validator(
    p: TrialParams, val_input: Any, data: dict[str, Any], device: torch.device
) -> tuple[nn.Module, Callable[[nn.Module], dict[str, float]]]:
    """The trial's loss on ``device`` and its validation function (see :func:`_data`)."""
    tr = p.training
    if isinstance(tr, SegmentationTraining):
        loss = make_loss(p).to(device)
        validate = segmentation_validator(val_input, loss, data["roi_size"], tr.sw_batch_size,
                                          float(tr.sw_overlap), tr.amp, data["class_names"][1:])
    else:
        val_batches, weights = val_input
        loss = make_loss(p, weights).to(device)
        validate = classification_validator(val_batches, loss, tr.amp)
    return loss, validate


def _run_tags(
    p: TrialParams, trial: str, run_name: str | None, device: str, params: dict[str, Any],
    data: tuple[str | Path, str | Path], job: RungJob,
) -> dict[str, str]:
    """MLflow tags of a trial run: its name (``run_name``, else the trial, rung and searched
    values: :func:`~mripipe.learn.search.trial_label`), task, device, config and data hashes
    (``data``: the splits file and the patches folder), rung, git commit."""
    space = (params.get("search") or {}).get("space") or {}
    tags = {
        "mlflow.runName": run_name or trial_label(trial, job.rung, p.flat(), space),
        "task": p.task,
        "device": device,
        "config_hash": tracking.config_hash(params),
        "data_hash": tracking.data_hash([data[0], Path(data[1]) / "index.tsv"]),
        "rung": str(job.rung),
    }
    if job.stop_at is not None:
        tags["rung_budget"] = str(job.stop_at)
    commit = tracking.git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _epoch_logger(c: Any, run_id: str, metric: str) -> Callable[[dict[str, float]], None]:
    """``fit``'s ``on_epoch``: log a history row to the trial's MLflow run at step ``epoch``,
    the selection ``metric`` first and then the losses, so that MLflow's compare page plots
    ``metric`` (the first metric key a run logged). Epoch 1 logs ``metric`` even unmeasured
    (NaN, as MLflow stores it) when validation is not due yet (``val_every`` > 1)."""

    def on_epoch(row: dict[str, float]) -> None:
        step = int(row["epoch"])
        first = [metric, "val_loss", "train_loss"]
        ordered = {k: row[k] for k in first if k in row} | {
            k: v for k, v in row.items() if k not in first and k != "epoch"}
        tracking.log_epoch(c, run_id, ordered, step, keep_nan=(metric,) if step == 1 else ())

    return on_epoch


def _finish_run(c: Any, run_id: str, result: FitResult, metric: str, out: Path) -> None:
    """history.png, the best metrics logged and the trial's files attached; the run finished."""
    plot_history(result.history, metric, out / "history.png")
    best = {f"best_{k}": v for k, v in result.best.items() if not math.isnan(v)}
    tracking.log_epoch(c, run_id, best | {"best_epoch": float(result.best_epoch)}, result.best_epoch)
    tracking.finish_run(c, run_id, [out / "params.json", out / "history.png",
                                    out / "history.tsv", out / "val_metrics.json"])


def train_job(
    experiment: str, patches: Path, splits: Path, preprocessed: Path, manifest: Path, search: Path,
    seed: int, params: dict[str, Any], out_dir: Path, *, trial: str | None = None,
    promote: Path | None = None, slot: int = 0, choice: Path | None = None, fold: int | None = None,
    budget: int | None = None, threads: int = 1, lock_dir: Path = Path(".mripipe/gpu-locks"),
    per_device: int = 1, loader_workers: int = 0,
) -> FitResult:
    """``mripipe train``: :func:`train_trial` of one of three jobs, given by exactly one of
    ``trial`` (a trial of the search, stopping at ``budget``), ``promote`` (the rung file whose
    survivor in ``slot`` continues to ``budget``; :func:`~mripipe.learn.halving.promoted`) or
    ``choice`` (``choice.json``: the chosen trial trained on ``fold``; :mod:`mripipe.learn.folds`).
    The other arguments are :func:`train_trial`'s (``per_device``: trials sharing one GPU).
    """
    job, name = RungJob(stop_at=budget), None
    if promote:
        trial, job = promoted(promote, slot, budget)
    if choice:
        from mripipe.learn.folds import fold_job

        if fold is None:
            raise InputError("train --choice needs --fold")
        trial, params, name = fold_job(choice, params, fold)
    if trial is None:
        raise InputError("train needs a trial, a rung file to promote from or a choice")
    return train_trial(
        experiment, trial, patches, splits, preprocessed, manifest, search, seed, params, out_dir,
        threads, lock_dir=lock_dir, per_device=per_device, job=job, run_name=name,
        loader_workers=loader_workers,
    )

"""The training loop: optimiser, warm-up + decay schedule, AMP, early stopping, checkpoints and
exact resumption from ``last.pt``.

``fit`` knows nothing about files other than its output folder: data come from a callable
returning the batches of an epoch and validation from a callable scoring the model, so unit
tests drive it with small synthetic tensors.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from mripipe.core.errors import InputError
from mripipe.core.utils import atomic_path, interactive, write_json
from mripipe.learn.checkpoint import (
    CHECKPOINT,
    RESUME,
    Checkpoint,
    CheckpointMeta,
    ResumeState,
    save,
)
from mripipe.learn.networks import autocast
from mripipe.learn.resume import resume_state, rng_state, set_rng_state
from mripipe.learn.trial_params import OptimizerParams, TrainingParams, TrialParams

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        history: one row per epoch (``epoch``, ``train_loss``, ``val_loss``, metric, ``lr``).
        best_epoch: 1-based epoch of the best validation metric.
        best: validation metrics of the best epoch.
        resumed_from: completed epochs found in ``last.pt`` (0 for a fresh start).
        stopped_early: early stopping ended the run before ``epochs``.
    """

    history: list[dict[str, float]]
    best_epoch: int
    best: dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0
    stopped_early: bool = False


def make_optimizer(model: nn.Module, opt: OptimizerParams) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD with (Nesterov) momentum from the trial's ``optimizer`` group."""
    name, lr, wd = opt.name, float(opt.lr), float(opt.weight_decay)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    if name == "sgd":
        momentum = float(opt.momentum)
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=wd, nesterov=momentum > 0
        )
    raise InputError(f"unknown optimizer {name!r}; expected adam, adamw or sgd")


def lr_factor(step: int, total: int, warmup: int, kind: str, power: float, floor: float) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based).

    Linear warm-up from ``1/warmup`` to 1 over ``warmup`` steps, then cosine or polynomial
    decay from 1 to ``floor`` at ``total`` steps (``constant`` keeps 1).
    """
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "poly":
        return floor + (1.0 - floor) * (1.0 - progress) ** power
    raise InputError(f"unknown scheduler {kind!r}; expected cosine, poly or constant")


def make_scheduler(
    optimizer: torch.optim.Optimizer, training: TrainingParams, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + decay schedule from the trial's ``training`` group."""
    total = training.epochs * steps_per_epoch
    warmup = training.warmup_epochs * steps_per_epoch
    kind, power = training.scheduler, float(training.poly_power)
    floor = float(training.min_lr_ratio)
    lr_factor(warmup, total, warmup, kind, power, floor)  # fail early on a bad scheduler name

    def factor(step: int) -> float:
        return lr_factor(step, total, warmup, kind, power, floor)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's and Python's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def write_history(rows: list[dict[str, float]], path: Path) -> None:
    """history.tsv, atomically; floats as Python's shortest exact repr (exact round trip)."""
    table = pd.DataFrame(rows)
    table["epoch"] = table["epoch"].astype(int)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


def train_step(
    model: nn.Module,
    batch: Batch,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp: bool,
) -> torch.Tensor:
    """One optimiser step on a batch (moved to ``device`` without blocking); AMP on CUDA.

    Returns:
        The detached loss on ``device`` (no host synchronisation).
    """
    x = batch["image"].to(device, non_blocking=True)
    y = batch["label"].to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        logits = model(x)
    loss = loss_fn(logits.float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@dataclass
class _Loop:
    """What one :func:`fit` call trains with (fixed for the run)."""

    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool
    params: TrialParams
    metric: str
    meta: CheckpointMeta
    out_dir: Path
    stop: int  # the epoch this call stops at (a rung's budget; ``training.epochs`` by default)


@dataclass
class _Progress:
    """Where a run stands after each epoch (what ``last.pt`` saves and restores)."""

    best_state: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    epoch: int = 0
    best_epoch: int = 0
    best_value: float = -math.inf
    best: dict[str, float] = field(default_factory=dict)
    done: bool = False


def fit(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_batches: Callable[[int], Iterable[Batch]],
    steps_per_epoch: int,
    validate: Callable[[nn.Module], dict[str, float]],
    params: TrialParams,
    metric: str,
    out_dir: str | Path,
    device: torch.device,
    meta: CheckpointMeta,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    stop_at: int | None = None,
    resume_from: str | Path | None = None,
) -> FitResult:
    """Train with early stopping; write ``last.pt``, ``checkpoint.pt``, ``history.tsv`` and
    ``val_metrics.json`` into ``out_dir``; resume from ``last.pt`` when it matches ``params``.

    The schedule always spans ``training.epochs``; ``stop_at`` ends this call earlier (a rung of
    successive halving, validated at that epoch) and ``resume_from`` continues another folder's
    ``last.pt`` (a promoted trial, see :func:`mripipe.learn.resume.resume_state`), so a run cut
    into rungs equals the uninterrupted one.

    Args:
        model: the network, already initialised (seeded) and on ``device``.
        loss_fn: ``(logits, label) -> scalar`` loss.
        train_batches: epoch (0-based) -> iterable of ``{"image": (B, C, X, Y, Z), "label": ...}``;
            at most ``steps_per_epoch`` batches are taken.
        steps_per_epoch: optimiser steps per epoch.
        validate: model (eval mode) -> ``{"val_loss": float, metric: float, ...}``.
        params: the trial's parameters (``optimizer``, ``training`` are used; all are saved).
        metric: validation metric to maximise (e.g. ``val_dice``).
        out_dir: the trial folder.
        device: training device; CUDA enables AMP when ``training.amp``.
        meta: the other checkpoint entries (task, in_channels, n_classes, roi_size, ...).
        on_epoch: called with each history row (e.g. MLflow logging).
        stop_at: the epoch (1..``training.epochs``) to stop at; None = ``training.epochs``.
        resume_from: the folder whose ``last.pt`` this run continues (its parameters must match).

    Returns:
        A :class:`FitResult`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tr = params.training
    epochs = tr.epochs
    stop = epochs if stop_at is None else int(stop_at)
    if not 1 <= stop <= epochs:
        raise InputError(f"{out_dir}: stop at epoch {stop}, outside 1..training.epochs {epochs}")
    amp = tr.amp and device.type == "cuda"
    optimizer = make_optimizer(model, params.optimizer)
    scheduler = make_scheduler(optimizer, tr, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loop = _Loop(model, loss_fn, optimizer, scheduler, scaler, device, amp, params, metric,
                 meta, out_dir, stop)
    progress = _Progress(best_state=_cpu_state(model))
    _resume(loop, progress, epochs, None if resume_from is None else Path(resume_from))
    resumed_from = progress.epoch

    while not progress.done and progress.epoch < stop:
        t0 = time.perf_counter()
        row = _train_epoch(loop, train_batches, steps_per_epoch, progress.epoch, epochs)
        _validate_epoch(loop, validate, row, progress)
        progress.history.append(row)
        progress.epoch += 1
        progress.done = progress.done or progress.epoch >= epochs
        if on_epoch is not None:  # before last.pt: a resumed epoch re-logs identical values
            on_epoch(row | {"epoch_time_s": time.perf_counter() - t0})
        _save_last(loop, progress)
        write_history(progress.history, out_dir / "history.tsv")
        log.info("epoch %d/%d train_loss=%.4f val_loss=%.4f %s=%.4f lr=%.2e (%.1f s)",
                 progress.epoch, epochs, row["train_loss"], row["val_loss"], metric, row[metric],
                 row["lr"], time.perf_counter() - t0)
    return _finish(loop, progress, resumed_from, epochs)


def _resume(loop: _Loop, progress: _Progress, epochs: int, source: Path | None) -> None:
    """Restore ``loop`` and ``progress`` from the ``last.pt`` this run continues, if any."""
    found = resume_state(loop.out_dir, loop.params, loop.meta, loop.stop, source)
    if found is None:
        return
    state, path = found
    loop.model.load_state_dict(state.model)
    loop.optimizer.load_state_dict(state.optimizer)
    loop.scheduler.load_state_dict(state.scheduler)
    loop.scaler.load_state_dict(state.scaler)
    set_rng_state(state.rng)
    progress.epoch, progress.history = state.epoch, list(state.history)
    progress.best_epoch, progress.best_value = state.best_epoch, state.best_value
    progress.best, progress.best_state = dict(state.best), state.best_model
    progress.done = state.done
    log.info("%s: resuming at epoch %d/%d from %s", loop.out_dir.name, progress.epoch + 1,
             epochs, path)
    if path.parent != loop.out_dir:  # a promoted trial: its own resume point from the start
        _save_last(loop, progress)


def _train_epoch(
    loop: _Loop,
    train_batches: Callable[[int], Iterable[Batch]],
    steps_per_epoch: int,
    epoch: int,
    epochs: int,
) -> dict[str, float]:
    """One epoch of optimiser steps; its history row (validation entries still NaN)."""
    loop.model.train()
    total = torch.zeros((), device=loop.device)
    n = 0
    bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
               disable=not interactive())
    for batch in train_batches(epoch):
        total += train_step(loop.model, batch, loop.loss_fn, loop.optimizer, loop.scaler,
                            loop.device, loop.amp)
        loop.scheduler.step()
        n += 1
        bar.update()
        if n >= steps_per_epoch:
            break
    bar.close()
    if n == 0:
        raise InputError(f"{loop.out_dir}: the training loader yielded no batch")
    return {
        "epoch": float(epoch + 1),
        "train_loss": float(total.item()) / n,
        "val_loss": math.nan,
        loop.metric: math.nan,
        "lr": float(loop.optimizer.param_groups[0]["lr"]),
    }


def _validate_epoch(
    loop: _Loop,
    validate: Callable[[nn.Module], dict[str, float]],
    row: dict[str, float],
    progress: _Progress,
) -> None:
    """Validate when due (fills ``row``); keep the best weights in ``checkpoint.pt``; early stop."""
    tr, epoch, metric = loop.params.training, progress.epoch, loop.metric
    last_epoch = epoch + 1 in (tr.epochs, loop.stop)  # a rung ranks on its last epoch
    if not ((epoch + 1) % max(1, tr.val_every) == 0 or last_epoch):
        return
    loop.model.eval()
    scores = validate(loop.model)
    row["val_loss"], row[metric] = float(scores["val_loss"]), float(scores[metric])
    row |= {k: float(scores[k]) for k in per_class_keys(loop.meta, metric) if k in scores}
    if row[metric] > progress.best_value:
        progress.best_value, progress.best_epoch, progress.best = row[metric], epoch + 1, dict(scores)
        progress.best_state = _cpu_state(loop.model)
        save(Checkpoint(progress.best_state, loop.params, progress.best_epoch, metric,
                        progress.best_value, loop.meta), loop.out_dir / CHECKPOINT)
    elif epoch + 1 - progress.best_epoch >= tr.patience:
        progress.done = True
        log.info("early stopping at epoch %d (best %s=%.4f at epoch %d)",
                 epoch + 1, metric, progress.best_value, progress.best_epoch)


def per_class_keys(meta: CheckpointMeta, metric: str) -> list[str]:
    """Multi-class segmentation (K + 1 > 2 outputs): the per-class scores the history also
    records, ``<metric>_<class name>``; none otherwise."""
    names = list(meta.class_names)
    if meta.task != "segmentation" or len(names) <= 2:
        return []
    return [f"{metric}_{n}" for n in names[1:]]


def _save_last(loop: _Loop, progress: _Progress) -> None:
    """``last.pt``: everything an exact resumption needs, written after each epoch."""
    save(ResumeState(
        model=_cpu_state(loop.model), optimizer=loop.optimizer.state_dict(),
        scheduler=loop.scheduler.state_dict(), scaler=loop.scaler.state_dict(),
        rng=rng_state(), epoch=progress.epoch, history=progress.history,
        params=loop.params, best_epoch=progress.best_epoch,
        best_value=progress.best_value, best=progress.best,
        best_model=progress.best_state, done=progress.done, meta=loop.meta,
    ), loop.out_dir / RESUME)


def _finish(loop: _Loop, progress: _Progress, resumed_from: int, epochs: int) -> FitResult:
    """Final checkpoint.pt, history.tsv and val_metrics.json; the :class:`FitResult`."""
    history, metric, out_dir = progress.history, loop.metric, loop.out_dir
    best_epoch, best_state, best = progress.best_epoch, progress.best_state, progress.best
    if best_epoch == 0:  # never validated a finite metric: keep the last weights
        log.warning("%s: no finite %s; checkpoint.pt holds the last epoch", out_dir, metric)
        best_epoch, best_state = len(history), _cpu_state(loop.model)
        best = {metric: math.nan}
    # Rewritten at the end too: Snakemake deletes outputs of a failed attempt, last.pt survives.
    save(Checkpoint(best_state, loop.params, best_epoch, metric, float(best.get(metric, math.nan)),
                    loop.meta), out_dir / CHECKPOINT)
    write_history(history, out_dir / "history.tsv")
    write_json(out_dir / "val_metrics.json",
               {**{k: float(v) for k, v in best.items()}, "epoch": best_epoch,
                "epochs_run": len(history)})
    return FitResult(history, best_epoch, best, resumed_from, progress.done and len(history) < epochs)


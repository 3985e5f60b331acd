"""Seeded random search: resolve a trial's full parameters from the experiment config.

An experiment config (one entry of ``experiments:``) names its task, the defaults of each
parameter group (``network``, ``loss``, ``optimizer``, ``training``) and a search space::

    search:
      n_trials: 4
      seed: 1
      metric: val_dice
      space:
        optimizer.lr: {loguniform: [3.0e-4, 3.0e-3]}
        network.name: {choice: [unet, segresnet, basicunet]}

Each sampled parameter draws from its own generator seeded by
``derive_seed(search seed, "search", trial index, parameter name)``, so trial i's parameters
depend only on (seed, i): adding trials (or parameters) never changes earlier draws, and the
whole search replays from the config.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import rng

log = logging.getLogger(__name__)

GROUPS = ("network", "loss", "optimizer", "training")
KINDS = ("choice", "uniform", "loguniform", "int")
TASKS = ("segmentation", "classification")


METRICS = {
    "segmentation": ("val_dice",),
    "classification": ("val_balanced_accuracy", "val_accuracy"),
}

def default_params(task: str) -> dict[str, Any]:
    """The built-in defaults of every trial parameter for a task (a fresh nested dict).

    They are sized for the laptop budget (one default trial in about a minute on one CPU core).

    Args:
        task: ``segmentation`` or ``classification``.

    Returns:
        ``{"network": {...}, "loss": {...}, "optimizer": {...}, "training": {...}}``.
    """
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; expected one of {TASKS}")
    optimizer = {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "momentum": 0.9}
    training: dict[str, Any] = {
        "epochs": 10,
        "patience": 4,
        "warmup_epochs": 1,
        "scheduler": "cosine",
        "poly_power": 0.9,
        "min_lr_ratio": 0.01,
        "batch_size": 4,
        "batches_per_epoch": 12,
        "val_every": 2,
        "augment": 1.0,
        "amp": True,
    }
    if task == "segmentation":
        network: dict[str, Any] = {"name": "unet", "channels": [8, 16, 32], "dropout": 0.0}
        loss: dict[str, Any] = {"name": "dice_ce"}
        training.update({"sw_batch_size": 4, "sw_overlap": 0.25, "val_max_scans": 0})
    else:
        network = {"name": "densenet", "width": 8, "depth": 2, "dropout": 0.0}
        loss = {"name": "cross_entropy", "label_smoothing": 0.0}
    return {"network": network, "loss": loss, "optimizer": optimizer, "training": training}


def validate_space(space: dict[str, Any]) -> None:
    """Check a search space; raise ``ValueError`` naming the bad entry.

    Args:
        space: ``{"group.key": {"choice": [...]} | {"uniform": [lo, hi]} |
            {"loguniform": [lo, hi]} | {"int": [lo, hi]}}``.
    """
    for name, spec in space.items():
        if "." not in name or name.split(".", 1)[0] not in GROUPS:
            raise InputError(f"search space: {name!r} must be '<group>.<key>' with group in {GROUPS}")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise InputError(f"search space: {name!r} must be one of {KINDS}, got {spec!r}")
        kind, arg = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(arg, list) or not arg:
                raise InputError(f"search space: {name!r} choice needs a non-empty list")
            continue
        if not isinstance(arg, list) or len(arg) != 2 or not arg[0] <= arg[1]:
            raise InputError(f"search space: {name!r} {kind} needs [low, high] with low <= high")
        if kind == "loguniform" and arg[0] <= 0:
            raise InputError(f"search space: {name!r} loguniform needs low > 0")


def sample_value(spec: dict[str, Any], seed: int, index: int, name: str) -> Any:
    """Draw one parameter value; depends only on (seed, index, name).

    Args:
        spec: one space entry, e.g. ``{"loguniform": [1e-4, 1e-2]}``.
        seed: search seed.
        index: trial index.
        name: parameter name (part of the seed, so parameters draw independently).

    Returns:
        The value: an element of the choice list, a float, or an int in ``[lo, hi]``.
    """
    gen = rng(seed, "search", index, name)
    kind, arg = next(iter(spec.items()))
    if kind == "choice":
        return copy.deepcopy(arg[int(gen.integers(len(arg)))])
    lo, hi = arg
    if kind == "uniform":
        return float(gen.uniform(lo, hi))
    if kind == "loguniform":
        return float(math.exp(gen.uniform(math.log(lo), math.log(hi))))
    return int(gen.integers(int(lo), int(hi) + 1))


def sample_trial(space: dict[str, Any], seed: int, index: int) -> dict[str, Any]:
    """Sample every parameter of the space for trial ``index`` (flat, dotted names)."""
    validate_space(space)
    return {name: sample_value(spec, seed, index, name) for name, spec in sorted(space.items())}


def trial_index(trial: str) -> int:
    """``"trial-007"`` -> 7; raise ``ValueError`` for any other name."""
    match = re.fullmatch(r"trial-(\d+)", trial)
    if not match:
        raise InputError(f"trial name {trial!r} must look like 'trial-000'")
    return int(match.group(1))


def _merge(base: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in out:
            raise InputError(f"{where}: unknown parameter {key!r} (known: {sorted(out)})")
        out[key] = copy.deepcopy(value)
    return out


def resolve_params(experiment: dict[str, Any], index: int) -> dict[str, Any]:
    """The full resolved parameters of trial ``index`` of an experiment.

    Defaults, then the experiment's own group settings, then the sampled values. Every trial of
    an experiment has exactly the same parameter names.

    Args:
        experiment: the experiment's config section (``task``, groups, ``search``).
        index: trial index (>= 0).

    Returns:
        ``{"task", "trial_index", "network", "loss", "optimizer", "training"}`` (nested).
    """
    task = experiment.get("task", "segmentation")
    params: dict[str, Any] = default_params(task)
    for group in GROUPS:
        params[group] = _merge(params[group], experiment.get(group) or {}, f"experiments.{group}")
    search = experiment.get("search") or {}
    sampled = sample_trial(search.get("space") or {}, int(search.get("seed", 0)), index)
    for name, value in sampled.items():
        group, key = name.split(".", 1)
        params[group] = _merge(params[group], {key: value}, f"search space {name}")
    return {"task": task, "trial_index": index, **params}


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params -> ``{"optimizer.lr": 0.001, ...}`` (lists kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def default_metric(task: str) -> str:
    """The selection metric of a task when the config names none."""
    return METRICS[task][0]


def search_metric(params: dict[str, Any]) -> str:
    """The validation metric to maximise: ``search.metric``, else the task's default.

    Raises:
        InputError: the metric is not one the experiment's task produces.
    """
    task = str(params.get("task", "segmentation"))
    if task not in METRICS:
        raise InputError(f"unknown task {task!r}; expected one of {TASKS}")
    metric = str((params.get("search") or {}).get("metric") or default_metric(task))
    if metric not in METRICS[task]:
        raise InputError(f"search.metric {metric!r} is not produced by {task}; use {METRICS[task]}")
    return metric

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
from collections.abc import Mapping
from typing import Any

from mripipe.core.config import schema
from mripipe.core.errors import InputError
from mripipe.core.utils import rng
from mripipe.learn.trial_params import GROUPS, TASKS, TrialParams, check_task, default_groups

log = logging.getLogger(__name__)

KINDS = ("choice", "uniform", "loguniform", "int")

#: the searched keys a trial's run name shows first (then the rest of the space, in its order)
LABEL_KEYS = ("optimizer.lr", "network.name", "network.channels", "network.width", "loss.name")
#: how many searched values a run name shows
LABEL_VALUES = 4

METRICS = {
    "segmentation": ("val_dice",),
    "classification": ("val_balanced_accuracy", "val_accuracy"),
}

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


def experiment_task(experiment: Mapping[str, Any]) -> str:
    """The ``task`` of an experiment's config section (required, one of :data:`TASKS`)."""
    if "task" not in experiment:
        raise InputError(f"experiment without a task (one of {TASKS}): {dict(experiment)!r}")
    return check_task(experiment["task"])


def search_setting(experiment: Mapping[str, Any], key: str) -> int:
    """``search.<key>`` of an experiment, or the schema's default when a direct caller left it out."""
    search = experiment.get("search") or {}
    if key in search:
        return int(search[key])
    node = schema()["properties"]["experiments"]["additionalProperties"]["properties"]["search"]
    return int(node["properties"][key]["default"])


def resolve_params(experiment: Mapping[str, Any], index: int) -> TrialParams:
    """The full resolved parameters of trial ``index`` of an experiment.

    The task's defaults (:func:`mripipe.learn.trial_params.default_groups`), then the
    experiment's own group settings, then the sampled values. Every trial of an experiment has
    exactly the same parameter names.

    Args:
        experiment: the experiment's config section (``task``, groups, ``search``).
        index: trial index (>= 0).

    Returns:
        The :class:`~mripipe.learn.trial_params.TrialParams` (``params.json``: its ``to_dict()``).
    """
    task = experiment_task(experiment)
    groups = default_groups(task)
    for group in GROUPS:
        groups[group] = _merge(groups[group], experiment.get(group) or {}, f"experiments.{group}")
    space = (experiment.get("search") or {}).get("space") or {}
    sampled = sample_trial(space, search_setting(experiment, "seed"), index)
    for name, value in sampled.items():
        group, key = name.split(".", 1)
        groups[group] = _merge(groups[group], {key: value}, f"search space {name}")
    return TrialParams.from_dict({"task": task, "trial_index": index, **groups})


def default_metric(task: str) -> str:
    """The selection metric of a task when the config names none."""
    return METRICS[task][0]


def search_metric(params: Mapping[str, Any]) -> str:
    """The validation metric to maximise of an experiment (its config section): ``search.metric``,
    else the task's default.

    Raises:
        InputError: no task, or a metric the experiment's task does not produce.
    """
    task = experiment_task(params)
    metric = str((params.get("search") or {}).get("metric") or default_metric(task))
    if metric not in METRICS[task]:
        raise InputError(f"search.metric {metric!r} is not produced by {task}; use {METRICS[task]}")
    return metric


def trial_label(trial: str, rung: int, values: Mapping[str, Any], space: Mapping[str, Any]) -> str:
    """A trial's MLflow run name: the trial, its rung and its key searched values, so that the
    runs table reads without opening a run, e.g.
    ``trial-003 r1 lr=0.0021 channels=16-32-64 loss=dice_focal optimizer=adam``.

    Args:
        trial: ``trial-003``.
        rung: its rung of successive halving (0 in a plain random search).
        values: the trial's flat parameters (:meth:`TrialParams.flat`).
        space: the search space; its keys in :data:`LABEL_KEYS` first, :data:`LABEL_VALUES` at most.
    """
    keys = [k for k in LABEL_KEYS if k in space] + [k for k in space if k not in LABEL_KEYS]
    parts = [f"{_label_key(k)}={_label_value(values[k])}" for k in keys if k in values]
    return " ".join([trial, f"r{rung}", *parts[:LABEL_VALUES]])


def _label_key(name: str) -> str:
    """``loss.name`` -> ``loss``, ``optimizer.lr`` -> ``lr``."""
    group, key = name.split(".", 1)
    return group if key == "name" else key


def _label_value(value: Any) -> str:
    """Two significant digits for reals, ``16-32-64`` for lists."""
    if isinstance(value, list | tuple):
        return "-".join(_label_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:.2g}"
    return str(value)

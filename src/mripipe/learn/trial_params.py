"""A trial's parameters: the typed, frozen form of its ``params.json``.

A trial trains with four parameter groups, ``network``, ``loss``, ``optimizer`` and ``training``.
:class:`TrialParams` holds them resolved (:func:`mripipe.learn.search.resolve_params`): each group
is a frozen dataclass whose fields are the group's keys in ``params.json``, in the file's order.
The task picks the classes of three groups: a segmentation trial has a
:class:`SegmentationNetwork` (``channels``), a :class:`SegmentationLoss` and
:class:`SegmentationTraining` (the sliding-window validation keys); a classification trial a
:class:`ClassificationNetwork` (``width``, ``depth``), a :class:`ClassificationLoss`
(``label_smoothing``) and plain :class:`TrainingParams`.

``to_dict`` writes ``params.json``, the MLflow parameters (:meth:`TrialParams.flat`), the
checkpoints' ``params`` and the model package's ``model.json`` ``params``; ``from_dict`` reads
them back, refusing a missing or unknown key and a value of the wrong type. Values are kept as
given (an integer where a float is expected stays an integer), so the JSON round trip is exact.

:func:`default_groups` is the one place the defaults are built: the schema's defaults of the
experiment's ``optimizer`` and ``training`` keys (what Snakemake fills into the config) and, for
the keys whose default depends on the task (the schema documents them but cannot default them),
:data:`BY_TASK`. This module stays light (no torch): the workflow imports it through
:mod:`mripipe.learn.halving` when the DAG is parsed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, Self, get_args, get_origin, get_type_hints

from mripipe.core.config import with_defaults
from mripipe.core.errors import InputError

TASKS = ("segmentation", "classification")
GROUPS = ("network", "loss", "optimizer", "training")

#: Defaults that depend on the task: the schema documents them ("Default ...") without a
#: ``default``, since one value cannot serve both tasks. Every other default is the schema's.
BY_TASK: dict[str, dict[str, dict[str, Any]]] = {
    "segmentation": {
        "network": {"name": "unet", "channels": [8, 16, 32], "dropout": 0.0},
        "loss": {"name": "dice_ce"},
        "optimizer": {},
        "training": {"sw_batch_size": 4, "sw_overlap": 0.25, "val_max_scans": 0},
    },
    "classification": {
        "network": {"name": "densenet", "width": 8, "depth": 2, "dropout": 0.0},
        "loss": {"name": "cross_entropy", "label_smoothing": 0.0},
        "optimizer": {},
        "training": {},
    },
}


def check_task(task: Any) -> str:
    """``task`` if it is one of :data:`TASKS`; else raise :class:`InputError`."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; expected one of {TASKS}")
    return str(task)


@cache
def _schema_groups(task: str) -> dict[str, dict[str, Any]]:
    filled = with_defaults("experiments", {"_": {"task": task}})["_"]
    return {group: dict(filled[group]) for group in GROUPS}


def default_groups(task: str) -> dict[str, dict[str, Any]]:
    """The default value of every trial parameter of a task, by group (a fresh nested dict).

    They are sized for the laptop budget (one default trial in about a minute on one CPU core).

    Args:
        task: ``segmentation`` or ``classification``.

    Returns:
        ``{"network": {...}, "loss": {...}, "optimizer": {...}, "training": {...}}``: the keys
        of the task's groups, no more.
    """
    task = check_task(task)
    schema, extra = _schema_groups(task), BY_TASK[task]
    return {g: copy.deepcopy({**schema[g], **extra[g]}) for g in GROUPS}


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the field type ``hint`` (a list becomes a tuple; an integral
    float in an integer field an int; an int in a float field stays as given)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and number and float(value).is_integer():
        return int(value)
    if (hint is float and number) or (hint is str and isinstance(value, str)):
        return value
    if get_origin(hint) is tuple and isinstance(value, list | tuple):
        return tuple(_typed(v, get_args(hint)[0], f"{where}[{i}]") for i, v in enumerate(value))
    raise InputError(f"{where}: {value!r} is not a {_type_name(hint)}")


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Group:
    """Base of a parameter group: built from, and written as, its ``params.json`` object."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "params") -> Self:
        """The group of ``values``; raise :class:`InputError` on a missing or unknown key or a
        value of the wrong type (``where`` names the group in the message)."""
        if not isinstance(values, Mapping):
            raise InputError(f"{where}: expected an object, got {values!r}")
        names = [f.name for f in fields(cls)]
        unknown, missing = sorted(set(values) - set(names)), [n for n in names if n not in values]
        if unknown or missing:
            raise InputError(f"{where}: unknown parameter(s) {unknown}, missing {missing} "
                             f"(a {cls.__name__} has {names})")
        hints = get_type_hints(cls)
        return cls(**{n: _typed(values[n], hints[n], f"{where}.{n}") for n in names})

    def to_dict(self) -> dict[str, Any]:
        """The group as plain JSON values, keys in field order (tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class SegmentationNetwork(Group):
    """A segmentation network: MONAI ``unet``, ``segresnet`` or ``basicunet``, its widths per
    resolution level (each level halves the patch) and dropout."""

    name: str
    channels: tuple[int, ...]
    dropout: float


@dataclass(frozen=True)
class ClassificationNetwork(Group):
    """A classification network: ``densenet``, ``resnet`` or ``convnet``, its base width, depth
    (layers per block, blocks per stage or conv blocks) and dropout."""

    name: str
    width: int
    depth: int
    dropout: float


@dataclass(frozen=True)
class SegmentationLoss(Group):
    """The segmentation loss: ``dice_ce`` or ``dice_focal``."""

    name: str


@dataclass(frozen=True)
class ClassificationLoss(Group):
    """The classification loss: ``cross_entropy`` (class-weighted) and its label smoothing."""

    name: str
    label_smoothing: float


@dataclass(frozen=True)
class OptimizerParams(Group):
    """The optimiser: ``adam``, ``adamw`` or ``sgd``; peak learning rate, weight decay and the
    (Nesterov) momentum of SGD."""

    name: str
    lr: float
    weight_decay: float
    momentum: float


@dataclass(frozen=True)
class TrainingParams(Group):
    """The training loop: budget, early stopping, schedule, batches, validation cadence,
    augmentation strength and mixed precision (see the schema for each key)."""

    epochs: int
    patience: int
    warmup_epochs: int
    scheduler: str
    poly_power: float
    min_lr_ratio: float
    batch_size: int
    batches_per_epoch: int
    val_every: int
    augment: float
    amp: bool


@dataclass(frozen=True)
class SegmentationTraining(TrainingParams):
    """The training loop of a segmentation trial, with its sliding-window validation: windows
    per forward pass, their overlap, and the number of validation scans (0 = all)."""

    sw_batch_size: int
    sw_overlap: float
    val_max_scans: int


NetworkParams = SegmentationNetwork | ClassificationNetwork
LossParams = SegmentationLoss | ClassificationLoss

@dataclass(frozen=True)
class TrialParams:
    """The resolved parameters of one trial (``params.json``).

    Attributes:
        task: ``segmentation`` or ``classification``.
        trial_index: the trial's index in its experiment's search.
        network, loss, optimizer, training: the groups (classes by task, see the module).
    """

    task: str
    trial_index: int
    network: NetworkParams
    loss: LossParams
    optimizer: OptimizerParams
    training: TrainingParams

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> TrialParams:
        """Read ``params.json`` (or a checkpoint's or ``model.json``'s ``params``).

        Raises:
            InputError: a missing or unknown key, an unknown task or a value of the wrong type.
        """
        keys = ("task", "trial_index", *GROUPS)
        if not isinstance(params, Mapping) or set(params) != set(keys):
            got = sorted(params) if isinstance(params, Mapping) else params
            raise InputError(f"trial parameters: expected the keys {list(keys)}, got {got!r}")
        task = check_task(params["task"])
        seg = task == "segmentation"
        return cls(
            task, _typed(params["trial_index"], int, "trial_index"),
            (SegmentationNetwork if seg else ClassificationNetwork).from_dict(params["network"], "network"),
            (SegmentationLoss if seg else ClassificationLoss).from_dict(params["loss"], "loss"),
            OptimizerParams.from_dict(params["optimizer"], "optimizer"),
            (SegmentationTraining if seg else TrainingParams).from_dict(params["training"], "training"),
        )

    def to_dict(self) -> dict[str, Any]:
        """``params.json``: ``{"task", "trial_index", "network", "loss", "optimizer",
        "training"}``, each group's keys in field order."""
        return {"task": self.task, "trial_index": self.trial_index,
                **{g: getattr(self, g).to_dict() for g in GROUPS}}

    def flat(self) -> dict[str, Any]:
        """The MLflow parameters: ``{"task", "trial_index", "network.name", "optimizer.lr",
        ...}`` (lists kept as values), in ``params.json`` order."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out |= {f"{key}.{k}": v for k, v in value.items()}
            else:
                out[key] = value
        return out

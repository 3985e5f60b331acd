"""The trained weights on disk: the one owner of the fields of ``checkpoint.pt`` and ``last.pt``,
and of reading and writing them and a package's bare weight files.

``checkpoint.pt`` (a trial's best epoch, :class:`Checkpoint`) is the dict
``{"model": state_dict, "params": params.json, "epoch", "metric", "value", **meta}`` with the
entries of :class:`CheckpointMeta`: what the network needs besides its weights and where it came
from. ``last.pt`` (:class:`ResumeState`) holds everything an exact resumption needs (weights,
optimiser, schedule, scaler, random states, history, early-stopping state, the same ``params`` and
``meta`` nested). Both hold tensors and JSON values only: :func:`save` writes them atomically and
every reader loads them with ``weights_only=True`` (no pickled object is ever executed). A model
package's weight files (``model/*.pt``) are bare state dicts: :func:`save_state_dict` and
:func:`load_state_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from mripipe.core.errors import InputError
from mripipe.core.utils import atomic_path
from mripipe.learn.trial_params import TrialParams

CHECKPOINT = "checkpoint.pt"
RESUME = "last.pt"
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class CheckpointMeta:
    """What a trained network needs besides its weights, and where it came from.

    Fields are in ``checkpoint.pt``'s order; those left None (a classification model's
    ``labels``; provenance a direct caller of :func:`mripipe.learn.loop.fit` does not know) are
    not written.

    Attributes:
        in_channels: image channels C.
        n_classes: segmentation: output channels (2, or K + 1 for K classes); classification: K.
        class_names: the output channels' (classes') names, in order.
        labels: segmentation: the label map name -> value (:mod:`mripipe.core.labels`).
        roi_size: the training patch (segmentation) or volume (classification) size in voxels.
        experiment, trial, mlflow_run_id: the run that trained it.
        task: ``segmentation`` or ``classification``.
        fold: the fold of ``results/splits.json`` it trained and validated on.
        data_hash: hash of the training data (split and patch index).
    """

    in_channels: int
    n_classes: int
    class_names: tuple[str, ...]
    labels: dict[str, int] | None = None
    roi_size: tuple[int, ...]
    experiment: str | None = None
    trial: str | None = None
    mlflow_run_id: str | None = None
    task: str
    fold: int | None = None
    data_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The entries as written (lists for tuples; None left out)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out |= {"class_names": list(self.class_names), "roi_size": list(self.roi_size)}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_dict(cls, entries: Mapping[str, Any], where: str) -> CheckpointMeta:
        """Read the entries back; raise :class:`InputError` naming ``where`` on a missing one."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(entries) - names)
        required = ("in_channels", "n_classes", "class_names", "roi_size", "task")
        missing = [k for k in required if k not in entries]
        if unknown or missing:
            raise InputError(f"{where}: unknown entries {unknown}, missing {missing}")
        values = {k: v for k, v in entries.items() if v is not None}
        values |= {"in_channels": int(values["in_channels"]), "n_classes": int(values["n_classes"]),
                   "class_names": tuple(str(c) for c in values["class_names"]),
                   "roi_size": tuple(int(s) for s in values["roi_size"])}
        if "fold" in values:
            values["fold"] = int(values["fold"])
        if "labels" in values:
            values["labels"] = {str(k): int(v) for k, v in values["labels"].items()}
        return cls(**values)


@dataclass(frozen=True)
class Checkpoint:
    """``checkpoint.pt``: a trial's best weights (see the module).

    Attributes:
        model: the network's state dict.
        params: the trial's parameters.
        epoch: the 1-based epoch the weights are from.
        metric: the validation metric that chose the epoch.
        value: its value there (NaN when it never was finite).
        meta: the other entries.
    """

    model: StateDict
    params: TrialParams
    epoch: int
    metric: str
    value: float
    meta: CheckpointMeta

    def to_dict(self) -> dict[str, Any]:
        """The dict ``checkpoint.pt`` holds."""
        return {"model": self.model, "params": self.params.to_dict(), "epoch": self.epoch,
                "metric": self.metric, "value": self.value, **self.meta.to_dict()}

    @classmethod
    def from_dict(cls, entries: Mapping[str, Any], where: str) -> Checkpoint:
        """Read a loaded ``checkpoint.pt``; raise :class:`InputError` naming ``where``."""
        own = ("model", "params", "epoch", "metric", "value")
        if not isinstance(entries, Mapping) or "model" not in entries or "params" not in entries:
            raise InputError(f"{where}: not an mripipe checkpoint (needs 'model' and 'params')")
        missing = [k for k in own if k not in entries]
        if missing:
            raise InputError(f"{where}: checkpoint without {missing}")
        meta = CheckpointMeta.from_dict({k: v for k, v in entries.items() if k not in own}, where)
        return cls(dict(entries["model"]), TrialParams.from_dict(entries["params"]),
                   int(entries["epoch"]), str(entries["metric"]), float(entries["value"]), meta)


@dataclass(frozen=True)
class ResumeState:
    """``last.pt``: where a run stands after an epoch, all an exact resumption needs.

    Attributes:
        model: the current weights.
        optimizer, scheduler, scaler: their ``state_dict()``.
        rng: :func:`mripipe.learn.resume.rng_state`.
        epoch: completed epochs.
        history: one row per completed epoch.
        params: the trial's parameters.
        best_epoch, best_value, best, best_model: the best validated epoch so far, its metric
            value, its validation scores and its weights.
        done: the run has finished (budget or early stopping).
        meta: the checkpoint entries of the run.
    """

    model: StateDict
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Any]
    epoch: int
    history: list[dict[str, float]]
    params: TrialParams
    best_epoch: int
    best_value: float
    best: dict[str, float]
    best_model: StateDict
    done: bool
    meta: CheckpointMeta

    def to_dict(self) -> dict[str, Any]:
        """The dict ``last.pt`` holds."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return out | {"params": self.params.to_dict(), "meta": self.meta.to_dict()}

    @classmethod
    def from_dict(cls, entries: Mapping[str, Any], where: str) -> ResumeState:
        """Read a loaded ``last.pt``; raise :class:`InputError` naming ``where``."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in entries] if isinstance(entries, Mapping) else names
        if missing:
            raise InputError(f"{where}: not a resume state (missing {missing})")
        return cls(
            model=dict(entries["model"]), optimizer=dict(entries["optimizer"]),
            scheduler=dict(entries["scheduler"]), scaler=dict(entries["scaler"]),
            rng=dict(entries["rng"]), epoch=int(entries["epoch"]), history=list(entries["history"]),
            params=TrialParams.from_dict(entries["params"]), best_epoch=int(entries["best_epoch"]),
            best_value=float(entries["best_value"]), best=dict(entries["best"]),
            best_model=dict(entries["best_model"]), done=bool(entries["done"]),
            meta=CheckpointMeta.from_dict(entries["meta"], f"{where} meta"),
        )


def save(state: Checkpoint | ResumeState, path: str | Path) -> None:
    """Write ``checkpoint.pt`` or ``last.pt``: ``torch.save`` to a temporary name, then rename
    (a kill never leaves half a file)."""
    with atomic_path(path) as tmp:
        torch.save(state.to_dict(), tmp)


def _load(path: str | Path, map_location: str | torch.device, what: str) -> Any:
    """``torch.load(weights_only=True)``; errors name the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise InputError(f"{path}: not a readable {what} ({exc})") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a ``checkpoint.pt`` (tensors onto ``map_location``).

    Raises:
        FileNotFoundError: no such file.
        InputError: not a readable mripipe checkpoint.
    """
    return Checkpoint.from_dict(_load(path, map_location, "checkpoint"), str(path))


def load_resume(path: str | Path, map_location: str | torch.device = "cpu") -> ResumeState:
    """Read a ``last.pt`` (tensors onto ``map_location``).

    Raises:
        FileNotFoundError: no such file.
        InputError: not a readable resume state.
    """
    return ResumeState.from_dict(_load(path, map_location, "resume state"), str(path))


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """A bare state dict (CPU, contiguous tensors) as a package weight file.

    Written in place, inside the package folder that is itself written atomically: ``torch.save``
    records the file's name in it, so the final name keeps the bytes (and ``sha256``) reproducible.
    """
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, path)


def load_state_dict(path: str | Path, map_location: str | torch.device = "cpu") -> StateDict:
    """Read a package weight file (a bare state dict, ``weights_only=True``).

    Raises:
        FileNotFoundError: no such file.
        InputError: not a weights-only state dict.
    """
    state = _load(path, map_location, "weights-only state dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a weights-only state dict (a dict of tensors)")
    return state

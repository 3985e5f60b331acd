"""Tests of mripipe.learn.checkpoint: the fields of checkpoint.pt and last.pt, their round trip
through weights-only files, and a package's bare weight files."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from mripipe.core.errors import InputError
from mripipe.learn.checkpoint import (
    Checkpoint,
    CheckpointMeta,
    ResumeState,
    load_checkpoint,
    load_resume,
    load_state_dict,
    save,
    save_state_dict,
)
from mripipe.learn.loop import fit
from mripipe.learn.networks import build_model
from mripipe.learn.search import resolve_params

torch.set_num_threads(1)
SEG_META = CheckpointMeta(in_channels=2, n_classes=3, class_names=("background", "a", "b"),
                          labels={"a": 1, "b": 2}, roi_size=(16, 16, 16), experiment="e",
                          trial="trial-001", mlflow_run_id="run", task="segmentation", fold=1,
                          data_hash="abc")


def _seg_checkpoint(value: float = 0.5) -> Checkpoint:
    params = resolve_params({"task": "segmentation", "network": {"channels": [4, 8]}}, 1)
    torch.manual_seed(0)
    model = build_model(params, 2, 3)
    return Checkpoint(model.state_dict(), params, 3, "val_dice", value, SEG_META)


def test_checkpoint_round_trip_keeps_every_field_and_key_order(tmp_path: Path) -> None:
    ckpt = _seg_checkpoint()
    save(ckpt, tmp_path / "checkpoint.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert list(raw) == ["model", "params", "epoch", "metric", "value", "in_channels", "n_classes",
                         "class_names", "labels", "roi_size", "experiment", "trial", "mlflow_run_id",
                         "task", "fold", "data_hash"]
    assert raw["params"] == ckpt.params.to_dict() and raw["roi_size"] == [16, 16, 16]
    back = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (back.params, back.epoch, back.metric, back.value, back.meta) == (
        ckpt.params, 3, "val_dice", 0.5, SEG_META)
    assert all(torch.equal(back.model[k], v) for k, v in ckpt.model.items())
    # the weights load into the network its parameters build
    net = build_model(back.params, back.meta.in_channels, back.meta.n_classes)
    net.load_state_dict(back.model)


def test_classification_meta_writes_no_labels(tmp_path: Path) -> None:
    params = resolve_params({"task": "classification", "network": {"width": 4, "depth": 1}}, 0)
    meta = CheckpointMeta(in_channels=2, n_classes=3, class_names=("high", "low", "none"),
                          roi_size=(32, 32, 32), task="classification")
    save(Checkpoint(build_model(params, 2, 3).state_dict(), params, 1, "val_accuracy", math.nan, meta),
         tmp_path / "checkpoint.pt")
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert "labels" not in raw and "fold" not in raw
    back = load_checkpoint(tmp_path / "checkpoint.pt")
    assert back.meta == meta and math.isnan(back.value)


def test_bad_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing.pt")):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not an mripipe checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    raw = _seg_checkpoint().to_dict()
    del raw["roi_size"]
    torch.save(raw, tmp_path / "partial.pt")
    with pytest.raises(InputError, match=r"missing \['roi_size'\]"):
        load_checkpoint(tmp_path / "partial.pt")
    # an arbitrary pickled object is never executed: weights_only refuses it
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps(nn.Linear(1, 1), protocol=2))
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "pickle.pt")


def test_resume_state_written_by_fit_reads_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    data = [{"image": torch.randn(4, 8), "label": torch.randint(0, 2, (4,))} for _ in range(2)]
    params = resolve_params({"task": "classification", "training": {"epochs": 2, "val_every": 1}}, 0)
    meta = CheckpointMeta(in_channels=8, n_classes=2, class_names=("a", "b"), roi_size=(8,),
                          task="classification", trial="trial-000")
    scores = iter([0.3, 0.7])
    fit(model, nn.CrossEntropyLoss(), lambda epoch: data, 2,
        lambda m: {"val_loss": 0.0, "acc": next(scores)}, params, "acc", tmp_path, torch.device("cpu"), meta)
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert list(raw) == ["model", "optimizer", "scheduler", "scaler", "rng", "epoch", "history", "params",
                         "best_epoch", "best_value", "best", "best_model", "done", "meta"]
    state = load_resume(tmp_path / "last.pt")
    assert isinstance(state, ResumeState)
    assert (state.epoch, state.best_epoch, state.best_value, state.done) == (2, 2, 0.7, True)
    assert state.params == params and state.meta == meta
    assert [row["acc"] for row in state.history] == [0.3, 0.7]
    assert all(torch.equal(state.model[k], v) for k, v in model.state_dict().items())
    best = load_checkpoint(tmp_path / "checkpoint.pt")
    assert best.epoch == 2 and best.value == 0.7 and best.meta == meta
    with pytest.raises(InputError, match="not a resume state"):
        load_resume(tmp_path / "checkpoint.pt")


def test_package_weight_files(tmp_path: Path) -> None:
    ckpt = _seg_checkpoint()
    save_state_dict(ckpt.model, tmp_path / "weights.pt")
    first = (tmp_path / "weights.pt").read_bytes()
    save_state_dict(ckpt.model, tmp_path / "weights.pt")
    assert (tmp_path / "weights.pt").read_bytes() == first  # reproducible: the sha256 is stable
    state = load_state_dict(tmp_path / "weights.pt")
    assert list(state) == list(ckpt.model) and all(torch.equal(state[k], ckpt.model[k]) for k in state)
    torch.save({"model": ckpt.model}, tmp_path / "nested.pt")
    with pytest.raises(InputError, match="not a weights-only state dict"):
        load_state_dict(tmp_path / "nested.pt")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_state_dict(tmp_path / "nothing.pt")

"""Tests of mripipe.learn.train / trainer / validation on a tiny real cohort (real split, patches and
loader): CPU determinism, resumption after SIGKILL, the schedule, early stopping and the metrics."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from test_trial_params import GOLDEN_SEG
from torch import nn

from mripipe.core.imageio import from_array, write_image
from mripipe.core.utils import write_json
from mripipe.learn.checkpoint import CheckpointMeta, load_resume
from mripipe.learn.loop import fit, lr_factor
from mripipe.learn.monitor import ValScan, classification_validator, segmentation_validator
from mripipe.learn.networks import load_trained
from mripipe.learn.patches import extract_patches
from mripipe.learn.search import resolve_params
from mripipe.learn.split import make_splits
from mripipe.learn.train import train_trial
from mripipe.track.search_init import search_init
from mripipe.track.tracking import client

torch.set_num_threads(1)

SHAPE = (24, 28, 24)
SEED = 42
SEG: dict[str, Any] = {
    "task": "segmentation",
    "network": {"channels": [4, 8]},
    "training": {"epochs": 6, "batches_per_epoch": 3, "val_every": 1, "batch_size": 2, "patience": 6},
    "search": {"n_trials": 2, "seed": 1, "metric": "val_dice",
               "space": {"optimizer.lr": {"loguniform": [1e-3, 1e-2]}}},
}
#: What fit saves with the toy model of the tests below (8 inputs, 2 classes).
TOY_META = CheckpointMeta(in_channels=8, n_classes=2, class_names=("a", "b"), roi_size=(8,),
                          task="classification")
CLS: dict[str, Any] = {
    "task": "classification",
    "network": {"width": 4, "depth": 1},
    "training": {"epochs": 2, "batches_per_epoch": 2, "val_every": 1, "batch_size": 2},
    "search": {"n_trials": 1, "seed": 2, "metric": "val_balanced_accuracy",
               "space": {"network.name": {"choice": ["densenet", "resnet"]}}},
}


def write_scan(folder: Path, seed: int, n_lesions: int) -> None:
    """2-channel ellipsoid brain with ``n_lesions`` bright 3-voxel cubes (label ids 1..n)."""
    gen = np.random.default_rng(seed)
    grid = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1)[:, None, None, None] / 2
    brain = (((grid - centre) / np.array([10.0, 12.0, 10.0])[:, None, None, None]) ** 2).sum(0) <= 1
    image = (gen.normal(size=(2, *SHAPE)) * 0.3).astype(np.float32)
    label = np.zeros(SHAPE, np.uint16)
    for i in range(n_lesions):
        x, y, z = 6 + 4 * i, 8 + 3 * i, 9
        label[x : x + 3, y : y + 3, z : z + 3] = i + 1
    image[:, label > 0] += 2.0
    folder.mkdir(parents=True)
    write_image(from_array(image * brain), folder / "image.nii.gz")
    write_image(from_array(label), folder / "label.nii.gz")
    write_image(from_array(brain.astype(np.uint8)), folder / "brainmask.nii.gz")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/-like folder: manifest.tsv, splits.json, preprocessed/, patches/ (12 subjects)."""
    root = tmp_path_factory.mktemp("cohort")
    manifest = pd.DataFrame([
        {"subject": f"sub-{i:03d}", "session": "ses-01", "scan": f"sub-{i:03d}_ses-01",
         "class": ["none", "low", "high"][i % 3]} for i in range(12)
    ])
    manifest.to_csv(root / "manifest.tsv", sep="\t", index=False)
    splits = make_splits(manifest, {"test_fraction": 0.25, "val_fraction": 0.34}, seed=0)
    write_json(root / "splits.json", splits)
    for k, rec in manifest.iterrows():
        write_scan(root / "preprocessed" / rec["scan"], int(k), {"none": 0, "low": 1, "high": 3}[rec["class"]])
    train_val = {k: v for k, v in splits.items() if k != "test"}
    extract_patches(manifest, train_val, root / "preprocessed", root / "patches",
                    {"size": [16, 16, 16], "per_scan": 4, "volume_shape": [32, 32, 32]}, seed=1)
    return root


def run_trial(root: Path, tag: str, cfg: dict, experiment: str = "lesion") -> Path:
    """Train trial-000 of ``experiment`` under its own search (parent run) into ``root/tag``."""
    search = root / f"{tag}-search.json"
    search_init(experiment, f"sqlite:///{root}/mlflow.db", cfg, search)
    out = root / tag / "trial-000"
    train_trial(experiment, "trial-000", root / "patches", root / "splits.json", root / "preprocessed",
                root / "manifest.tsv", search, SEED, cfg, out, lock_dir=root / "locks")
    return out


@pytest.fixture(scope="module")
def reference(cohort: Path) -> Path:
    return run_trial(cohort, "ref", SEG)


def test_trial_outputs_and_mlflow_run(reference: Path) -> None:
    for name in ("params.json", "checkpoint.pt", "last.pt", "history.tsv", "val_metrics.json", "history.png"):
        assert (reference / name).exists(), name
    history = pd.read_csv(reference / "history.tsv", sep="\t")
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_dice", "lr"]
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    metrics = json.loads((reference / "val_metrics.json").read_text())
    assert metrics["val_dice"] == history["val_dice"].max()
    assert metrics["epoch"] == int(history.loc[history["val_dice"].idxmax(), "epoch"])
    model, ckpt = load_trained(reference)
    assert not model.training
    assert ckpt.meta.task == "segmentation" and ckpt.meta.roi_size == (16, 16, 16)
    assert ckpt.meta.fold == 0 and ckpt.meta.trial == "trial-000" and ckpt.meta.data_hash
    # params.json as before the parameters were typed (test_trial_params.GOLDEN_SEG, indented)
    text = (reference / "params.json").read_text()
    assert text == json.dumps(json.loads(GOLDEN_SEG), indent=2) + "\n"
    assert ckpt.params.to_dict() == json.loads(text)
    c = client(f"sqlite:///{reference.parents[1]}/mlflow.db")
    run = c.get_run(ckpt.meta.mlflow_run_id)
    search = json.loads((reference.parents[1] / "ref-search.json").read_text())
    assert run.data.tags["mlflow.parentRunId"] == search["parent_run_id"]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"trial-000 r0 lr={ckpt.params.optimizer.lr:.2g}"  # rung, searched values
    assert run.data.params["optimizer.lr"] == str(ckpt.params.optimizer.lr)
    assert run.data.params == {k: str(v) for k, v in ckpt.params.flat().items()}
    assert {"config_hash", "data_hash"} <= set(run.data.tags)
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "val_dice")]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]


def test_cpu_runs_are_bit_identical(cohort: Path, reference: Path) -> None:
    again = run_trial(cohort, "again", SEG)
    assert (again / "history.tsv").read_bytes() == (reference / "history.tsv").read_bytes()
    assert (again / "val_metrics.json").read_bytes() == (reference / "val_metrics.json").read_bytes()


def test_killed_job_resumes_at_the_right_epoch_in_the_same_run(cohort: Path, reference: Path) -> None:
    search = cohort / "killed-search.json"
    search_init("lesion", f"sqlite:///{cohort}/mlflow.db", SEG, search)
    out, log = cohort / "killed" / "trial-000", cohort / "killed.log"
    cmd = [sys.executable, "-m", "mripipe.cli", "train", "--experiment", "lesion", "--trial", "trial-000",
           "--patches", str(cohort / "patches"), "--splits", str(cohort / "splits.json"),
           "--preprocessed", str(cohort / "preprocessed"), "--manifest", str(cohort / "manifest.tsv"),
           "--search", str(search), "--seed", str(SEED), "--params", json.dumps(SEG),
           "--threads", "1", "--out-dir", str(out), "--log", str(log)]
    proc = subprocess.Popen(cmd, cwd=cohort, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / "history.tsv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:  # header + 2 epochs
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    state = load_resume(out / "last.pt")
    done_epochs = state.epoch
    assert 2 <= done_epochs < 6 and not state.done
    run_id = state.meta.mlflow_run_id

    subprocess.run(cmd, cwd=cohort, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert f"resuming at epoch {done_epochs + 1}/6" in log.read_text()
    # Same result as the uninterrupted run, to the bit.
    assert history.read_bytes() == (reference / "history.tsv").read_bytes()
    # One MLflow run for the trial, continued and finished, with every epoch logged.
    c = client(f"sqlite:///{cohort}/mlflow.db")
    parent = json.loads(search.read_text())["parent_run_id"]
    runs = c.search_runs([json.loads(search.read_text())["mlflow_experiment_id"]],
                         filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert [r.info.run_id for r in runs] == [run_id]
    assert runs[0].info.status == "FINISHED"
    assert {m.step for m in c.get_metric_history(run_id, "val_dice")} == {1, 2, 3, 4, 5, 6}


def test_classification_trial(cohort: Path) -> None:
    out = run_trial(cohort, "cls", CLS, experiment="burden")
    metrics = json.loads((out / "val_metrics.json").read_text())
    assert {"val_balanced_accuracy", "val_accuracy", "val_loss", "epoch"} <= set(metrics)
    assert 0.0 <= metrics["val_balanced_accuracy"] <= 1.0
    model, ckpt = load_trained(out)
    assert ckpt.meta.class_names == ("high", "low", "none") and ckpt.meta.n_classes == 3
    assert ckpt.meta.labels is None and ckpt.params.network.name == "resnet"
    assert model(torch.zeros(1, 2, 32, 32, 32)).shape == (1, 3)


def test_bad_metric_and_fold_are_clear_errors(cohort: Path) -> None:
    bad = dict(SEG, search=dict(SEG["search"], metric="val_balanced_accuracy"))
    with pytest.raises(ValueError, match="not produced by segmentation"):
        run_trial(cohort, "bad-metric", bad)
    with pytest.raises(ValueError, match="fold 3 requested"):
        run_trial(cohort, "bad-fold", dict(SEG, fold=3))


def test_lr_schedule_by_hand() -> None:
    # 10 steps, 2 warm-up: 1/2, 2/2, then decay over the 8 remaining steps (floor 0).
    assert lr_factor(0, 10, 2, "cosine", 0.9, 0.0) == 0.5
    assert lr_factor(1, 10, 2, "cosine", 0.9, 0.0) == 1.0
    assert lr_factor(2, 10, 2, "cosine", 0.9, 0.0) == 1.0  # progress 0
    assert math.isclose(lr_factor(6, 10, 2, "cosine", 0.9, 0.0), 0.5)  # cos(pi/2) = 0
    assert math.isclose(lr_factor(6, 10, 2, "poly", 1.0, 0.0), 0.5)  # (1 - 4/8)^1
    assert math.isclose(lr_factor(10, 10, 2, "cosine", 0.9, 0.1), 0.1)  # floor at the end
    with pytest.raises(ValueError, match="unknown scheduler"):
        lr_factor(5, 10, 2, "step", 0.9, 0.0)


def test_early_stopping_and_a_finished_run_trains_afresh(tmp_path: Path) -> None:
    """fit on synthetic tensors: the metric peaks at epoch 2, patience 2 stops at epoch 4."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    data = [{"image": torch.randn(4, 8), "label": torch.randint(0, 2, (4,))} for _ in range(3)]
    scores = iter([0.2, 0.9, 0.5, 0.4, 0.8, 0.8])
    params = resolve_params({
        "task": "classification",
        "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.0, "momentum": 0.9},
        "training": {"epochs": 6, "patience": 2, "val_every": 1, "warmup_epochs": 0,
                     "scheduler": "constant", "poly_power": 1.0, "min_lr_ratio": 0.0}}, 0)
    result = fit(model, nn.CrossEntropyLoss(), lambda epoch: data, 3,
                 lambda m: {"val_loss": 0.0, "acc": next(scores)}, params, "acc", tmp_path,
                 torch.device("cpu"), TOY_META)
    assert [r["acc"] for r in result.history] == [0.2, 0.9, 0.5, 0.4]
    assert result.best_epoch == 2 and result.stopped_early
    # Snakemake runs a finished trial again only because an input (data, code) changed: the
    # stale last.pt must not be resumed, the trial trains afresh.
    rising = iter([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    again = fit(model, nn.CrossEntropyLoss(), lambda epoch: data, 3,
                lambda m: {"val_loss": 0.0, "acc": next(rising)}, params, "acc", tmp_path,
                torch.device("cpu"), TOY_META)
    assert again.resumed_from == 0 and len(again.history) == 6 and again.best_epoch == 6


class Threshold(nn.Module):
    """Logits (background, lesion) = (-x, x) from the first image channel: lesion where x > 0."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x[:, :1], x[:, :1]], dim=1) * self.w


def test_sliding_window_dice_by_hand() -> None:
    """Scan A: 8 lesion voxels, 4 predicted + 4 false positives -> Dice 2*4/(8+8) = 0.5.
    Scan B: no lesion, nothing predicted -> 1.0 (DESIGN). Per-scan mean = 0.75.
    Pooled: TP 4, FP 4, FN 4 -> 2*4 / (2*4 + 4 + 4) = 0.5 (scan B adds nothing)."""
    label_a = torch.zeros(1, 8, 8, 8)
    label_a[0, 2:4, 2:4, 2:4] = 1
    pred_a = torch.full((1, 8, 8, 8), -1.0)
    pred_a[0, 2:4, 2:4, 2:3] = 1  # 4 true positives
    pred_a[0, 5:7, 5:7, 5:6] = 1  # 4 false positives
    scan_b = ValScan("b", torch.full((1, 8, 8, 8), -1.0), torch.zeros(1, 8, 8, 8))
    scans = [ValScan("a", pred_a, label_a), scan_b]
    validate = segmentation_validator(scans, lambda lg, lb: torch.zeros(()), [4, 4, 4], overlap=0.0)
    scores = validate(Threshold().eval())
    assert math.isclose(scores["val_dice_cases"], 0.75, abs_tol=1e-6)
    assert math.isclose(scores["val_dice"], 0.5, abs_tol=1e-6)
    # predicting nothing anywhere: per-scan mean still earns scan B's 1.0, pooled Dice is 0
    empty = [ValScan("a", torch.full((1, 8, 8, 8), -1.0), label_a), scan_b]
    scores = segmentation_validator(empty, lambda lg, lb: torch.zeros(()), [4, 4, 4], overlap=0.0)(Threshold().eval())
    assert scores["val_dice_cases"] == 0.5 and scores["val_dice"] == 0.0


def test_balanced_accuracy_by_hand() -> None:
    """Truth [0, 0, 0, 1] predicted [0, 0, 1, 1]: recalls 2/3 and 1/1 -> balanced 5/6; accuracy 3/4."""
    images = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    labels = torch.tensor([0, 0, 0, 1])
    model = nn.Linear(1, 2)  # logits (0.5 - x, x - 0.5): class 1 when x > 0.5
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model.bias.copy_(torch.tensor([0.5, -0.5]))
    validate = classification_validator(lambda: [{"image": images, "label": labels}], nn.CrossEntropyLoss())
    scores = validate(model.eval())
    assert math.isclose(scores["val_balanced_accuracy"], 5 / 6)
    assert math.isclose(scores["val_accuracy"], 0.75)


@pytest.mark.gpu
def test_gpu_trial_with_amp(cohort: Path) -> None:
    out = run_trial(cohort, "gpu", dict(SEG, training=dict(SEG["training"], epochs=2)))
    _, ckpt = load_trained(out, "cuda")
    assert ckpt.params.training.amp is True


def test_epochs_log_the_selection_metric_first(tmp_path: Path) -> None:
    """MLflow lists a run's metrics in the order each was first logged, and its compare page
    plots the first: the metric leads from epoch 1, even when validation is first due at
    epoch 4 (NaN there: not measured)."""
    from mripipe.learn.train import _epoch_logger

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    search = search_init("lesion", uri, SEG, tmp_path / "search.json")
    c = client(uri)
    run = c.create_run(search["mlflow_experiment_id"]).info.run_id
    log = _epoch_logger(c, run, "val_dice")
    nan = math.nan
    for epoch in (1, 2, 3, 4):  # loop.py's row order: epoch, train_loss, val_loss, metric, lr
        due = epoch == 4
        log({"epoch": float(epoch), "train_loss": 1.0 / epoch, "val_loss": 0.5 if due else nan,
             "val_dice": 0.7 if due else nan, "lr": 0.001, "epoch_time_s": 1.0})
    metrics = c.get_run(run).data.metrics
    assert list(metrics) == ["val_dice", "train_loss", "lr", "epoch_time_s", "val_loss"]
    assert metrics["val_dice"] == 0.7 and metrics["train_loss"] == 0.25
    history = sorted((m.step, m.value) for m in c.get_metric_history(run, "val_dice"))
    assert history[1:] == [(4, 0.7)] and history[0][0] == 1 and math.isnan(history[0][1])
    assert [m.step for m in c.get_metric_history(run, "val_loss")] == [4]

"""The default networks learn: tests that fail when learning breaks.

The segmentation network of the default config (``experiments.lesion_seg.network``) is trained by
the real trainer (:func:`mripipe.learn.loop.fit`) on patches the real loader draws online from
cached toy scans (bright blobs in noise), then segments held-out toy volumes by sliding window.
The default classifier (``experiments.burden_cls.network``) learns a toy burden task (how many
bright spots a volume holds). Each would fail with a broken loss, optimiser, loader, label or
inference path; an untrained network scores at chance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mripipe.core.imageio import from_array, write_image
from mripipe.learn import loader
from mripipe.learn.checkpoint import CheckpointMeta
from mripipe.learn.loop import fit, seed_everything
from mripipe.learn.losses import make_loss
from mripipe.learn.monitor import ValScan, classification_validator, segmentation_validator
from mripipe.learn.networks import build_model, load_trained, segment_probability
from mripipe.learn.patches import extract_patches
from mripipe.learn.search import resolve_params
from mripipe.learn.trial_params import TrialParams

CONFIG = Path(__file__).resolve().parents[3] / "config" / "config.yaml"
SHAPE = (32, 32, 32)

pytestmark = pytest.mark.slow


def default_experiment(name: str) -> dict[str, Any]:
    """The default config's experiment ``name``, its search space dropped."""
    exp = yaml.safe_load(CONFIG.read_text())["experiments"][name]
    exp.pop("search", None)
    return exp


def trial_params(name: str, training: dict[str, Any]) -> TrialParams:
    """Resolved trial parameters: built-in defaults, the default config's groups, ``training``."""
    exp = default_experiment(name)
    return resolve_params(exp | {"training": (exp.get("training") or {}) | training}, 0)


def blob_volume(gen: np.random.Generator, n_blobs: int, radius: tuple[float, float] = (2.0, 4.0),
                shape: tuple[int, ...] = SHAPE, contrast: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(2, *shape)`` of unit Gaussian noise with ``n_blobs`` spheres, brighter by
    ``contrast`` in channel 1 (a FLAIR lesion) and darker by half that in channel 0; their
    instance ids ``shape``."""
    grid = np.indices(shape, dtype=np.float32)
    ids = np.zeros(shape, np.uint16)
    for k in range(n_blobs):
        r = gen.uniform(*radius)
        c = gen.uniform(r + 1, np.array(shape) - r - 2)
        ids[((grid - c[:, None, None, None]) ** 2).sum(0) <= r * r] = k + 1
    image = gen.normal(size=(2, *shape)).astype(np.float32)
    image[1, ids > 0] += contrast
    image[0, ids > 0] -= contrast / 2
    return image, ids


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))


def write_toy_cohort(root: Path, n_scans: int) -> list[str]:
    """Preprocessed-like toy scans (every voxel brain) cached by ``extract_patches``."""
    gen = np.random.default_rng(0)
    rows = []
    for i in range(n_scans):
        image, ids = blob_volume(gen, int(gen.integers(2, 5)))
        folder = root / "pre" / f"sub-{i:03d}_ses-01"
        folder.mkdir(parents=True)
        write_image(from_array(image), folder / "image.nii.gz")
        write_image(from_array(ids), folder / "label.nii.gz")
        write_image(from_array(np.ones(SHAPE, np.uint8)), folder / "brainmask.nii.gz")
        rows.append({"subject": f"sub-{i:03d}", "scan": folder.name, "class": ""})
    subjects = [r["subject"] for r in rows]
    extract_patches(pd.DataFrame(rows), {"folds": [{"train": subjects, "val": []}]}, root / "pre",
                    root / "patches", {"size": [16, 16, 16], "per_scan": 8, "pos_fraction": 0.5},
                    seed=0)
    return subjects


def test_default_segmentation_network_learns_blobs(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    subjects = write_toy_cohort(tmp_path, 6)
    params = trial_params("lesion_seg", {"epochs": 5, "batches_per_epoch": 50, "batch_size": 4,
                                         "val_every": 5, "patience": 5, "warmup_epochs": 1,
                                         "augment": 0.0})
    gen = np.random.default_rng(1)
    held_out = [blob_volume(gen, 3) for _ in range(4)]
    val = [ValScan(f"val-{i}", torch.from_numpy(img), torch.from_numpy((ids > 0)[None].astype(np.float32)))
           for i, (img, ids) in enumerate(held_out)]
    seed_everything(0)
    model = build_model(params, 2, 2)
    loss = make_loss(params)
    before = [dice(segment_probability(model.eval(), v.image, (16, 16, 16)).numpy() >= 0.5,
                   v.label[0].numpy() > 0) for v in val]

    def batches(epoch: int) -> loader.DataLoader:
        return loader.segmentation_loader(tmp_path / "patches", subjects, 4, seed=3, epoch=epoch,
                                          augment=0.0, n_samples=200)

    validate = segmentation_validator(val[:2], loss, (16, 16, 16), overlap=0.25)
    meta = CheckpointMeta(in_channels=2, n_classes=2, class_names=("background", "lesion"),
                          roi_size=(16, 16, 16), task="segmentation")
    result = fit(model, loss, batches, 50, validate, params, "val_dice", tmp_path / "trial",
                 torch.device("cpu"), meta)
    trained, _ = load_trained(tmp_path / "trial")
    after = [dice(segment_probability(trained, v.image, (16, 16, 16), overlap=0.25).numpy() >= 0.5,
                  v.label[0].numpy() > 0) for v in val[2:]]
    losses = [row["train_loss"] for row in result.history]
    assert max(before) < 0.3  # an untrained network does not solve the task
    assert losses[-1] < 0.5 * losses[0]
    assert min(after) > 0.8, (after, losses)


def burden_volume(gen: np.random.Generator, cls: int) -> np.ndarray:
    """Classification toy ``(2, 16, 16, 16)``: class 0 none, 1 one or two, 2 five to eight blobs."""
    n = [0, int(gen.integers(1, 3)), int(gen.integers(5, 9))][cls]
    image, _ = blob_volume(gen, n, radius=(1.5, 2.5), shape=(16, 16, 16), contrast=4.0)
    return image


def test_default_classifier_learns_burden(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    params = trial_params("burden_cls", {"epochs": 8, "batches_per_epoch": 0, "batch_size": 5,
                                         "val_every": 8, "patience": 8, "warmup_epochs": 1,
                                         "augment": 0.0})
    gen = np.random.default_rng(2)
    y_train, y_test = np.arange(150) % 3, np.arange(30) % 3
    x_train = torch.from_numpy(np.stack([burden_volume(gen, c) for c in y_train]))
    x_test = torch.from_numpy(np.stack([burden_volume(gen, c) for c in y_test]))
    seed_everything(0)
    model = build_model(params, 2, 3)
    loss = make_loss(params, torch.ones(3))

    def batches(epoch: int) -> list[dict[str, torch.Tensor]]:
        order = torch.randperm(150, generator=torch.Generator().manual_seed(epoch))
        return [{"image": x_train[order[i:i + 5]], "label": torch.from_numpy(y_train)[order[i:i + 5]]}
                for i in range(0, 150, 5)]

    def test_batches() -> list[dict[str, torch.Tensor]]:
        return [{"image": x_test, "label": torch.from_numpy(y_test)}]

    validate = classification_validator(test_batches, loss)
    model.eval()
    before = validate(model)["val_accuracy"]
    result = fit(model, loss, batches, 30, validate, params, "val_balanced_accuracy",
                 tmp_path, torch.device("cpu"),
                 CheckpointMeta(in_channels=2, n_classes=3, class_names=("none", "low", "high"),
                                roi_size=(16, 16, 16), task="classification"))
    after = result.best["val_accuracy"]
    assert before < 0.5  # chance is 1/3; measured after training: 0.93
    assert after > 0.8, (before, after, [r["train_loss"] for r in result.history])

"""Multi-class segmentation (K >= 2 label classes) on the learning side: the cached labels keep
their classes, each class gets its share of the foreground samples, the validation scores each
class, and the default network learns a two-class toy (two kinds of bright blobs in noise)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_learning import trial_params

from mripipe.core.errors import InputError
from mripipe.core.imageio import from_array, write_image
from mripipe.core.utils import read_json
from mripipe.learn import loader
from mripipe.learn.checkpoint import CheckpointMeta
from mripipe.learn.loop import fit, seed_everything
from mripipe.learn.monitor import ValScan, load_val_scans, segmentation_validator
from mripipe.learn.networks import build_model, load_trained, segment_softmax
from mripipe.learn.patches import extract_patches, patch_labels
from mripipe.learn.postprocess import choose_multiclass_postprocess, detection_target
from mripipe.learn.sampling import crop, draw, foreground, sample_class
from mripipe.learn.train import make_loss

SHAPE = (32, 32, 32)
LABELS = {"a": 1, "b": 2}


def two_class_volume(gen: np.random.Generator, n_blobs: int, values: tuple[int, int] = (1, 2)
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(2, *SHAPE)`` of unit noise with spheres of two kinds: kind a is bright in channel
    1 and dark in channel 0, kind b bright in both; the label holds ``values`` of the kinds."""
    grid = np.indices(SHAPE, dtype=np.float32)
    label = np.zeros(SHAPE, np.uint16)
    for k in range(n_blobs):
        r = gen.uniform(2.5, 4.0)
        c = gen.uniform(r + 1, np.array(SHAPE) - r - 2)
        label[((grid - c[:, None, None, None]) ** 2).sum(0) <= r * r] = values[k % 2]
    image = gen.normal(size=(2, *SHAPE)).astype(np.float32)
    a, b = label == values[0], label == values[1]
    image[1, a | b] += 2.5
    image[0, a] -= 2.0
    image[0, b] += 2.0
    return image, label


def write_cohort(root: Path, n_scans: int, labels: dict[str, int], values: tuple[int, int] = (1, 2),
                 seed: int = 0) -> list[str]:
    """Preprocessed-like two-class scans (every voxel brain) cached by ``extract_patches``."""
    gen = np.random.default_rng(seed)
    rows = []
    for i in range(n_scans):
        image, label = two_class_volume(gen, int(gen.integers(2, 5)), values)
        folder = root / "pre" / f"sub-{i:03d}"
        folder.mkdir(parents=True)
        write_image(from_array(image), folder / "image.nii.gz")
        write_image(from_array(label), folder / "label.nii.gz")
        write_image(from_array(np.ones(SHAPE, np.uint8)), folder / "brainmask.nii.gz")
        rows.append({"subject": folder.name, "scan": folder.name, "class": ""})
    subjects = [r["subject"] for r in rows]
    pd.DataFrame(rows).to_csv(root / "manifest.tsv", sep="\t", index=False)
    extract_patches(pd.DataFrame(rows), {"folds": [{"train": subjects, "val": []}]}, root / "pre",
                    root / "patches", {"size": [16, 16, 16], "per_scan": 8, "pos_fraction": 0.5},
                    seed=0, labels=labels)
    return subjects


def test_each_class_gets_an_even_share_of_the_foreground_samples() -> None:
    shapes = [(20, 20, 20)] * 3
    only_a = np.zeros((20, 20, 20), np.uint8)
    only_a[3:6, 3:6, 3:6] = 1
    both = np.zeros((20, 20, 20), np.uint8)
    both[2:4, 2:4, 2:4] = 1
    both[15, 15, 15] = 2  # one voxel of class 2 in the whole cohort
    fgs = [foreground(only_a), foreground(both), foreground(np.zeros_like(both))]
    labels = [only_a, both, np.zeros_like(both)]
    size, n, p = (8, 8, 8), 600, 0.5
    draws = [draw(i, 7, 3, shapes, fgs, size, p, n_classes=2) for i in range(n)]
    held = Counter()
    for i, d in enumerate(draws):
        if d.positive:
            cls = sample_class(i, p, 2)
            patch = crop(labels[d.scan][None], d.start, size)
            assert (patch == cls).any()  # the drawn class is in the patch
            held[cls] += 1
    assert held == {1: 150, 2: 150}  # pos_fraction split evenly across the classes
    # only the scan holding class 2 serves its samples; the rest are uniform over all scans
    assert {d.scan for i, d in enumerate(draws) if d.positive and sample_class(i, p, 2) == 2} == {1}
    again = [draw(i, 7, 3, shapes, fgs, size, p, n_classes=2) for i in reversed(range(n))][::-1]
    assert all(np.array_equal(x.start, y.start) and x.scan == y.scan for x, y in zip(draws, again, strict=True))


def test_patches_keep_the_classes_and_the_loader_serves_them(tmp_path: Path) -> None:
    # dataset values 2 and 5 (not 1..K): cached as the class indices 1 and 2
    subjects = write_cohort(tmp_path, 3, {"a": 2, "b": 5}, values=(2, 5))
    assert patch_labels(tmp_path / "patches") == {"a": 2, "b": 5}
    assert read_json(tmp_path / "patches" / "patches.json")["labels"] == {"a": 2, "b": 5}
    cached = np.load(tmp_path / "patches" / "seg" / "sub-000_label.npy")
    assert set(np.unique(cached)) == {0, 1, 2}
    batch = next(iter(loader.segmentation_loader(tmp_path / "patches", subjects, 16, seed=1, epoch=0,
                                                 augment=1.0, n_samples=16)))
    assert batch["label"].shape == (16, 1, 16, 16, 16)
    assert set(torch.unique(batch["label"]).tolist()) == {0.0, 1.0, 2.0}  # never binarised
    scans = load_val_scans(tmp_path / "manifest.tsv", tmp_path / "pre", subjects[:1], labels={"a": 2, "b": 5})
    assert set(torch.unique(scans[0].label).tolist()) == {0.0, 1.0, 2.0}
    with pytest.raises(InputError, match=r"sub-000/label\.nii\.gz: label values \[5\] are not in"):
        load_val_scans(tmp_path / "manifest.tsv", tmp_path / "pre", subjects[:1], labels={"a": 2, "c": 3})


def test_detection_target_names_a_class_or_a_region() -> None:
    names = ["edema", "net", "et"]
    assert detection_target(names, {}) == ("foreground", [1, 2, 3])
    assert detection_target(names, {"detection_classes": ["et", "edema"]}) == ("et", [3])
    regions = {"TC": ["net", "et"]}
    assert detection_target(names, {"detection_classes": ["TC"], "regions": regions}) == ("TC", [2, 3])
    with pytest.raises(InputError, match="'WT' is neither a class"):
        detection_target(names, {"detection_classes": ["WT"], "regions": regions})


def argmax_dice(prob: np.ndarray, label: np.ndarray, cls: int) -> float:
    pred, truth = prob.argmax(0) == cls, label == cls
    return float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))


@pytest.mark.slow
def test_default_network_learns_two_classes(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    subjects = write_cohort(tmp_path, 6, LABELS)
    params = trial_params("lesion_seg", {"epochs": 6, "batches_per_epoch": 50, "batch_size": 4,
                                         "val_every": 3, "patience": 6, "warmup_epochs": 1,
                                         "augment": 0.0})
    gen = np.random.default_rng(1)
    held_out = [two_class_volume(gen, 4) for _ in range(4)]
    val = [ValScan(f"val-{i}", torch.from_numpy(img), torch.from_numpy(lab[None].astype(np.float32)))
           for i, (img, lab) in enumerate(held_out)]
    seed_everything(0)
    model = build_model(params, 2, 3)
    loss = make_loss(params)

    def batches(epoch: int) -> loader.DataLoader:
        return loader.segmentation_loader(tmp_path / "patches", subjects, 4, seed=3, epoch=epoch,
                                          augment=0.0, n_samples=200)

    validate = segmentation_validator(val[:2], loss, (16, 16, 16), overlap=0.25, class_names=["a", "b"])
    meta = CheckpointMeta(in_channels=2, n_classes=3, class_names=("background", "a", "b"),
                          labels=LABELS, roi_size=(16, 16, 16), task="segmentation")
    result = fit(model, loss, batches, 50, validate, params, "val_dice", tmp_path / "trial",
                 torch.device("cpu"), meta)
    history = pd.read_csv(tmp_path / "trial" / "history.tsv", sep="\t")
    assert {"val_dice_a", "val_dice_b"} <= set(history.columns)
    best = result.best
    assert best["val_dice"] == pytest.approx((best["val_dice_a"] + best["val_dice_b"]) / 2)
    trained, ckpt = load_trained(tmp_path / "trial")
    assert ckpt.meta.n_classes == 3 and ckpt.meta.labels == LABELS
    dices = [[argmax_dice(segment_softmax(trained, v.image, (16, 16, 16), overlap=0.25).numpy(),
                          v.label[0].numpy(), c) for c in (1, 2)] for v in val[2:]]
    assert np.mean(dices) > 0.7, (dices, [r["train_loss"] for r in result.history])
    chosen = choose_multiclass_postprocess(trained, val[2:], (16, 16, 16), ["a", "b"], overlap=0.25,
                                           detection={"detection_classes": ["b"]})
    assert chosen["method"] == "argmax" and chosen["candidate_class"] == "b"
    assert chosen["candidate_threshold"] in (0.1, 0.2, 0.3, 0.4, 0.5)
    assert chosen["val_dice_pooled"] == pytest.approx(
        (chosen["val_dice_pooled_a"] + chosen["val_dice_pooled_b"]) / 2)

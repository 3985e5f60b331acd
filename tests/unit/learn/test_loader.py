"""Tests of mripipe.learn.loader over scans cached from tiny preprocessed-like scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mripipe.core.imageio import from_array, write_image
from mripipe.learn.loader import class_weights, classification_loader, segmentation_loader
from mripipe.learn.patches import extract_patches
from mripipe.learn.sampling import crop, draw, foreground

torch.set_num_threads(1)

SHAPE = (16, 18, 14)
SIZE = [8, 8, 8]
VOLUME = [6, 6, 5]
# 6 subjects: classes a, b, b, c, c, c; sub-000 has two sessions -> 7 scans.
CLASSES = ["a", "b", "b", "c", "c", "c"]


def write_scan(folder: Path, seed: int) -> None:
    """A 2-channel scan: box-shaped brain, one 3x3x3 lesion (id 1) inside it."""
    gen = np.random.default_rng(seed)
    brain = np.zeros(SHAPE, np.uint8)
    brain[2:-2, 2:-2, 2:-2] = 1
    image = (gen.normal(size=(2, *SHAPE)) * brain).astype(np.float32)
    label = np.zeros(SHAPE, np.uint16)
    label[6:9, 7:10, 5:8] = 1
    folder.mkdir(parents=True)
    write_image(from_array(image), folder / "image.nii.gz")
    write_image(from_array(label), folder / "label.nii.gz")
    write_image(from_array(brain), folder / "brainmask.nii.gz")


@pytest.fixture(scope="module")
def patches_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loader")
    rows = [{"subject": f"sub-{i:03d}", "scan": f"sub-{i:03d}_ses-{j:02d}", "class": c}
            for i, c in enumerate(CLASSES) for j in range(1, 3 if i == 0 else 2)]
    manifest = pd.DataFrame(rows)
    subjects = sorted(set(manifest["subject"]))
    splits = {"folds": [{"train": subjects[:4], "val": subjects[4:]}]}
    for k, scan in enumerate(manifest["scan"]):
        write_scan(root / "pre" / scan, k)
    params = {"size": SIZE, "per_scan": 4, "pos_fraction": 0.5, "volume_shape": VOLUME}
    extract_patches(manifest, splits, root / "pre", root / "patches", params, seed=3)
    return root / "patches"


SUBJECTS = [f"sub-{i:03d}" for i in range(6)]


def batches(loader: torch.utils.data.DataLoader) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def test_segmentation_shapes_and_dtypes(patches_dir: Path) -> None:
    loader = segmentation_loader(patches_dir, SUBJECTS[:4], batch_size=3, seed=0, epoch=0)
    got = batches(loader)
    # sub-000 has 2 scans, the other 3 subjects 1 each: 5 scans x 4 patches = 20 -> 7 batches.
    assert sum(len(b["image"]) for b in got) == 20 and len(got) == 7
    first = got[0]
    assert first["image"].dtype == torch.float32 and first["image"].shape == (3, 2, *SIZE)
    assert first["label"].dtype == torch.float32 and first["label"].shape == (3, 1, *SIZE)
    assert type(first["image"]) is torch.Tensor  # plain tensors, not MONAI MetaTensors
    assert set(torch.unique(torch.cat([b["label"] for b in got])).tolist()) <= {0.0, 1.0}


def test_patches_are_fresh_crops_of_the_cached_scans(patches_dir: Path) -> None:
    # Without augmentation each patch is exactly the window its draw names; half the draws are
    # foreground (pos_fraction 0.5) and hold the lesion, and epochs differ.
    loader = segmentation_loader(patches_dir, SUBJECTS[:4], batch_size=8, seed=0, epoch=0,
                                 augment=0.0, n_samples=40)
    got = batches(loader)
    images = torch.cat([b["image"] for b in got])
    labels = torch.cat([b["label"] for b in got])
    assert images.shape == (40, 2, *SIZE)
    table = pd.read_csv(patches_dir / "index.tsv", sep="\t")
    table = table[table["subject"].isin(SUBJECTS[:4])].sort_values("scan").reset_index(drop=True)
    cached = [np.load(patches_dir / f) for f in table["file"]]
    ids = [np.load(patches_dir / f) for f in table["label_file"]]
    fgs = [foreground(i) for i in ids]
    shapes = [i.shape for i in ids]
    for k in range(40):
        d = draw(k, 0, 0, shapes, fgs, SIZE, 0.5)
        assert np.array_equal(images[k].numpy(), crop(cached[d.scan], d.start, SIZE).astype(np.float32))
        assert np.array_equal(labels[k, 0].numpy(), crop(ids[d.scan][None], d.start, SIZE)[0] > 0)
        assert d.positive == (k % 2 == 1)  # floor((k+1)/2) > floor(k/2) for odd k
        if d.positive:
            assert labels[k].any()
    assert (labels.flatten(1).amax(1) > 0).float().mean() >= 0.5
    epoch1 = torch.cat([b["image"] for b in segmentation_loader(
        patches_dir, SUBJECTS[:4], 8, 0, 1, augment=0.0, n_samples=40)])
    assert not torch.equal(images, epoch1)


def test_same_seed_epoch_replays_identically(patches_dir: Path) -> None:
    def run(epoch: int, workers: int) -> list[dict[str, torch.Tensor]]:
        return batches(segmentation_loader(patches_dir, SUBJECTS[:4], 4, seed=5, epoch=epoch,
                                           num_workers=workers))

    a, b, c = run(1, 0), run(1, 2), run(2, 0)
    for x, y in zip(a, b, strict=True):  # identical also with worker processes
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True))


def test_augmentation_changes_patches(patches_dir: Path) -> None:
    plain = batches(segmentation_loader(patches_dir, SUBJECTS[:4], 20, 0, 0, augment=0.0))[0]
    aug = batches(segmentation_loader(patches_dir, SUBJECTS[:4], 20, 0, 0, augment=1.0))[0]
    changed = [(not torch.equal(p, q)) for p, q in zip(plain["image"], aug["image"], strict=True)]
    assert 0 < sum(changed) <= 20


def test_classification_loader_and_weights(patches_dir: Path) -> None:
    loader = classification_loader(patches_dir, SUBJECTS, batch_size=8, seed=0, epoch=0,
                                   shuffle=False, augment=0.5)
    (batch,) = batches(loader)
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (7, 2, *VOLUME)
    assert batch["label"].dtype == torch.int64
    # Scans sorted by name: sub-000 x2 (a), sub-001, sub-002 (b), sub-003..005 (c).
    assert batch["label"].tolist() == [0, 0, 1, 1, 2, 2, 2]
    # Inverse frequency over 7 scans, 3 classes: w_k = 7 / (3 n_k), n = (2, 2, 3).
    expected = torch.tensor([7 / 6, 7 / 6, 7 / 9])
    assert torch.allclose(class_weights(patches_dir, SUBJECTS), expected)
    # Class c absent from these subjects: weight 0; a and b: 4 scans -> 4 / (3 * 2) each.
    assert torch.allclose(class_weights(patches_dir, SUBJECTS[:3]), torch.tensor([2 / 3, 2 / 3, 0]))


def test_unknown_subject_raises(patches_dir: Path) -> None:
    with pytest.raises(ValueError, match=rf"^{patches_dir / 'index.tsv'}: no items"):
        segmentation_loader(patches_dir, ["sub-999"], 2, 0, 0)
    with pytest.raises(ValueError, match="augment"):
        segmentation_loader(patches_dir, ["sub-001"], 2, 0, 0, augment=2.0)

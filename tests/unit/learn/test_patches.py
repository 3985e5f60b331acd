"""Tests of mripipe.learn.patches on tiny preprocessed-like scans written with mripipe.core.imageio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mripipe.cli import main
from mripipe.core.imageio import from_array, read_image, to_array, write_image
from mripipe.core.utils import write_json
from mripipe.learn.patches import (
    class_names,
    classification_volume,
    extract_patches,
)
from mripipe.learn.split import make_splits

SHAPE = (20, 24, 18)
SIZE = [8, 8, 8]


def write_scan(folder: Path, seed: int, n_lesions: int) -> None:
    """A 2-channel scan: ellipsoid brain, ``n_lesions`` cubic lesions (ids 1..n) inside it."""
    gen = np.random.default_rng(seed)
    grid = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1)[:, None, None, None] / 2
    radius = np.array([8.0, 10.0, 7.0])[:, None, None, None]
    brain = (((grid - centre) / radius) ** 2).sum(0) <= 1
    image = gen.normal(size=(2, *SHAPE)).astype(np.float32) * brain
    label = np.zeros(SHAPE, np.uint16)
    for i in range(n_lesions):
        x, y, z = 6 + 4 * i, 8 + 3 * i, 7
        label[x : x + 2, y : y + 2, z : z + 2] = i + 1
    folder.mkdir(parents=True)
    write_image(from_array(image), folder / "image.nii.gz")
    write_image(from_array(label), folder / "label.nii.gz")
    write_image(from_array(brain.astype(np.uint8)), folder / "brainmask.nii.gz")


def make_cohort(root: Path, n_subjects: int = 9) -> tuple[pd.DataFrame, dict]:
    """Manifest + preprocessed scans of the train/val subjects only (test scans do not exist)."""
    rows = []
    for i in range(n_subjects):
        subject = f"sub-{i:03d}"
        for j in range(1, (2 if i % 3 == 0 else 1) + 1):
            rows.append({"subject": subject, "session": f"ses-{j:02d}",
                         "scan": f"{subject}_ses-{j:02d}", "class": ["none", "low", "high"][i % 3]})
    manifest = pd.DataFrame(rows)
    splits = make_splits(manifest, {"test_fraction": 0.34, "val_fraction": 0.34}, seed=0)
    splits.pop("test")  # as load_splits(path, "train") returns it
    trainval = {s for f in splits["folds"] for s in (*f["train"], *f["val"])}
    for k, rec in manifest.iterrows():
        if rec["subject"] in trainval:
            n_lesions = {"none": 0, "low": 1, "high": 3}[rec["class"]]
            write_scan(root / "preprocessed" / rec["scan"], int(k), n_lesions)
    return manifest, splits


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, dict]:
    root = tmp_path_factory.mktemp("patches")
    manifest, splits = make_cohort(root)
    params = {"size": SIZE, "per_scan": 6, "pos_fraction": 0.5, "volume_shape": [5, 6, 4]}
    index = extract_patches(manifest, splits, root / "preprocessed", root / "out", params, seed=1)
    return root, index, splits


def test_only_trainval_scans_and_layout(extracted: tuple[Path, pd.DataFrame, dict]) -> None:
    root, index, splits = extracted
    out = root / "out"
    trainval = {s for f in splits["folds"] for s in (*f["train"], *f["val"])}
    assert set(index["subject"]) == trainval  # test scans do not even exist on disk
    assert index["scan"].is_unique  # one row per cached scan
    assert set(index["role"]) == {"train", "val"}
    assert set(index.loc[index["role"] == "val", "subject"]) == set(splits["folds"][0]["val"])
    on_disk = pd.read_csv(out / "index.tsv", sep="\t")
    assert list(on_disk.columns) == ["scan", "subject", "role", "val_fold", "file", "label_file",
                                     "origin_x", "origin_y", "origin_z", "size_x", "size_y",
                                     "size_z", "n_lesions", "lesion_voxels", "has_lesion"]
    meta = json.loads((out / "patches.json").read_text())
    assert meta["n_channels"] == 2 and meta["n_scans"] == len(index) and meta["per_scan"] == 6
    assert not list(root.glob(".out*"))  # no temporary left behind


def test_cached_scans_are_brain_crops(extracted: tuple[Path, pd.DataFrame, dict]) -> None:
    root, index, _ = extracted
    for rec in index.itertuples():
        image = np.load(root / "out" / rec.file, mmap_mode="r")
        ids = np.load(root / "out" / rec.label_file, mmap_mode="r")
        assert image.dtype == np.float16 and ids.dtype == np.uint16
        assert image.shape == (2, rec.size_x, rec.size_y, rec.size_z) == (2, *ids.shape)
        folder = root / "preprocessed" / rec.scan
        full = to_array(read_image(folder / "image.nii.gz"))
        lesion = to_array(read_image(folder / "label.nii.gz"))
        brain = to_array(read_image(folder / "brainmask.nii.gz"))
        box = tuple(slice(o, o + n) for o, n in zip((rec.origin_x, rec.origin_y, rec.origin_z),
                                                      ids.shape, strict=True))
        np.testing.assert_array_equal(ids, lesion[box])  # every lesion voxel is kept
        assert ids.sum() == lesion.sum() and brain[box].sum() == brain.sum()
        np.testing.assert_array_equal(image, full[(slice(None), *box)].astype(np.float16))
        # The ellipsoid brain spans x 8 voxels either side of the centre (9.5): the crop is the
        # brain's box (2..17) plus MARGIN = 4 voxels, clipped to the volume (0..19).
        assert (rec.origin_x, rec.size_x) == (0, 20)
        expected = [0, 1, 3][int(rec.subject[4:]) % 3]  # make_cohort: none, low, high
        assert rec.n_lesions == expected
        assert rec.lesion_voxels == 8 * rec.n_lesions and rec.has_lesion == (rec.n_lesions > 0)


def test_classification_volume_and_classes(extracted: tuple[Path, pd.DataFrame, dict]) -> None:
    root, index, _ = extracted
    out = root / "out"
    assert class_names(out) == ["high", "low", "none"]
    table = pd.read_csv(out / "volumes.tsv", sep="\t")
    assert set(table["scan"]) == set(index["scan"])
    assert (table["class_id"] == table["class"].map({"high": 0, "low": 1, "none": 2})).all()
    vol = np.load(out / table["file"][0])
    assert vol.dtype == np.float16 and vol.shape == (2, 5, 6, 4)
    # Area averaging of a constant brain-masked image: 2 inside a full brain -> 2 everywhere.
    img = np.full((1, 8, 8, 8), 2.0, np.float32)
    out_vol = classification_volume(img, np.ones((8, 8, 8), np.uint8), {"volume_shape": [4, 4, 4]})
    assert out_vol.dtype == np.float32 and np.allclose(out_vol, 2.0)
    half = np.zeros((8, 8, 8), np.uint8)
    half[:4] = 1  # outside the mask is zeroed before averaging
    out_half = classification_volume(img, half, {"volume_shape": [2, 1, 1]})
    assert np.allclose(torch.as_tensor(out_half).flatten().tolist(), [2.0, 0.0])


def test_classification_volume_max_and_min_pooling_keep_small_spots() -> None:
    # 8^3 brain, channel 0 = 1 everywhere with one bright voxel 9 at (1, 1, 1); channel 1 = 1
    # with one dark voxel -7 at (6, 6, 6). Cells of a [2, 2, 2] grid are 4^3 = 64 voxels:
    #   area: cell (0,0,0) of ch0 = (63 + 9) / 64 = 1.125 (the spot washed out), others 1
    #   max:  ch0 cell (0,0,0) = 9, others 1;  ch1 = 1 everywhere
    #   min:  ch1 cell (1,1,1) = -7, others 1; ch0 = 1 everywhere
    img = np.ones((2, 8, 8, 8), np.float32)
    img[0, 1, 1, 1] = 9.0
    img[1, 6, 6, 6] = -7.0
    brain = np.ones((8, 8, 8), np.uint8)
    out = classification_volume(img, brain, {"volume_shape": [2, 2, 2],
                                             "volume_pooling": ["area", "max", "min"]})
    assert out.shape == (6, 2, 2, 2) and out.dtype == np.float32
    area, mx, mn = out[:2], out[2:4], out[4:]
    assert area[0, 0, 0, 0] == pytest.approx(1.125) and area[1, 1, 1, 1] == pytest.approx(0.875)
    assert mx[0, 0, 0, 0] == 9.0 and mx[0].sum() == 9.0 + 7 and np.all(mx[1] == 1.0)
    assert mn[1, 1, 1, 1] == -7.0 and np.all(mn[0] == 1.0)
    only_max = classification_volume(img, brain, {"volume_shape": [2, 2, 2], "volume_pooling": ["max"]})
    np.testing.assert_array_equal(only_max, mx)
    with pytest.raises(ValueError, match="volume_pooling"):
        classification_volume(img, brain, {"volume_shape": [2, 2, 2], "volume_pooling": ["median"]})


def test_seeded_and_cli(extracted: tuple[Path, pd.DataFrame, dict], tmp_path: Path) -> None:
    root, index, splits = extracted
    manifest_path = tmp_path / "manifest.tsv"
    manifest, _ = make_cohort(tmp_path / "unused")
    manifest.to_csv(manifest_path, sep="\t", index=False)
    full = make_splits(manifest, {"test_fraction": 0.34, "val_fraction": 0.34}, seed=0)
    write_json(tmp_path / "splits.json", full)
    params = {"size": SIZE, "per_scan": 6, "pos_fraction": 0.5, "volume_shape": [5, 6, 4]}
    assert main(["patches", "--manifest", str(manifest_path), "--splits", str(tmp_path / "splits.json"),
                 "--preprocessed", str(root / "preprocessed"), "--seed", "1",
                 "--params", json.dumps(params), "--out-dir", str(tmp_path / "patches")]) == 0
    again = pd.read_csv(tmp_path / "patches" / "index.tsv", sep="\t")
    assert again.equals(index.reset_index(drop=True))


def test_missing_scan_names_file(tmp_path: Path) -> None:
    manifest, splits = make_cohort(tmp_path)
    scan = sorted((tmp_path / "preprocessed").iterdir())[0]
    (scan / "brainmask.nii.gz").unlink()
    with pytest.raises(ValueError, match=rf"^{scan / 'brainmask.nii.gz'}: file not found"):
        extract_patches(manifest, splits, tmp_path / "preprocessed", tmp_path / "out", {}, 0)
    assert not (tmp_path / "out").exists()

"""Each dataset adapter on a crafted folder: BIDS (entities, runs, derivatives, classes), MSD,
nnU-Net v2, table. DICOM has its own file (it converts with dcm2niix)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mripipe.core.imageio import load_channels
from mripipe.data.manifest import build, read_manifest, read_meta
from mripipe.data.validate import validate

SHAPE = (8, 9, 10)


def _nii(path: Path, data: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = np.random.default_rng(len(str(path))).normal(50, 5, SHAPE).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 1.5, 1.0])), str(path))
    return path


def _bids(root: Path) -> None:
    for sub in ("sub-01", "sub-02"):
        anat = root / sub / "anat"
        for run in (1, 2):
            _nii(anat / f"{sub}_acq-mprage_run-{run}_T1w.nii.gz")
        _nii(anat / f"{sub}_acq-fast_T1w.nii.gz")
        _nii(anat / f"{sub}_FLAIR.nii.gz")
        der = root / "derivatives" / "lesions" / sub / "anat"
        _nii(der / f"{sub}_space-orig_desc-lesions_mask.nii.gz", np.zeros(SHAPE, np.uint8))
        _nii(der / f"{sub}_space-MNI_desc-lesions_mask.nii.gz", np.zeros(SHAPE, np.uint8))
    (root / "participants.tsv").write_text("participant_id\tgroup\nsub-01\tMS\nsub-02\tHC\n")


def test_bids_entities_runs_derivatives_and_class_column(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    _bids(root)
    params = {"source": "bids", "root": str(root), "class_column": "group",
              "bids": {"entities": {"T1w": {"acq": "mprage"}}, "run": "last", "label_entities": {"space": "orig"}}}
    out = tmp_path / "results" / "manifest.tsv"
    table = build(params, out)
    assert list(table["scan"]) == ["sub-01", "sub-02"]
    assert table.loc[0, "T1w"].endswith("sub-01_acq-mprage_run-2_T1w.nii.gz")  # run rule: last
    assert table.loc[0, "label"].endswith("sub-01_space-orig_desc-lesions_mask.nii.gz")
    assert list(table["class"]) == ["MS", "HC"]
    assert read_meta(out)["problems"] == []
    params["bids"]["entities"] = {}  # three T1w and two masks per subject, no rule to choose
    params["bids"]["run"] = "error"
    table = build(params, out)
    problems = read_meta(out)["problems"]
    assert [(p["scan"], p["check"]) for p in problems] == [("sub-01", "duplicate"), ("sub-02", "duplicate")]
    assert "run-1_T1w" in problems[0]["detail"] and table.loc[0, "T1w"] == ""


def test_bids_without_participants_and_with_sessions(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    _nii(root / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_T1w.nii.gz")
    _nii(root / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_T1w.nii.gz")
    table = build({"source": "bids", "root": str(root), "channels": ["T1w"]}, tmp_path / "m.tsv")
    assert list(table["scan"]) == ["sub-01_ses-01", "sub-01_ses-02"]
    assert list(table["class"]) == ["", ""] and list(table["label"]) == ["", ""]


def _msd(root: Path, n: int = 3) -> None:
    training = []
    for i in range(n):
        vols = np.stack([np.random.default_rng(i * 2 + k).normal(100 * (k + 1), 5, SHAPE) for k in range(2)], -1)
        _nii(root / "imagesTr" / f"BRATS_{i:03d}.nii.gz", vols.astype(np.float32))
        lab = np.zeros(SHAPE, np.uint8)
        lab[2:4, 2:4, 2:4] = 1 + i % 2
        _nii(root / "labelsTr" / f"BRATS_{i:03d}.nii.gz", lab)
        training.append({"image": f"./imagesTr/BRATS_{i:03d}.nii.gz", "label": f"./labelsTr/BRATS_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "edema", "2": "tumour"}, "training": training, "test": []}))


def test_msd_four_d_images_split_lazily_into_channels(tmp_path: Path) -> None:
    root = tmp_path / "Task01"
    _msd(root)
    out = tmp_path / "results" / "manifest.tsv"
    table = build({"source": "msd", "root": str(root)}, out)
    assert list(table.columns[3:5]) == ["FLAIR", "T1w"]
    assert table.loc[0, "FLAIR"] == table.loc[0, "T1w"] == str(root / "imagesTr" / "BRATS_000.nii.gz")
    assert read_meta(out)["labels"] == {"0": "background", "1": "edema", "2": "tumour"}
    chans = load_channels({"FLAIR": Path(table.loc[0, "FLAIR"]), "T1w": Path(table.loc[0, "T1w"])})
    means = [float(np.mean(nib.load(table.loc[0, "FLAIR"]).get_fdata()[..., k])) for k in range(2)]
    assert list(chans) == ["FLAIR", "T1w"] and means[0] < 150 < means[1]
    found = validate(out, {}, tmp_path / "results" / "v.tsv", tmp_path / "results" / "valid.tsv", ["label"])
    assert found.empty  # 4-D expected here; labels 1 and 2 declared


def test_msd_label_outside_the_declared_ones(tmp_path: Path) -> None:
    root = tmp_path / "Task01"
    _msd(root)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "edema"}
    (root / "dataset.json").write_text(json.dumps(meta))
    out = tmp_path / "results" / "manifest.tsv"
    build({"source": "msd", "root": str(root)}, out)
    found = validate(out, {}, tmp_path / "results" / "v.tsv", tmp_path / "results" / "valid.tsv")
    assert list(found["check"]) == ["label_values"]
    assert found.iloc[0]["file"] == str(root / "labelsTr" / "BRATS_001.nii.gz")


def test_nnunet_raw_dataset(tmp_path: Path) -> None:
    root = tmp_path / "Dataset001_MS"
    for case in ("ms_001", "ms_002"):
        _nii(root / "imagesTr" / f"{case}_0000.nii.gz")
        _nii(root / "labelsTr" / f"{case}.nii.gz", np.zeros(SHAPE, np.uint8))
    _nii(root / "imagesTr" / "ms_001_0001.nii.gz")  # ms_002 misses its FLAIR
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    out = tmp_path / "results" / "manifest.tsv"
    table = build({"source": "nnunet", "root": str(root)}, out)
    assert list(table["scan"]) == ["ms001", "ms002"]
    assert table.loc[0, "FLAIR"].endswith("ms_001_0001.nii.gz") and table.loc[1, "FLAIR"] == ""
    assert table.loc[1, "label"].endswith("labelsTr/ms_002.nii.gz")
    meta = read_meta(out)
    assert meta["labels"] == {"0": "background", "1": "lesion"}
    assert [(p["scan"], p["check"]) for p in meta["problems"]] == [("ms002", "missing")]
    found = validate(out, {}, tmp_path / "results" / "v.tsv", tmp_path / "results" / "valid.tsv")
    assert list(found["scan"]) == ["ms002"]
    assert list(read_manifest(tmp_path / "results" / "valid.tsv")["scan"]) == ["ms001"]


def test_table_relative_paths_and_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "study"
    for s in ("a", "b"):
        _nii(root / "img" / f"{s}_t1.nii.gz")
        _nii(root / "img" / f"{s}_flair.nii.gz")
    (root / "scans.csv").write_text(
        "subject,session,T1w,FLAIR,lesions,dx\n"
        "a,1,img/a_t1.nii.gz,img/a_flair.nii.gz,,MS\n"
        "b,,img/b_t1.nii.gz,img/b_flair.nii.gz,,HC\n"
        "b,,img/b_t1.nii.gz,img/b_flair.nii.gz,,HC\n")
    out = tmp_path / "results" / "manifest.tsv"
    table = build({"source": "table", "root": str(root), "class_column": "dx", "table": {"path": "scans.csv"}}, out)
    assert list(table["scan"]) == ["sub-a_ses-1", "sub-b"]
    assert table.loc[0, "T1w"] == str(root / "img" / "a_t1.nii.gz")
    assert list(table["class"]) == ["MS", "HC"]
    assert [(p["scan"], p["check"]) for p in read_meta(out)["problems"]] == [("sub-b", "duplicate")]


def test_unknown_table_columns_are_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "t.tsv").write_text("subject\tT1\n")
    with pytest.raises(ValueError, match="t.tsv: missing columns"):
        build({"source": "table", "root": str(tmp_path), "table": {"path": "t.tsv"}})

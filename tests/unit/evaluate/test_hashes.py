"""Stage hashes: what they cover (computed values, not file bytes) and where two runs part."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mripipe.evaluate.hashes import (
    file_hash,
    scan_hashes,
    stage_hashes,
    weights_stage,
    where_runs_part,
)


def _nifti(path: Path, data: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))


def test_a_nifti_hash_covers_voxels_and_affine_not_the_gzip_header(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    _nifti(tmp_path / "a.nii.gz", data)
    raw = gzip.decompress((tmp_path / "a.nii.gz").read_bytes())
    time.sleep(1.1)
    (tmp_path / "b.nii.gz").write_bytes(gzip.compress(raw, mtime=time.time()))  # other header time
    assert (tmp_path / "a.nii.gz").read_bytes() != (tmp_path / "b.nii.gz").read_bytes()
    assert file_hash(tmp_path / "a.nii.gz") == file_hash(tmp_path / "b.nii.gz")
    data[1, 2, 3] = np.nextafter(data[1, 2, 3], np.float32(100))  # one last bit
    _nifti(tmp_path / "c.nii.gz", data)
    assert file_hash(tmp_path / "c.nii.gz") != file_hash(tmp_path / "a.nii.gz")


def test_a_checkpoint_hash_covers_the_weights_only(tmp_path: Path) -> None:
    weights = {"conv.weight": torch.ones(2, 3), "conv.bias": torch.zeros(2)}
    torch.save({"model": weights, "mlflow_run_id": "abc", "value": 0.5}, tmp_path / "a.pt")
    torch.save({"model": weights, "mlflow_run_id": "xyz", "value": 0.5}, tmp_path / "b.pt")
    assert file_hash(tmp_path / "a.pt") == file_hash(tmp_path / "b.pt")
    other = {"conv.weight": torch.ones(2, 3), "conv.bias": torch.tensor([0.0, 1e-12])}
    torch.save({"model": other, "mlflow_run_id": "abc", "value": 0.5}, tmp_path / "c.pt")
    assert file_hash(tmp_path / "c.pt") != file_hash(tmp_path / "a.pt")


def test_stages_in_dag_order_and_the_first_that_differs(tmp_path: Path) -> None:
    res = tmp_path / "results"
    for scan in ("sub-001_ses-01", "sub-002_ses-01"):
        (res / "preprocessed" / scan).mkdir(parents=True)
        _nifti(res / "preprocessed" / scan / "image.nii.gz", np.ones((2, 2, 2), np.float32))
    (res / "patches").mkdir()
    np.save(res / "patches" / "x.npy", np.zeros(3))
    ckpts = []
    for sub in ("trials/trial-000", "trials/trial-001", "rungs/1/slot-000"):
        (res / "seg" / sub).mkdir(parents=True)
        torch.save({"model": {"w": torch.ones(1)}}, res / "seg" / sub / "checkpoint.pt")
        ckpts.append(res / "seg" / sub / "checkpoint.pt")
    (res / "seg" / "model").mkdir()
    torch.save({"w": torch.ones(1)}, res / "seg" / "model" / "weights.pt")
    (res / "seg" / "model" / "model.json").write_text('{"mlflow": {"run_id": "random"}}')
    (res / "seg" / "predictions").mkdir()
    _nifti(res / "seg" / "predictions" / "sub-002_ses-01_prob.nii.gz", np.zeros((2, 2, 2), np.float32))
    scans = sorted((res / "preprocessed").iterdir())
    ref = stage_hashes(scans, res / "patches", ckpts, [res / "seg" / "model"], [res / "seg" / "predictions"])
    assert [s["stage"] for s in ref] == ["preprocess", "patches", "seg rung 0", "seg rung 1",
                                         "seg package", "seg predictions"]
    assert weights_stage(Path("results/seg/folds/fold-2/checkpoint.pt")) == ("seg folds", "fold-2")
    assert where_runs_part(ref, ref) == ([
        "preprocess: identical (2/2)", "patches: identical (1/1)", "seg rung 0: identical (2/2)",
        "seg rung 1: identical (1/1)", "seg package: identical (1/1)", "seg predictions: identical (1/1)"], None)
    torch.save({"model": {"w": torch.full((1,), 2.0)}}, ckpts[1])
    got = stage_hashes(scans, res / "patches", ckpts, [res / "seg" / "model"], [res / "seg" / "predictions"])
    lines, first = where_runs_part(ref, got)
    assert first == "seg rung 0"
    assert lines[2] == "seg rung 0: trial-001 differ (1 of 2)"
    assert scan_hashes(scans) == ref[0]["items"]
    assert list(ref[4]["items"]) == ["weights.pt"]  # model.json names a random MLflow run
    old = [dict(s, items=dict(s["items"], **{"model.json": "x"})) if s["stage"] == "seg package" else s
           for s in ref]  # a file published with it listed: not compared
    assert where_runs_part(old, ref)[0][4] == "seg package: identical (1/1)"

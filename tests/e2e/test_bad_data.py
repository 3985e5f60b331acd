"""End to end on a BIDS copy of the tiny phantom with broken scans: the pipeline finishes on the
good ones (data.on_invalid: exclude), lists every bad one with the check that caught it, and
leaves the data folder byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _snakemake(workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1"}
    cmd = [str(BIN / "snakemake"), "--configfile", "config/e2e.yaml", "config/bad.yaml", "--cores", "2"]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)

#: scan -> the checks validation must report for it (several kinds per scan keep the cohort big
#: enough to split); sub-008's T1w is replaced by a non-brain volume that passes validation and
#: fails the registration-quality check in preprocessing.
EXPECTED = {
    "sub-005_ses-02": {"truncated", "constant"},
    "sub-006_ses-02": {"grid", "direction"},
    "sub-007_ses-01": {"finite", "duplicate"},
    "sub-009_ses-02": {"pixel_type", "dimension"},
}
LOST_IN_PREPROCESSING = "sub-008_ses-01"
#: the orientations (nibabel ``ornt``: new axis <- old axis, flipped) the labels of the good scans
#: are rewritten in, in turn: the same voxels in space with permuted or flipped axes (as dcm2niix
#: writes them), which validation, preprocessing and native-space evaluation must all accept
ORIENTATIONS = [[[1, 1], [0, 1], [2, -1]], [[2, 1], [0, -1], [1, 1]], [[0, -1], [1, 1], [2, 1]]]


def _anat(root: Path, scan: str) -> Path:
    sub, ses = scan.split("_")
    return root / sub / ses / "anat"


def _resave(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine), str(path))


def permute_labels(root: Path) -> list[str]:
    """Rewrite the label of every scan left intact with its axes permuted or flipped; the scans."""
    broken = set(EXPECTED) | {LOST_IN_PREPROCESSING}
    done = []
    for k, mask in enumerate(sorted((root / "derivatives" / "lesions").rglob("*_mask.nii.gz"))):
        scan = "_".join(mask.name.split("_")[:2])
        if scan in broken:
            continue
        img = nib.load(str(mask))
        nib.save(img.as_reoriented(np.array(ORIENTATIONS[k % len(ORIENTATIONS)])), str(mask))
        done.append(scan)
    return done


def break_scans(root: Path) -> None:
    """Break a BIDS copy of the phantom: every kind of problem from issue 11."""
    a = _anat(root, "sub-005_ses-02")
    flair = a / "sub-005_ses-02_FLAIR.nii.gz"
    raw = flair.read_bytes()
    flair.write_bytes(raw[: len(raw) // 3])  # truncated: the last two thirds missing
    t1 = a / "sub-005_ses-02_T1w.nii.gz"
    _resave(t1, np.full(nib.load(str(t1)).shape, 300, np.int16))  # constant
    mask = root / "derivatives" / "lesions" / "sub-006" / "ses-02" / "anat"
    mask = next(mask.glob("*_mask.nii.gz"))
    img = nib.load(str(mask))
    moved = img.affine.copy()
    moved[:3, :3] *= 1.5
    moved[:3, 3] += [40.0, 0.0, 0.0]  # other spacing, origin 40 mm away
    _resave(mask, np.asarray(img.dataobj), moved)
    a = _anat(root, "sub-007_ses-01")
    t1 = a / "sub-007_ses-01_T1w.nii.gz"
    data = np.asarray(nib.load(str(t1)).dataobj).astype(np.float32)
    data[5:8, 5:8, 5:8] = np.nan
    _resave(t1, data)
    flair = a / "sub-007_ses-01_FLAIR.nii.gz"
    shutil.copy2(flair, a / "sub-007_ses-01_run-2_FLAIR.nii.gz")  # two FLAIR runs
    flair = _anat(root, "sub-006_ses-02") / "sub-006_ses-02_FLAIR.nii.gz"
    img = nib.load(str(flair))
    shear = img.affine.copy()
    shear[:3, 1] += 0.5 * shear[:3, 0]  # ITK would silently make this orthogonal
    _resave(flair, np.asarray(img.dataobj), shear)
    a = _anat(root, "sub-009_ses-02")
    flair = a / "sub-009_ses-02_FLAIR.nii.gz"
    vol = np.asarray(nib.load(str(flair)).dataobj)
    rgb = np.zeros(vol.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = rgb["G"] = rgb["B"] = (255 * vol / vol.max()).astype(np.uint8)
    _resave(flair, rgb)
    t1 = a / "sub-009_ses-02_T1w.nii.gz"
    _resave(t1, np.asarray(nib.load(str(t1)).dataobj)[:, :, 10])  # 2-D
    t1 = _anat(root, LOST_IN_PREPROCESSING) / f"{LOST_IN_PREPROCESSING}_T1w.nii.gz"
    shape = nib.load(str(t1)).shape
    blobs = np.random.default_rng(0).gamma(2.0, 200.0, shape).astype(np.float32)
    _resave(t1, blobs)  # valid, but no brain: the template registration cannot be good


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory, workflow_copy: Callable[[Path], Path]
            ) -> tuple[Path, str, list[str]]:
    workdir = workflow_copy(tmp_path_factory.mktemp("bad"))
    (workdir / "config" / "bad.yaml").write_text("data:\n  source: bids\n  root: data/bad\n")
    cfg = json.dumps({"n_subjects": 9, "two_session_fraction": 0.34, "t1w_spacing": [3, 3, 3], "flair_spacing": [3, 3, 4.5]})
    subprocess.run([str(BIN / "mripipe"), "phantom", "--out", "data/phantom", "--seed", "7",
                    "--workers", "2", "--params", cfg], cwd=workdir, check=True, capture_output=True)
    shutil.copytree(workdir / "data" / "phantom", workdir / "data" / "bad")
    break_scans(workdir / "data" / "bad")
    permuted = permute_labels(workdir / "data" / "bad")
    before = tree_hash(workdir / "data" / "bad")
    proc = _snakemake(workdir)
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed\n{proc.stderr[-5000:]}\n{logs}")
    return workdir, before, permuted


def test_every_bad_scan_is_listed_with_its_checks(bad_run: tuple[Path, str, list[str]]) -> None:
    workdir, _, _ = bad_run
    found = pd.read_csv(workdir / "results" / "validation.tsv", sep="\t")
    errors = found[found["severity"] == "error"]
    assert {s: set(g["check"]) for s, g in errors.groupby("scan")} == EXPECTED
    assert all(str(workdir / "data" / "bad") in f or f.startswith("data/bad") for f in errors["file"])
    log = (workdir / "logs" / "validate.log").read_text()
    assert all(f in log for f in errors["file"])  # every problem logged in one go, naming the file


def test_finishes_on_the_good_scans(bad_run: tuple[Path, str, list[str]]) -> None:
    workdir, _, _ = bad_run
    res = workdir / "results"
    ready = set(pd.read_csv(res / "manifest.ready.tsv", sep="\t")["scan"])
    everything = set(pd.read_csv(res / "manifest.tsv", sep="\t")["scan"])
    assert ready == everything - set(EXPECTED) - {LOST_IN_PREPROCESSING}
    status = json.loads((res / "preprocessed" / LOST_IN_PREPROCESSING / "status.json").read_text())
    assert status["ok"] is False and status["check"] == "registration"
    summary = json.loads((res / "summary.json").read_text())
    assert summary["excluded"]["n_scans"] == len(EXPECTED) + 1
    assert summary["excluded"]["by_stage"] == {"validate": len(EXPECTED), "preprocess": 1}
    assert set(summary["excluded"]["scans"]) == set(EXPECTED) | {LOST_IN_PREPROCESSING}
    for exp in ("lesion_seg", "burden_cls"):
        assert (res / exp / "eval" / "metrics.json").is_file()


def test_data_folder_is_untouched(bad_run: tuple[Path, str, list[str]]) -> None:
    workdir, before, _ = bad_run
    assert tree_hash(workdir / "data" / "bad") == before


def test_labels_with_permuted_axes_are_accepted_everywhere(bad_run: tuple[Path, str, list[str]]) -> None:
    """The good scans' labels, rewritten with permuted or flipped axes, pass validation, are
    preprocessed with their lesions, and native-space evaluation scores the test scans among them
    (it read them on the prediction's grid instead of stopping the run)."""
    workdir, _, permuted = bad_run
    res = workdir / "results"
    assert len(permuted) >= 6
    found = pd.read_csv(res / "validation.tsv", sep="\t")
    assert not set(found.loc[found["check"] == "grid", "scan"]) & set(permuted)
    ready = set(pd.read_csv(res / "manifest.ready.tsv", sep="\t")["scan"])
    assert set(permuted) <= ready
    voxels = {s: json.loads((res / "preprocessed" / s / "qc.json").read_text())["label_voxels"] for s in permuted}
    assert sum(v > 0 for v in voxels.values()) >= len(permuted) // 2, voxels
    per_case = pd.read_csv(res / "lesion_seg" / "eval" / "per_case.tsv", sep="\t")
    scored = per_case[per_case["scan"].isin(permuted)]
    assert len(scored) >= 1 and scored["dice"].notna().all()
    assert (scored["n_lesions"] > 0).any()

"""One test per integrity-check kind, on crafted files: the exact check fires, on the bad file, and
the other scans stay valid."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mripipe.core.errors import InputError
from mripipe.data.validate import validate

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (12, 10, 8)


def _nii(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 10, SHAPE).astype(np.float32)


def _label() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[3:6, 3:6, 3:5] = 1
    return lab


def _dataset(tmp_path: Path, n: int = 4) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        scan = f"sub-{i:03d}"
        d = tmp_path / "data" / scan
        rows.append({"subject": scan, "session": "", "scan": scan,
                     "T1w": _nii(d / "t1.nii.gz", _image(i)), "FLAIR": _nii(d / "flair.nii.gz", _image(10 + i)),
                     "label": _nii(d / "mask.nii.gz", _label()), "class": "low", "truth": "", "source": ""})
    return rows


def _run(tmp_path: Path, rows: list[dict[str, str]], meta: dict | None = None, needs: tuple[str, ...] = (),
         **params: object) -> pd.DataFrame:
    manifest = tmp_path / "results" / "manifest.tsv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    if meta is not None:
        manifest.with_suffix(".json").write_text(json.dumps(meta))
    return validate(manifest, dict(params), tmp_path / "results" / "validation.tsv",
                    tmp_path / "results" / "manifest.valid.tsv", needs)


def _only(found: pd.DataFrame, check: str, file: str, caplog: pytest.LogCaptureFixture) -> pd.Series:
    """The one problem found: the expected check, on the expected file, logged with its name."""
    assert list(found["check"]) == [check], found.to_string()
    row = found.iloc[0]
    assert row["file"] == file
    assert any(file in r.getMessage() and check in r.getMessage() for r in caplog.records)
    return row


def _valid(tmp_path: Path) -> list[str]:
    return list(pd.read_csv(tmp_path / "results" / "manifest.valid.tsv", sep="\t")["scan"])


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


def test_clean_dataset_has_no_problem(tmp_path: Path) -> None:
    found = _run(tmp_path, _dataset(tmp_path), needs=("label", "class"))
    assert found.empty
    assert _valid(tmp_path) == ["sub-000", "sub-001", "sub-002", "sub-003"]


def test_truncated_gzip_is_unreadable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    path = Path(rows[1]["FLAIR"])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])  # the last two thirds missing
    _only(_run(tmp_path, rows), "readable", str(path), caplog)
    assert "sub-001" not in _valid(tmp_path)


def test_missing_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    Path(rows[0]["T1w"]).unlink()
    _only(_run(tmp_path, rows), "missing", rows[0]["T1w"], caplog)


def test_adapter_problems_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A channel the adapter found twice (two runs) is listed with the files."""
    rows = _dataset(tmp_path)
    rows[2]["T1w"] = ""
    meta = {"labels": None, "problems": [{"scan": "sub-002", "file": "/d/anat", "check": "duplicate",
                                          "detail": "several T1w images (a_run-1_T1w, a_run-2_T1w)", "severity": "error"}]}
    _only(_run(tmp_path, rows, meta), "duplicate", "/d/anat", caplog)
    assert _valid(tmp_path) == ["sub-000", "sub-001", "sub-003"]


def test_2d_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    rows[0]["FLAIR"] = _nii(tmp_path / "flat.nii.gz", _image(0)[:, :, 0])
    row = _only(_run(tmp_path, rows), "dimension", rows[0]["FLAIR"], caplog)
    assert "2-D" in row["detail"]


def test_unexpected_4d_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    rows[0]["FLAIR"] = _nii(tmp_path / "4d.nii.gz", np.stack([_image(0), _image(1)], -1))
    _only(_run(tmp_path, rows), "dimension", rows[0]["FLAIR"], caplog)


def test_4d_file_named_by_its_channels_is_fine(tmp_path: Path) -> None:
    rows = _dataset(tmp_path)
    both = _nii(tmp_path / "4d.nii.gz", np.stack([_image(0), _image(1)], -1))
    for r in rows:
        r["T1w"] = r["FLAIR"] = both
    assert _run(tmp_path, rows).empty


def test_rgb_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.random.default_rng(0).integers(0, 255, SHAPE)
    rows[3]["FLAIR"] = _nii(tmp_path / "rgb.nii.gz", rgb)
    _only(_run(tmp_path, rows), "pixel_type", rows[3]["FLAIR"], caplog)


def test_nan_voxels(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    img = _image(5)
    img[2, 2, 2:4] = np.nan
    rows[1]["T1w"] = _nii(tmp_path / "nan.nii.gz", img)
    row = _only(_run(tmp_path, rows), "finite", rows[1]["T1w"], caplog)
    assert row["detail"].startswith("2 voxel(s)")


def test_constant_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    rows[1]["T1w"] = _nii(tmp_path / "const.nii.gz", np.full(SHAPE, 7, np.int16))
    _only(_run(tmp_path, rows), "constant", rows[1]["T1w"], caplog)


def test_sheared_direction(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    sheared = AFFINE.copy()
    sheared[0, 1] = 0.6  # x moves with the y index: shear
    rows[2]["FLAIR"] = _nii(tmp_path / "shear.nii.gz", _image(2), sheared)
    _only(_run(tmp_path, rows), "direction", rows[2]["FLAIR"], caplog)


def test_implausible_spacing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    rows[0]["FLAIR"] = _nii(tmp_path / "huge.nii.gz", _image(0), np.diag([2.0, 2.0, 12.0, 1.0]))
    row = _only(_run(tmp_path, rows, needs=()), "spacing", rows[0]["FLAIR"], caplog)
    assert "outside [0.1, 10]" in row["detail"]


def test_spacing_far_from_the_median(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path, n=5)
    rows[4]["FLAIR"] = _nii(tmp_path / "fine.nii.gz", _image(4), np.diag([0.3, 0.3, 0.3, 1.0]))
    row = _only(_run(tmp_path, rows), "spacing", rows[4]["FLAIR"], caplog)
    assert "median" in row["detail"]


def test_label_on_another_grid(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    moved = AFFINE.copy()
    moved[:3, 3] = [40.0, 0.0, 0.0]  # origin 40 mm away
    rows[1]["label"] = _nii(tmp_path / "moved.nii.gz", _label(), moved)
    row = _only(_run(tmp_path, rows), "grid", rows[1]["label"], caplog)
    assert row["severity"] == "error"
    assert "sub-001" not in _valid(tmp_path)


def _reoriented(path: Path, ornt: list[list[int]], affine: np.ndarray = AFFINE) -> str:
    """The test label written with its axes permuted and flipped by ``ornt`` (nibabel's own
    reorientation: the same voxels in space, as dcm2niix may write them)."""
    img = nib.Nifti1Image(_label(), affine).as_reoriented(np.array(ornt))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return str(path)


#: (new axis <- old axis, flipped): a dcm2niix-style swap of x and y, flips of x and z, all three moved
ORIENTATIONS = [[[1, 1], [0, 1], [2, 1]], [[0, -1], [1, 1], [2, -1]], [[2, -1], [0, 1], [1, -1]]]


def test_label_with_permuted_or_flipped_axes_is_on_the_grid(tmp_path: Path) -> None:
    rows = _dataset(tmp_path)
    for i, ornt in enumerate(ORIENTATIONS):
        rows[i]["label"] = _reoriented(tmp_path / f"reoriented-{i}.nii.gz", ornt)
        data = np.asanyarray(nib.load(rows[i]["label"]).dataobj)
        assert data.shape != SHAPE or not np.array_equal(data, _label())  # the voxels really moved
    assert _run(tmp_path, rows, needs=("label",)).empty
    assert _valid(tmp_path) == [r["scan"] for r in rows]


@pytest.mark.parametrize(("change", "named"), [("shift", "origin shifted"), ("scale", "spacing")])
def test_label_a_voxel_off_or_rescaled_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                  change: str, named: str) -> None:
    rows = _dataset(tmp_path)
    moved = AFFINE.copy()
    if change == "shift":
        moved[0, 3] += 2.0  # one voxel along x
    else:
        moved[:3, :3] *= 1.25
    rows[2]["label"] = _reoriented(tmp_path / f"{change}.nii.gz", ORIENTATIONS[2], moved)
    row = _only(_run(tmp_path, rows), "grid", rows[2]["label"], caplog)
    assert row["severity"] == "error" and named in row["detail"] and "t1.nii.gz" in row["detail"], row["detail"]
    assert "sub-002" not in _valid(tmp_path)


def test_label_on_another_grid_resampled_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    rows[1]["label"] = _nii(tmp_path / "coarse.nii.gz", _label()[::2, ::2, ::2], np.diag([4.0, 4.0, 4.0, 1.0]))
    row = _only(_run(tmp_path, rows, resample_labels=True), "grid", rows[1]["label"], caplog)
    assert row["severity"] == "warning"
    assert "sub-001" in _valid(tmp_path)


def test_label_values_not_integers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    rows[0]["label"] = _nii(tmp_path / "soft.nii.gz", _label().astype(np.float32) * 0.5)
    _only(_run(tmp_path, rows), "label_values", rows[0]["label"], caplog)


def test_label_values_not_declared(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    lab = _label()
    lab[0, 0, 0] = 4
    rows[0]["label"] = _nii(tmp_path / "four.nii.gz", lab)
    row = _only(_run(tmp_path, rows, {"labels": {"0": "background", "1": "lesion"}, "problems": []}),
                "label_values", rows[0]["label"], caplog)
    assert "[4]" in row["detail"]


def test_label_values_not_in_the_configured_multiclass_map(tmp_path: Path) -> None:
    rows = _dataset(tmp_path)
    lab = _label()
    lab[0, 0, 0] = 2
    rows[0]["label"] = _nii(tmp_path / "two.nii.gz", lab)
    assert _run(tmp_path, rows, labels={"a": 1, "b": 2}).empty  # 0, 1 and 2 are declared
    found = _run(tmp_path, rows, labels={"a": 1, "b": 3})
    assert list(found["check"]) == ["label_values"] and "[2]" in found["detail"].iloc[0]
    assert _run(tmp_path, rows, labels={"lesion": 1}).empty  # one class: any instance id


def test_missing_label_and_class_where_needed(tmp_path: Path) -> None:
    rows = _dataset(tmp_path)
    rows[0]["label"] = ""
    rows[1]["class"] = ""
    manifest = str(tmp_path / "results" / "manifest.tsv")
    found = _run(tmp_path, rows, {"labels": None, "class_file": "/d/participants.tsv", "problems": []},
                 needs=("label", "class"))
    assert list(zip(found["scan"], found["check"], found["file"], strict=True)) == [
        ("sub-000", "missing", manifest), ("sub-001", "class", "/d/participants.tsv")]
    assert _run(tmp_path, rows).empty  # not needed: no problem


def test_every_problem_at_once_and_fail_mode(tmp_path: Path) -> None:
    rows = _dataset(tmp_path, n=5)
    rows[0]["T1w"] = _nii(tmp_path / "const.nii.gz", np.zeros(SHAPE, np.int16))
    rows[1]["FLAIR"] = _nii(tmp_path / "flat.nii.gz", _image(1)[:, :, 0])
    with gzip.open(rows[2]["label"], "wb") as fh:
        fh.write(b"not a nifti")
    found = _run(tmp_path, rows)
    assert list(found["check"]) == ["constant", "dimension", "readable"]
    assert _valid(tmp_path) == ["sub-003", "sub-004"]
    with pytest.raises(InputError, match="3 invalid scan"):
        _run(tmp_path, rows, on_invalid="fail")

"""One test per integrity-check kind, on crafted files: the exact check fires, on the bad file, and
the other scans stay valid."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mripipe.core.errors import InputError
from mripipe.data.header import Header
from mripipe.data.validate import validate
from mripipe.data.voxels import slabs

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


def test_truncated_gzip_says_how_much_is_there(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    path = Path(rows[1]["FLAIR"])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])  # the last two thirds missing
    row = _only(_run(tmp_path, rows), "truncated", str(path), caplog)
    assert "of the 3,840 bytes its header promises" in row["detail"]  # 12 x 10 x 8 float32
    assert "sub-001" not in _valid(tmp_path)


def test_corrupt_gzip_is_unreadable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    path = Path(rows[1]["FLAIR"])
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)  # a run of zeros inside the deflate stream
    path.write_bytes(bytes(raw))
    _only(_run(tmp_path, rows), "readable", str(path), caplog)


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


# --- memory-safe reading: sizes refused from the headers alone -----------------------------------


def test_implausible_voxel_count_is_refused_before_decompressing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        sparse_nifti: Callable[..., Path]) -> None:
    """1024^3 voxels (a 3 MB file of 1 GiB) against a median of 960: one line, not a byte read."""
    import mripipe.data.inspect as inspect

    streamed: list[Path] = []

    def recording(header: Header, *args: object) -> object:
        streamed.append(header.path)
        return slabs(header, *args)

    monkeypatch.setattr(inspect, "slabs", recording)
    rows = _dataset(tmp_path)
    rows[2]["FLAIR"] = str(sparse_nifti(tmp_path / "huge.nii.gz", (1024, 1024, 1024), spacing=0.1))
    row = _only(_run(tmp_path, rows), "voxels", rows[2]["FLAIR"], caplog)
    assert row["detail"].startswith("1,073,741,824 voxels (1024x1024x1024 uint8, 1 GiB decompressed)")
    assert "the FLAIR median of 960" in row["detail"] and "not decompressed" in row["detail"]
    assert Path(rows[2]["FLAIR"]) not in streamed and len(streamed) == 11


def test_field_of_view_beyond_the_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    rows[3]["T1w"] = _nii(tmp_path / "wide.nii.gz", _image(3), np.diag([60.0, 2.0, 2.0, 1.0]))
    row = _only(_run(tmp_path, rows), "fov", rows[3]["T1w"], caplog)
    assert row["detail"].startswith("field of view 720 x 20 x 16 mm is beyond data.max_fov_mm 500")


# --- headers told precisely ------------------------------------------------------------------------


def _two_transforms(path: Path, data: np.ndarray, shift_mm: float) -> str:
    """sform code 2 (aligned: ITK then reads the qform) at AFFINE, qform code 1 shifted in x."""
    img = nib.Nifti1Image(data, AFFINE)
    qform = AFFINE.copy()
    qform[0, 3] += shift_mm
    img.set_sform(AFFINE, code=2)
    img.set_qform(qform, code=1)
    nib.save(img, str(path))
    return str(path)


def test_qform_and_sform_apart_is_named_on_the_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Not the label's grid: the image's two transforms, with the distance."""
    rows = _dataset(tmp_path)
    rows[1]["T1w"] = _two_transforms(tmp_path / "two.nii.gz", _image(1), 30.0)
    row = _only(_run(tmp_path, rows), "xform", rows[1]["T1w"], caplog)
    assert "voxel corners up to 30 mm apart" in row["detail"] and "data.xform" in row["detail"]
    assert row["severity"] == "error"


def test_xform_choice_uses_that_transform_with_a_warning(tmp_path: Path) -> None:
    rows = _dataset(tmp_path)
    rows[1]["T1w"] = _two_transforms(tmp_path / "two.nii.gz", _image(1), 30.0)
    found = _run(tmp_path, rows, xform="sform")  # the label's grid: only the warning
    assert list(zip(found["check"], found["severity"], strict=True)) == [("xform", "warning")]
    assert "the sform is used" in found["detail"].iloc[0] and "sub-001" in _valid(tmp_path)
    found = _run(tmp_path, rows, xform="qform")  # 30 mm off the label's grid
    assert list(zip(found["file"], found["check"], strict=True)) == [(rows[1]["label"], "grid"), (rows[1]["T1w"], "xform")]


def test_broken_link_and_link_loop(tmp_path: Path) -> None:
    rows = _dataset(tmp_path)
    broken, loop = tmp_path / "broken_T1w.nii.gz", tmp_path / "loop_T1w.nii.gz"
    broken.symlink_to(tmp_path / "gone.nii.gz")
    loop.symlink_to(tmp_path / "back.nii.gz")
    (tmp_path / "back.nii.gz").symlink_to(loop)
    rows[0]["T1w"], rows[1]["T1w"] = str(broken), str(loop)
    found = _run(tmp_path, rows)
    assert list(zip(found["file"], found["check"], strict=True)) == [(str(broken), "link"), (str(loop), "link")]
    assert found["detail"].tolist() == [f"broken symbolic link to {tmp_path / 'gone.nii.gz'} (target not found)",
                                        "symbolic link loop: the path never reaches a file"]


def test_bids_link_loop_is_indexed_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Not "scan sub-002 has no T1w image": the adapter keeps the link, validation names it."""
    from mripipe.data.manifest import build

    root = tmp_path / "bids"
    for i in range(3):
        anat = root / f"sub-{i:03d}" / "anat"
        anat.mkdir(parents=True)
        _nii(anat / f"sub-{i:03d}_T1w.nii.gz", _image(i))
    loop = root / "sub-002" / "anat" / "sub-002_T1w.nii.gz"
    loop.unlink()
    loop.symlink_to(loop.with_name("other.nii.gz"))
    loop.with_name("other.nii.gz").symlink_to(loop)
    manifest = tmp_path / "results" / "manifest.tsv"
    build({"source": "bids", "root": str(root), "channels": ["T1w"]}, manifest)
    found = validate(manifest, {}, manifest.with_name("validation.tsv"), manifest.with_name("valid.tsv"))
    _only(found, "link", str(loop), caplog)


def test_truncated_uncompressed_file_says_promised_and_present_bytes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    path = tmp_path / "half.nii"
    nib.save(nib.Nifti1Image(_image(0), AFFINE), str(path))
    path.write_bytes(path.read_bytes()[: (352 + 3840) // 2])
    rows[0]["FLAIR"] = str(path)
    row = _only(_run(tmp_path, rows), "truncated", str(path), caplog)
    assert row["detail"] == "the header promises 4,192 bytes (352 header + 3,840 voxel data: 12x10x8 float32); the file has 2,096"


def _wrapped(seed: int) -> np.ndarray:
    """A magnitude image exported as uint16 and read as int16: its bright voxels wrap negative."""
    img = np.zeros(SHAPE, np.uint16)
    img[2:10, 2:8, 2:6] = np.random.default_rng(seed).integers(20000, 60000, (8, 6, 4))
    return img.view(np.int16)


def test_large_negative_intensities_in_a_magnitude_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _dataset(tmp_path)
    rows[2]["T1w"] = _nii(tmp_path / "wrapped.nii.gz", _wrapped(2))
    row = _only(_run(tmp_path, rows), "overflow", rows[2]["T1w"], caplog)
    assert "integer overflow is the likely cause" in row["detail"] and "stored as int16" in row["detail"]


def test_signed_channels_may_be_negative(tmp_path: Path) -> None:
    rows = [{("CT" if k == "T1w" else k): v for k, v in r.items()} for r in _dataset(tmp_path)]
    rows[2]["CT"] = _nii(tmp_path / "hounsfield.nii.gz", _wrapped(2))
    assert _run(tmp_path, rows).empty


def _head(t1: bool, seed: int, n: int = 40) -> np.ndarray:
    """A spherical head at 4 mm: scalp, skull, CSF, cortex, white matter (T1w: WM brightest;
    FLAIR: cortex brightest)."""
    r = np.sqrt((((np.indices((n, n, n)) - (n - 1) / 2) * 4.0) ** 2).sum(0))
    levels = (100, 60, 20, 5, 80) if t1 else (60, 90, 10, 5, 60)  # WM, GM, CSF, skull, scalp
    img = np.zeros(r.shape, np.float32)
    for (lo, hi), value in zip(((0, 48), (48, 56), (56, 60), (60, 68), (68, 75)), levels, strict=True):
        img[(r >= lo) & (r < hi)] = value
    return img + np.abs(np.random.default_rng(seed).normal(0, 3, img.shape)).astype(np.float32)


def test_channel_whose_contrast_contradicts_its_name(tmp_path: Path) -> None:
    """sub-002's T1w and FLAIR swapped: each is flagged (a warning), the scan stays valid."""
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    rows = []
    for i in range(5):
        d = tmp_path / f"sub-{i:03d}"
        t1, flair = (False, True) if i == 2 else (True, False)
        rows.append({"subject": d.name, "session": "", "scan": d.name,
                     "T1w": _nii(d / "t1.nii.gz", _head(t1, i), affine),
                     "FLAIR": _nii(d / "flair.nii.gz", _head(flair, 10 + i), affine),
                     "label": "", "class": "", "truth": "", "source": ""})
    found = _run(tmp_path, rows)
    assert list(zip(found["file"], found["check"], found["severity"], strict=True)) == [
        (rows[2]["FLAIR"], "contrast", "warning"), (rows[2]["T1w"], "contrast", "warning")]
    assert found["detail"].iloc[1].startswith("T1w image whose contrast looks like FLAIR: depth profile (")
    assert "sub-002" in _valid(tmp_path)


def test_other_formats_are_read_through_itk_in_slabs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """MHA and NRRD headers through SimpleITK, their voxels in z-slabs: fine, and a constant one."""
    import SimpleITK as sitk

    rows = _dataset(tmp_path)
    for i, ext in ((0, "mha"), (1, "nrrd")):
        img = sitk.GetImageFromArray(_image(i).transpose(2, 1, 0))
        img.SetSpacing((2.0, 2.0, 2.0))
        img.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # LPS of the labels' RAS grid
        sitk.WriteImage(img, str(tmp_path / f"t1_{i}.{ext}"))
        rows[i]["T1w"] = str(tmp_path / f"t1_{i}.{ext}")
    rows[2]["T1w"] = str(tmp_path / "flat.mha")
    flat = sitk.Image([12, 10, 8], sitk.sitkInt16) + 7
    flat.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(flat, rows[2]["T1w"])
    _only(_run(tmp_path, rows), "constant", rows[2]["T1w"], caplog)

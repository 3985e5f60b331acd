"""The per-scan chain on a small synthetic scan with known pose, bias and labels (4 mm)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mripipe.core.imageio import ImageError, load_channels, read_image, to_array
from mripipe.core.template import load_template, reference_grid
from mripipe.preprocess import registration
from mripipe.preprocess.pipeline import preprocess_scan

FAST = {
    "n4_shrink": 2,
    "n4_iterations": [10],
    "coreg_spacing": 4.0,
    "template_spacing": 4.0,
    "reg_sampling": 0.3,
    "template_shrink": [2, 1],
    "affine_shrink": [1],
}


def _pose(
    angles: tuple[float, float, float], shift: tuple[float, float, float]
) -> sitk.AffineTransform:
    tx = sitk.Euler3DTransform()
    tx.SetCenter((0.0, -18.0, 18.0))
    tx.SetRotation(*np.deg2rad(angles))
    tx.SetTranslation(shift)
    return registration.affine_from_rigid(tx)


def _acquire(
    src: sitk.Image, to_tpl: sitk.Transform, spacing: tuple[float, float, float], orient: str
) -> sitk.Image:
    grid = sitk.Image(
        [int(round(n / s)) for n, s in zip((180, 216, 180), spacing, strict=True)], sitk.sitkFloat32
    )
    grid.SetSpacing(spacing)
    grid.SetOrigin((-90.0, -126.0, -72.0))
    out = sitk.Resample(src, grid, to_tpl.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.DICOMOrient(out, orient)


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("scan")
    tpl = load_template()
    t1_src = tpl.t1 * 1000.0 + 20.0
    fl_src = (tpl.gm * 800.0 + tpl.wm * 600.0) + 20.0
    t1_tx = _pose((4.0, -3.0, 2.0), (3.0, -2.0, 4.0))
    fl_tx = _pose((5.0, -2.0, 3.0), (4.0, -1.0, 3.0))
    truth: dict[str, dict] = {"channels": {}}
    for name, src, tx, sp, orient in (
        ("T1w", t1_src, t1_tx, (3.0,) * 3, "LPS"),
        ("FLAIR", fl_src, fl_tx, (3.0, 3.0, 4.0), "PIR"),
    ):
        clean = _acquire(src, tx, sp, orient)
        sitk.WriteImage(clean, str(d / f"{name}.nii.gz"))
        sitk.WriteTransform(tx, str(d / f"{name}.tfm"))
        truth["channels"][name] = {
            "clean": f"{name}.nii.gz",
            "to_template": f"{name}.tfm",
            "noise_sigma": 0.0,
        }
    # two lesions (ids 1 and 3) in deep white matter, drawn on the T1w grid
    t1 = read_image(d / "T1w.nii.gz")
    lab = np.zeros(t1.GetSize()[::-1], np.uint16)
    centre = [n // 2 for n in lab.shape]
    lab[
        centre[0] - 2 : centre[0] + 2, centre[1] - 2 : centre[1] + 2, centre[2] + 4 : centre[2] + 8
    ] = 1
    lab[
        centre[0] + 3 : centre[0] + 6, centre[1] - 2 : centre[1] + 2, centre[2] - 8 : centre[2] - 4
    ] = 3
    lab_img = sitk.GetImageFromArray(lab)
    lab_img.CopyInformation(t1)
    sitk.WriteImage(lab_img, str(d / "label.nii.gz"))
    (d / "truth.json").write_text(json.dumps(truth))
    return {
        "T1w": d / "T1w.nii.gz",
        "FLAIR": d / "FLAIR.nii.gz",
        "label": d / "label.nii.gz",
        "truth": d / "truth.json",
        "dir": d,
    }


def test_preprocess_scan_outputs_and_quality(scan: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sub-001_ses-01"
    qc = preprocess_scan(
        {"T1w": scan["T1w"], "FLAIR": scan["FLAIR"]},
        scan["label"],
        out,
        FAST,
        [4.0, 4.0, 4.0],
        scan["truth"],
    )
    for name in (
        "image.nii.gz",
        "label.nii.gz",
        "brainmask.nii.gz",
        "transform.tfm",
        "qc.json",
        "qc.png",
    ):
        assert (out / name).exists(), name
    img = read_image(out / "image.nii.gz")
    ref = reference_grid((4.0, 4.0, 4.0))
    assert img.GetNumberOfComponentsPerPixel() == 2
    assert img.GetSpacing() == (4.0, 4.0, 4.0)
    assert img.GetSize() == ref.GetSize()
    np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin())
    arr = to_array(img)
    brain = to_array(read_image(out / "brainmask.nii.gz")) > 0
    assert arr.shape == (2, *ref.GetSize())
    for c in range(2):
        assert abs(arr[c][brain].mean()) < 1e-3 and abs(arr[c][brain].std() - 1) < 1e-3
        assert not arr[c][~brain].any()  # skull-stripped
    label = read_image(out / "label.nii.gz")
    assert label.GetPixelID() == sitk.sitkUInt16
    assert set(np.unique(to_array(label))) <= {0, 1, 3} and qc["label_ids"] == [1, 3]
    assert qc["truth"]["template_error_mm"] < 2.0
    assert qc["truth"]["coreg_error_mm"]["FLAIR"] < 1.5
    assert set(qc["timings_s"]) >= {"n4", "denoise", "coregister", "register", "resample", "total"}
    assert json.loads((out / "qc.json").read_text())["scan"] == "sub-001_ses-01"
    # the stored transform maps template points to native T1w points
    tx = sitk.ReadTransform(str(out / "transform.tfm"))
    truth = sitk.ReadTransform(str(scan["dir"] / "T1w.tfm"))
    p = (10.0, -20.0, 15.0)
    assert np.linalg.norm(np.subtract(tx.TransformPoint(p), truth.TransformPoint(p))) < 3.0


def test_four_d_input_gives_the_same_channels(scan: dict[str, Path], tmp_path: Path) -> None:
    t1 = read_image(scan["T1w"])
    other = t1 * 0.5
    four_d = sitk.JoinSeries([t1, other])
    path = tmp_path / "both.nii.gz"
    sitk.WriteImage(four_d, str(path))
    chans = load_channels({"T1w": path, "T2w": path})
    assert list(chans) == ["T1w", "T2w"]
    assert chans["T1w"].GetSize() == t1.GetSize()
    np.testing.assert_allclose(to_array(chans["T2w"]), to_array(t1) * 0.5, rtol=1e-6)
    assert list(load_channels({"MR": path})) == ["MR_0", "MR_1"]
    with pytest.raises(ImageError, match="both.nii.gz: 2 volumes"):
        load_channels({"a": path, "b": path, "c": path})


def test_bad_input_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken_T1w.nii.gz"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match=r"^" + str(bad)):
        preprocess_scan({"T1w": bad}, None, tmp_path / "out", FAST, [4.0, 4.0, 4.0])
    missing = tmp_path / "missing.nii.gz"
    with pytest.raises(ImageError, match=r"^" + str(missing)):
        preprocess_scan({"T1w": missing}, None, tmp_path / "out", FAST, [4.0, 4.0, 4.0])
    assert not (tmp_path / "out" / "image.nii.gz").exists()




def test_a_failed_scan_is_recorded_not_raised(tmp_path: Path) -> None:
    """`mripipe preprocess` never fails its job on bad input: the scan's folder keeps only
    status.json with the reason (mripipe ready excludes the scan)."""
    from mripipe.preprocess.preprocess_scan import preprocess_recorded

    threads = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    fingerprint = tmp_path / "fingerprint.json"
    fingerprint.write_text("{}")
    bad = tmp_path / "broken_T1w.nii.gz"
    bad.write_text("not an image")
    try:
        cases = {
            "a": ([f"T1w={bad}"], {"fingerprint": fingerprint}, f"{fingerprint}: no target_spacing"),
            "b": (["T1w"], {"spacing": [4.0, 4.0, 4.0]}, "--channel 'T1w': expected NAME=PATH"),
            "c": ([f"T1w={bad}"], {"spacing": [4.0, 4.0, 4.0]}, str(bad)),
        }
        for name, (channels, target, reason) in cases.items():
            out = tmp_path / name
            (out / "old").mkdir(parents=True)
            preprocess_recorded(f"sub-{name}", channels, out, FAST, **target)
            status = json.loads((out / "status.json").read_text())
            assert status["scan"] == f"sub-{name}" and status["ok"] is False
            assert status["check"] == "preprocess" and status["reason"].startswith(reason)
            assert [p.name for p in out.iterdir()] == ["status.json"]
    finally:
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)


def test_a_scan_runs_within_the_memory_it_declares(scan: dict[str, Path], tmp_path: Path) -> None:
    """`mripipe preprocess` as the rule runs it: mem_mb from the headers, the job's data segment
    limited to it, and the scan goes through."""
    from mripipe.core.config import with_defaults
    from mripipe.preprocess.memory import declared_mem_mb

    params = with_defaults("preprocess", {**FAST, "spacing": [4.0, 4.0, 4.0]})
    mem_mb = declared_mem_mb([scan["T1w"], scan["FLAIR"]], scan["label"], params)
    out = tmp_path / "sub-001"
    cmd = [sys.executable, "-m", "mripipe.cli", "preprocess", "--scan", "sub-001", "--channel",
           f"T1w={scan['T1w']}", f"FLAIR={scan['FLAIR']}", "--label", str(scan["label"]), "--params", json.dumps(params),
           "--spacing", "4", "4", "4", "--mem-mb", str(mem_mb), "--out-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "status.json").read_text())["ok"] is True, (out / "status.json").read_text()
    assert f"mem_mb {mem_mb})" in proc.stderr  # the limit was set

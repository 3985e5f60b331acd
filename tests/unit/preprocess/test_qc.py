"""QC metrics on crafted cases (answers worked out by hand) and the QC table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from mripipe.core.utils import write_json
from mripipe.preprocess import qc
from mripipe.preprocess.montage import save_montage


def test_psnr_hand_computed() -> None:
    # reference (0, 2, 2, 2), image (0, 2, 2, 3): MSE = 1/4, peak = 2 -> 10 log10(4 / 0.25) = 12.041 dB
    ref = np.array([0.0, 2.0, 2.0, 2.0]).reshape(4, 1, 1)
    img = np.array([0.0, 2.0, 2.0, 3.0]).reshape(4, 1, 1)
    mask = np.ones_like(ref, bool)
    assert math.isclose(qc.psnr(img, ref, mask), 10 * math.log10(16.0), rel_tol=1e-9)
    assert qc.psnr(ref, ref, mask) == float("inf")
    # masking out the wrong voxel makes the images identical
    assert qc.psnr(img, ref, np.array([1, 1, 1, 0], bool).reshape(4, 1, 1)) == float("inf")


def test_bias_correlation() -> None:
    a = np.linspace(0.8, 1.2, 24).reshape(2, 3, 4)
    mask = np.ones(a.shape, bool)
    assert math.isclose(qc.bias_correlation(2 * a + 1, a, mask), 1.0, rel_tol=1e-12)
    assert math.isclose(qc.bias_correlation(-a, a, mask), -1.0, rel_tol=1e-12)
    assert math.isnan(qc.bias_correlation(np.ones_like(a), a, mask))


def test_mapping_error_of_a_translation() -> None:
    # T_est = translation (3, 4, 0), T_true = identity: every point is off by 5 mm
    grid = sitk.Image([5, 5, 5], sitk.sitkFloat32)
    mask = np.zeros((5, 5, 5), bool)
    mask[1:4, 1:4, 1:4] = True
    err = qc.mapping_error_mm(
        sitk.TranslationTransform(3, (3.0, 4.0, 0.0)),
        sitk.Transform(3, sitk.sitkIdentity),
        grid,
        mask,
    )
    assert math.isclose(err, 5.0, rel_tol=1e-9)


def test_save_qc_png(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(size=(2, 16, 18, 14)).astype(np.float32)
    mask = np.zeros((16, 18, 14), bool)
    mask[3:13, 3:15, 3:11] = True
    label = np.zeros((16, 18, 14), np.uint16)
    label[6:9, 6:9, 6:9] = 2
    out = tmp_path / "qc.png"
    save_montage(image, ["T1w", "FLAIR"], mask, label, out, "sub-001_ses-01")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_qc_table_flattens_and_plots(tmp_path: Path) -> None:
    files = []
    for i, scan in enumerate(["sub-002_ses-01", "sub-001_ses-01"]):
        path = tmp_path / scan / "qc.json"
        write_json(
            path,
            {
                "scan": scan,
                "timings_s": {"n4": 1.0 + i, "total": 5.0},
                "truth": {
                    "template_error_mm": 0.5 * (i + 1),
                    "bias_corr": {"T1w": 0.9},
                    "psnr_gain_db": {"T1w": 3.0},
                },
            },
        )
        files.append(path)
    table = qc.qc_table(files, tmp_path / "qc.tsv", tmp_path / "qc.png")
    back = pd.read_csv(tmp_path / "qc.tsv", sep="\t")
    assert list(back["scan"]) == ["sub-001_ses-01", "sub-002_ses-01"]
    assert {"timings_s.n4", "truth.template_error_mm", "truth.bias_corr.T1w"} <= set(back.columns)
    assert back["truth.template_error_mm"].tolist() == [1.0, 0.5]
    assert len(table) == 2
    assert (tmp_path / "qc.png").stat().st_size > 1000


def test_robust_z_hand_computed() -> None:
    # values 0.80, 0.81, 0.82, 0.83, 0.30: median 0.81, |dev| 0.01, 0, 0.01, 0.02, 0.51 -> MAD 0.01
    values = {"a": 0.80, "b": 0.81, "c": 0.82, "d": 0.83, "e": 0.30}
    rz = qc.robust_z(values, min_sd=0.001)
    assert math.isclose(rz.median, 0.81)
    assert math.isclose(rz.sd, 1.4826 * 0.01, rel_tol=1e-9)
    assert math.isclose(rz.z["e"], -0.51 / (1.4826 * 0.01), rel_tol=1e-9)
    assert math.isclose(rz.z["b"], 0.0, abs_tol=1e-12)
    # the floor bounds z when the values barely spread
    flat = qc.robust_z({"a": 0.8, "b": 0.8, "c": 0.8, "d": 0.79}, min_sd=0.01)
    assert flat.sd == 0.01 and math.isclose(flat.z["d"], -1.0, rel_tol=1e-9)


def test_qc_table_places_each_ncc_in_the_dataset(tmp_path: Path) -> None:
    files = []
    for i, ncc in enumerate([0.80, 0.81, 0.82, 0.70]):
        path = tmp_path / f"s{i}" / "qc.json"
        write_json(path, {"scan": f"s{i}", "registration_ncc": ncc})
        files.append(path)
    table = qc.qc_table(files, tmp_path / "qc.tsv", tmp_path / "qc.png", {"registration_ncc_min_sd": 0.01})
    # median 0.805, MAD 0.01 (deviations 0.005, 0.005, 0.015, 0.105) -> sd 0.014826
    assert table["registration_ncc_median"].tolist() == [0.805] * 4
    assert table["registration_ncc_z"].tolist() == [-0.34, 0.34, 1.01, -7.08]

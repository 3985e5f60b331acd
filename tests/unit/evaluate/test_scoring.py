"""Scoring on the native grid and the HD95 convention for empty masks, with hand-computed values.

| case              | grid (spacing)      | truth            | prediction       | Dice | HD95 (mm)                     |
|-------------------|---------------------|------------------|------------------|------|-------------------------------|
| both empty        | 8^3 (2 mm)          | -                | -                | 1    | 0 (both_empty)                |
| only prediction   | 8^3 (2 mm)          | -                | [0:2]^3          | 0    | diagonal 16*sqrt(3) = 27.713  |
| only truth        | 8^3 (2 mm)          | [0:2]^3          | -                | 0    | 27.713 (empty_prediction)     |
| BraTS grid        | 240x240x155 (1 mm)  |                  |                  |      | diagonal 373.129 (BraTS's)    |
| anisotropic       | 10x12x8 (1.5,1.5,3) |                  |                  |      | sqrt(15^2+18^2+24^2) = 33.541 |

Native cohort (10 x 12 x 8 voxels of 1.5 x 1.5 x 3 mm, oblique-free but flipped direction, own origin):
scan A: truth box [2:5, 2:5, 2:4] (18 voxels), prediction the same box -> Dice 1, HD95 0.
scan B: truth box [6:8, 6:9, 4:6] (12 voxels), nothing predicted -> Dice 0, HD95 = 33.541.
scan C: no lesion file, nothing predicted -> Dice 1, HD95 0 (both empty).
Headline: hd95_mm over lesion scans = (0 + 33.541) / 2 = 16.771, median the same; 2 scans by the
convention (B, C); with nanmean over measured scans only (the old rule) it would read 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from mripipe.core.errors import InputError
from mripipe.core.imageio import from_array, write_image
from mripipe.evaluate.evaluate_experiment import evaluate_segmentation
from mripipe.evaluate.scoring import image_diagonal, overlap_scores, score_scan

DIAG_8 = 16 * math.sqrt(3)
NATIVE_DIAG = math.sqrt(15**2 + 18**2 + 24**2)


def test_hd95_convention_for_empty_masks() -> None:
    empty = np.zeros((8, 8, 8), bool)
    cube = empty.copy()
    cube[:2, :2, :2] = True
    assert overlap_scores(empty, empty, (2.0, 2.0, 2.0)) == (1.0, 0.0, "both_empty")
    d, h, c = overlap_scores(cube, empty, (2.0, 2.0, 2.0))
    assert (d, c) == (0.0, "empty_truth") and h == pytest.approx(DIAG_8)
    d, h, c = overlap_scores(empty, cube, (2.0, 2.0, 2.0))
    assert (d, c) == (0.0, "empty_prediction") and h == pytest.approx(DIAG_8)
    assert image_diagonal((240, 240, 155), (1.0, 1.0, 1.0)) == pytest.approx(373.129, abs=1e-3)
    assert image_diagonal((10, 12, 8), (1.5, 1.5, 3.0)) == pytest.approx(NATIVE_DIAG)


def _native_grid() -> sitk.Image:
    ref = sitk.Image([10, 12, 8], sitk.sitkFloat32)
    ref.SetSpacing((1.5, 1.5, 3.0))
    ref.SetOrigin((12.0, -30.0, 7.5))
    ref.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # LPS-stored
    return ref


def _native_cohort(root: Path) -> pd.DataFrame:
    ref = _native_grid()
    s = np.s_
    scans = {"sub-001_ses-01": (s[2:5, 2:5, 2:4], s[2:5, 2:5, 2:4]),
             "sub-002_ses-01": (s[6:8, 6:9, 4:6], None),
             "sub-003_ses-01": (None, None)}
    rows = []
    for scan, (lesion, pred) in scans.items():
        prob = np.zeros((10, 12, 8), np.float32)
        if pred is not None:
            prob[pred] = 0.9
        write_image(from_array(prob, ref), root / "predictions" / f"{scan}_prob.nii.gz")
        label = ""
        if lesion is not None:
            lab = np.zeros((10, 12, 8), np.uint16)
            lab[lesion] = 1
            label = str(root / "raw" / f"{scan}_mask.nii.gz")
            write_image(from_array(lab, ref), label)
        rows.append({"scan": scan, "subject": scan[:7], "class": "low" if lesion else "none",
                     "label": label})
    return pd.DataFrame(rows)


def test_native_evaluation_counts_empty_predictions(tmp_path: Path) -> None:
    cases = _native_cohort(tmp_path)
    m = evaluate_segmentation(tmp_path / "predictions", tmp_path / "preprocessed", cases,
                              tmp_path / "eval", {"bootstrap": 0, "n_overlays": 0}, seed=0)
    assert m["space"] == "native" and "diagonal" in m["hd95_convention"]
    assert m["dice"] == pytest.approx(0.5) and m["dice_empty"] == pytest.approx(1.0)
    assert m["hd95_mm"] == pytest.approx(NATIVE_DIAG / 2)
    assert m["hd95_mm_median"] == pytest.approx(NATIVE_DIAG / 2)
    assert m["hd95_empty_mm"] == 0.0
    assert (m["hd95_n_convention"], m["hd95_n_empty_prediction"], m["hd95_n_empty_truth"]) == (2, 1, 1)
    per_case = pd.read_csv(tmp_path / "eval" / "per_case.tsv", sep="\t", keep_default_na=False)
    assert list(per_case["hd95_convention"]) == ["", "empty_prediction", "both_empty"]
    # volumes in native voxels: 18 voxels of 6.75 mm^3
    assert per_case.loc[0, "true_volume_ml"] == pytest.approx(18 * 6.75 / 1000)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["space"] == "native" and saved["params"]["space"] == "native"


def test_native_label_on_another_grid_is_named(tmp_path: Path) -> None:
    cases = _native_cohort(tmp_path)
    other = _native_grid()
    other.SetOrigin((0.0, 0.0, 0.0))
    write_image(from_array(np.zeros((10, 12, 8), np.uint16), other), cases.loc[0, "label"])
    with pytest.raises(InputError, match=r"sub-001_ses-01_mask\.nii\.gz: not on the grid of .*"
                                         r"sub-001_ses-01_prob\.nii\.gz \(origin shifted"):
        score_scan("sub-001_ses-01", tmp_path / "predictions" / "sub-001_ses-01_prob.nii.gz",
                   Path(cases.loc[0, "label"]), {})


def test_native_truth_with_permuted_axes_scores_the_same(tmp_path: Path) -> None:
    """A truth written with its axes permuted and flipped (dcm2niix style; SimpleITK's own
    DICOMOrient) on the prediction's grid: the same scores as the truth in the grid's own order."""
    cases = _native_cohort(tmp_path)
    params = {"bootstrap": 0, "n_overlays": 0}
    m = evaluate_segmentation(tmp_path / "predictions", tmp_path / "preprocessed", cases,
                              tmp_path / "eval", params, seed=0)
    plain = pd.read_csv(tmp_path / "eval" / "per_case.tsv", sep="\t", keep_default_na=False)
    for label, code in zip(cases["label"], ("SAL", "PIR"), strict=False):
        if label:
            permuted = sitk.DICOMOrient(sitk.ReadImage(label), code)
            assert permuted.GetSize() != (10, 12, 8)
            write_image(permuted, label)
    m2 = evaluate_segmentation(tmp_path / "predictions", tmp_path / "preprocessed", cases,
                               tmp_path / "eval2", params, seed=0)
    moved = pd.read_csv(tmp_path / "eval2" / "per_case.tsv", sep="\t", keep_default_na=False)
    assert list(plain["dice"]) == [1.0, 0.0, 1.0] and list(plain["n_lesions"]) == [1, 1, 0]
    pd.testing.assert_frame_equal(moved, plain)
    assert (m2["dice"], m2["hd95_mm"]) == (m["dice"], m["hd95_mm"])

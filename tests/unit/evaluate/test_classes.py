"""Multi-class evaluation (K = 2: rim 1, core 2) on hand-built files with known answers.

Grid 10^3 of 2 mm. Scan A (sub-001): truth rim x 1:3, core x 3:5 (y, z 1:3, 8 voxels each, side by
side); segmentation rim x 1:3 (exact), core x 6:8 (beside the truth, no overlap). Scan B
(sub-002): truth and segmentation rim at [5:7]^3, no core anywhere.

| name            | scan A                             | scan B                 | headline              |
|-----------------|------------------------------------|------------------------|-----------------------|
| rim             | Dice 1, HD95 0                     | Dice 1                 | dice_rim 1            |
| core            | Dice 0, HD95 3 voxels = 6 mm       | both empty (not counted)| dice_core 0, HD95 6  |
| lesion = {1, 2} | 2 * 8 / (16 + 16) = 0.5            | Dice 1                 | dice_lesion 0.75      |
| mean of classes |                                    |                        | dice 0.5, hd95_mm 3   |

Core HD95: every voxel of a 2-voxel-thick block is on its surface; the distances from one block
to the other along x are 2 and 3 voxels (four voxels each), whose 95th percentile is 3 voxels.

Detection, probabilities 0.8 (rim) and 0.7 (core) where segmented: region ``lesion`` (summed)
has candidates A: x 1:3 (0.8, IoU 8/16 with the lesion x 1:5: TP), x 6:8 (0.7, FP); B: the rim
(0.8, TP) -> 2 of 2 lesions found above the only FP: FROC score 1, AP 1. Class ``core``: one
lesion (A), missed; one FP (0.7): FROC score 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from mripipe.core.errors import InputError
from mripipe.core.imageio import from_array, write_image
from mripipe.evaluate.classes import score_scan_classes
from mripipe.evaluate.evaluate_experiment import evaluate_segmentation, multiclass_spec
from mripipe.evaluate.labelmap import label_map, label_spec
from mripipe.evaluate.summarise import HEADLINE, class_keys, summarise

REPO = Path(__file__).resolve().parents[3]
LABELS = {"rim": 1, "core": 2}
PARAMS = {"regions": {"lesion": ["rim", "core"]}, "detection_classes": ["lesion", "core"],
          "bootstrap": 20, "n_overlays": 0}
S = np.s_
SCANS = {  # scan: (subject, truth boxes {value: box}, segmentation boxes {class index: box})
    "sub-001": ("sub-001", {1: S[1:3, 1:3, 1:3], 2: S[3:5, 1:3, 1:3]}, {1: S[1:3, 1:3, 1:3], 2: S[6:8, 1:3, 1:3]}),
    "sub-002": ("sub-002", {1: S[5:7, 5:7, 5:7]}, {1: S[5:7, 5:7, 5:7]}),
}


def _write_cohort(root: Path, space: str, labels: object = LABELS) -> pd.DataFrame:
    ref = from_array(np.zeros((10, 10, 10), np.float32))
    ref.SetSpacing((2.0, 2.0, 2.0))
    pred = root / "predictions"
    rows = []
    for scan, (subject, truth_boxes, seg_boxes) in SCANS.items():
        truth = np.zeros((10, 10, 10), np.uint8)
        seg = np.zeros((10, 10, 10), np.uint8)
        prob = np.zeros((3, 10, 10, 10), np.float32)
        for value, box in truth_boxes.items():
            truth[box] = value
        for k, box in seg_boxes.items():
            seg[box] = k
            prob[k][box] = {1: 0.8, 2: 0.7}[k]
        prob[0] = 1.0 - prob[1:].sum(axis=0)
        if space == "native":
            write_image(from_array(truth, ref), root / "labels" / f"{scan}.nii.gz")
            write_image(from_array(prob, ref), pred / f"{scan}_prob.nii.gz")
            write_image(from_array(seg, ref), pred / f"{scan}_seg.nii.gz")
        else:
            write_image(from_array(truth, ref), root / "preprocessed" / scan / "label.nii.gz")
            write_image(from_array(prob, ref), pred / f"{scan}_prob_template.nii.gz")
        rows.append({"scan": scan, "subject": subject, "class": "",
                     "label": str(root / "labels" / f"{scan}.nii.gz") if space == "native" else ""})
    (pred / "predict.json").write_text(json.dumps({"task": "segmentation", "labels": labels}))
    return pd.DataFrame(rows)


def test_label_map_forms_and_spec() -> None:
    assert label_map({"rim": 1, "core": 2}, "x") == LABELS
    assert label_map({"0": "background", "2": "core", "1": "rim"}, "x") == LABELS  # dataset.json
    with pytest.raises(InputError, match="share a value"):
        label_map({"rim": 1, "core": 1}, "x")
    spec = label_spec(LABELS, {"regions": {"lesion": [1, "core"]}, "detection_classes": ["lesion", "rim"]})
    assert spec.regions == {"lesion": (1, 2)} and spec.detection == {"lesion": (1, 2), "rim": (1,)}
    assert list(spec.scored()) == ["rim", "core", "lesion"]
    assert spec.channels((2,)) == [2]


@pytest.mark.parametrize(("params", "key"), [
    ({"regions": {"lesion": ["rim", "oedema"]}}, "evaluate.regions"),
    ({"regions": {"lesion": [1, 3]}}, "evaluate.regions"),
    ({"regions": {"core": ["rim", "core"]}}, "evaluate.regions"),
    ({"detection_classes": ["tumour"]}, "evaluate.detection_classes"),
    ({"regions": {"empty": ["rim"]}}, "evaluate.regions"),
])
def test_unknown_region_or_detection_names_are_refused(params: dict, key: str) -> None:
    with pytest.raises(InputError, match=key):
        label_spec(LABELS, params)


def test_one_class_keeps_the_binary_path(tmp_path: Path) -> None:
    (tmp_path / "predict.json").write_text(json.dumps({"labels": {"lesion": 1}}))
    assert multiclass_spec(tmp_path, {}) is None
    assert multiclass_spec(tmp_path / "missing", {}) is None  # no predict.json: binary
    with pytest.raises(InputError, match="evaluate.detection_classes"):
        multiclass_spec(tmp_path, {"detection_classes": ["core"]})


def test_scan_scores_by_hand(tmp_path: Path) -> None:
    cases = _write_cohort(tmp_path, "native")
    spec = label_spec(LABELS, PARAMS)
    pred = tmp_path / "predictions"
    row, fg, dets = score_scan_classes("sub-001", pred / "sub-001_prob.nii.gz", pred / "sub-001_seg.nii.gz",
                                       Path(cases.loc[0, "label"]), spec, PARAMS)
    assert row["dice_rim"] == 1.0 and row["hd95_mm_rim"] == 0.0
    assert row["dice_core"] == 0.0 and row["hd95_mm_core"] == pytest.approx(6.0)
    assert row["dice_lesion"] == pytest.approx(0.5) and row["dice"] == pytest.approx(0.5)
    assert row["true_volume_ml_core"] == pytest.approx(8 * 8 / 1000)
    assert (fg.n_lesions, len(fg.tp_scores), len(fg.fp_scores)) == (1, 1, 1)
    assert list(dets["lesion"].tp_scores) == pytest.approx([0.8]) and list(dets["lesion"].fp_scores) == pytest.approx([0.7])
    assert dets["core"].n_lesions == 1 and len(dets["core"].tp_scores) == 0 and len(dets["core"].fp_scores) == 1


def test_native_truth_with_permuted_axes_scores_the_same(tmp_path: Path) -> None:
    cases = _write_cohort(tmp_path, "native")
    spec = label_spec(LABELS, PARAMS)
    pred = tmp_path / "predictions"
    args = (pred / "sub-001_prob.nii.gz", pred / "sub-001_seg.nii.gz", Path(cases.loc[0, "label"]), spec, PARAMS)
    plain = score_scan_classes("sub-001", *args)
    write_image(sitk.DICOMOrient(sitk.ReadImage(cases.loc[0, "label"]), "ILP"), cases.loc[0, "label"])
    moved = score_scan_classes("sub-001", *args)
    assert plain[0]["dice_lesion"] == pytest.approx(0.5) and plain[0]["dice_core"] == 0.0
    assert moved[0] == plain[0]
    assert repr(moved[1:]) == repr(plain[1:])  # the detections (numpy arrays inside) too


@pytest.mark.parametrize("space", ["native", "template"])
def test_evaluate_multiclass_end_to_end(tmp_path: Path, space: str) -> None:
    cases = _write_cohort(tmp_path, space)
    out = tmp_path / "mc" / "eval"
    m = evaluate_segmentation(tmp_path / "predictions", tmp_path / "preprocessed", cases, out,
                              {**PARAMS, "space": space}, seed=1, experiment="mc")
    assert m["dice_rim"] == pytest.approx(1.0) and m["dice_core"] == pytest.approx(0.0)
    assert m["dice_lesion"] == pytest.approx(0.75) and m["dice"] == pytest.approx(0.5)
    assert m["hd95_mm_core"] == pytest.approx(6.0) and m["hd95_mm"] == pytest.approx(3.0)
    assert m["hd95_mm_median_core"] == pytest.approx(6.0)
    assert m["froc_score_lesion"] == pytest.approx(1.0) and m["ap_lesion"] == pytest.approx(1.0)
    assert m["froc_score_core"] == pytest.approx(0.0) and m["n_lesions_core"] == 1
    assert m["classes"] == LABELS and m["regions"] == {"lesion": [1, 2]}
    assert m["sensitivity_at_fp_lesion"]["1"] == pytest.approx(1.0)
    lo, hi = m["ci95"]["dice_lesion"]
    assert 0.5 <= lo <= 0.75 <= hi <= 1.0
    assert (out / "froc_lesion.tsv").is_file() and (out / "froc_core.tsv").is_file()
    per_case = pd.read_csv(out / "per_case.tsv", sep="\t")
    assert list(per_case["dice_lesion"]) == pytest.approx([0.5, 1.0])
    summary = summarise([out / "metrics.json"], tmp_path / "summary.json")["mc"]
    assert summary["dice_core"] == pytest.approx(0.0) and summary["froc_score_lesion"] == pytest.approx(1.0)
    assert summary["dice_lesion_ci95_low"] == lo and "hd95_mm_median_rim" in summary


def test_bad_label_values_and_channel_counts_are_refused(tmp_path: Path) -> None:
    cases = _write_cohort(tmp_path, "native")  # three channels: declaring three classes needs four
    (tmp_path / "predictions" / "predict.json").write_text(json.dumps({"labels": {"rim": 1, "core": 2, "x": 3}}))
    with pytest.raises(InputError, match=r"3 channel\(s\), expected 4"):
        evaluate_segmentation(tmp_path / "predictions", tmp_path, cases, tmp_path / "eval", {}, seed=1)
    (tmp_path / "predictions" / "predict.json").write_text(json.dumps({"labels": {"rim": 1, "other": 3}}))
    with pytest.raises(InputError, match=r"sub-001\.nii\.gz: label values \[2\] are not in the label map"):
        evaluate_segmentation(tmp_path / "predictions", tmp_path, cases, tmp_path / "eval", {}, seed=1)


@pytest.mark.parametrize("recipe", sorted((REPO / "config" / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_recipe_reference_keys_are_summary_keys(recipe: Path) -> None:
    cfg = yaml.safe_load(recipe.read_text())
    evaluate = cfg.get("evaluate", {})
    spec = label_spec(label_map(cfg["data"]["labels"], str(recipe)), evaluate)
    keys = set(HEADLINE["segmentation"]) | set(class_keys({
        "task": "segmentation", "classes": spec.classes, "regions": spec.regions,
        "detection_classes": list(spec.detection)}))
    for experiment, metrics in cfg["reference"].items():
        if experiment != "produced":
            assert set(metrics) <= keys, (experiment, set(metrics) - keys)

"""evaluate: Dice/HD95 against MONAI, classification metrics against scikit-learn, bootstrap CIs,
burden classes, both evaluation paths end to end on tiny files, and the MLflow evaluation run.

Hand-worked cases:

| case                          | truth                 | prediction            | expected                       |
|-------------------------------|-----------------------|-----------------------|--------------------------------|
| overlap                       | [2:4, 2:4, 2:6] (16)  | [2:4, 2:4, 2:4] (8)   | Dice 2*8/24 = 2/3; HD95 2 voxels|
|                               |                       |                       | along z x 2 mm = 4 mm          |
| both empty                    | none                  | none                  | Dice 1.0, HD95 0 (convention)  |
| only prediction               | none                  | [0:2, 0:2, 0:2]       | Dice 0.0, HD95 = diagonal      |
|                               |                       |                       | 8 * sqrt(3) = 13.856 mm        |

Classification (rows true, columns predicted; classes a, b, c), subjects s1..s6:
true a a b b c c, predicted a b b b c a -> confusion [[1,1,0],[0,2,0],[1,0,1]]; accuracy 4/6;
balanced accuracy (1/2 + 1 + 1/2)/3 = 2/3; sensitivity a 1/2, b 1, c 1/2; specificity a 3/4
(TN 3 of 4 non-a), b 3/4, c 1.

Burden classes with cuts [1, 4]: count 0 -> none, 1 and 3.5 -> low, 4 and 9 -> high.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score

from mripipe.core.imageio import from_array, write_image
from mripipe.evaluate.evaluate_experiment import (
    burden_class,
    evaluate_classification,
    evaluate_segmentation,
    overlap_scores,
)
from mripipe.evaluate.stats import bootstrap_ci, classification_metrics
from mripipe.track.eval_run import flat_metrics, log_evaluation

torch.set_num_threads(1)


def test_dice_hd95_hand_and_monai() -> None:
    truth = np.zeros((8, 8, 8), bool)
    truth[2:4, 2:4, 2:6] = True
    pred = np.zeros((8, 8, 8), bool)
    pred[2:4, 2:4, 2:4] = True
    dice, hd, convention = overlap_scores(pred, truth, (2.0, 2.0, 2.0))
    assert dice == pytest.approx(2 / 3) and convention == ""
    assert hd == pytest.approx(4.0)
    p, t = (torch.from_numpy(a.astype(np.float32))[None, None] for a in (pred, truth))
    assert dice == pytest.approx(float(DiceMetric(include_background=True)(p, t)[0, 0]))
    hd_monai = HausdorffDistanceMetric(include_background=True, percentile=95)(p, t, spacing=2.0)
    assert hd == pytest.approx(float(hd_monai[0, 0]))
    empty = np.zeros((8, 8, 8), bool)
    d, h, _ = overlap_scores(empty, empty, (1.0, 1.0, 1.0))
    assert d == 1.0 and h == 0.0
    only = empty.copy()
    only[:2, :2, :2] = True
    d, h, _ = overlap_scores(only, empty, (1.0, 1.0, 1.0))
    assert d == 0.0 and h == pytest.approx(8 * np.sqrt(3))


def test_classification_metrics_hand_and_sklearn() -> None:
    y = ["a", "a", "b", "b", "c", "c"]
    p = ["a", "b", "b", "b", "c", "a"]
    proba = np.array([[.7, .2, .1], [.3, .6, .1], [.1, .8, .1], [.2, .5, .3], [.1, .1, .8],
                      [.5, .1, .4]])
    m = classification_metrics(y, p, ["a", "b", "c"], proba)
    np.testing.assert_array_equal(m["confusion"], [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    np.testing.assert_array_equal(m["confusion"], confusion_matrix(y, p, labels=["a", "b", "c"]))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert m["sensitivity"] == pytest.approx({"a": 0.5, "b": 1.0, "c": 0.5})
    assert m["specificity"] == pytest.approx({"a": 0.75, "b": 0.75, "c": 1.0})
    for k, c in enumerate("abc"):
        expected = roc_auc_score([t == c for t in y], proba[:, k])
        assert m["auroc"][c] == pytest.approx(expected)


def test_burden_class_cuts() -> None:
    names = ["none", "low", "high"]
    assert [burden_class(c, names, [1, 4]) for c in (0, 1, 3.5, 4, 9)] == [
        "none", "low", "low", "high", "high"]
    with pytest.raises(ValueError, match="cuts"):
        burden_class(1, names, [1])


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    values = {f"s{i}": float(i) for i in range(10)}

    def stat(subjects: list[str]) -> dict[str, float]:
        return {"mean": float(np.mean([values[s] for s in subjects]))}

    a = bootstrap_ci(list(values), stat, 200, seed=3)
    assert a == bootstrap_ci(list(values), stat, 200, seed=3)
    assert a != bootstrap_ci(list(values), stat, 200, seed=4)
    lo, hi = a["mean"]
    assert lo is not None and hi is not None and lo < 4.5 < hi
    assert bootstrap_ci(list(values), stat, 0, seed=3) == {}


def _seg_cohort(root: Path) -> pd.DataFrame:
    """3 subjects, 4 scans on a 12^3 grid of 2 mm: a perfect hit, a miss + FP, two empties."""
    s = np.s_
    scans = {  # scan: (subject, class, lesion boxes, predicted (box, prob))
        "sub-001_ses-01": ("sub-001", "low", [s[2:5, 2:5, 2:5]], [(s[2:5, 2:5, 2:5], 0.9)]),
        "sub-001_ses-02": ("sub-001", "low", [s[2:5, 2:5, 2:5]], [(s[7:9, 7:9, 7:9], 0.7)]),
        "sub-002_ses-01": ("sub-002", "none", [], []),
        "sub-003_ses-01": ("sub-003", "none", [], [(s[1:3, 8:10, 1:3], 0.6)]),
    }
    ref = from_array(np.zeros((12, 12, 12), np.float32))
    ref.SetSpacing((2.0, 2.0, 2.0))
    rows = []
    for scan, (subject, cls, lesions, preds) in scans.items():
        label = np.zeros((12, 12, 12), np.uint16)
        prob = np.zeros((12, 12, 12), np.float32)
        for i, box in enumerate(lesions, start=1):
            label[box] = i
        for box, p in preds:
            prob[box] = p
        write_image(from_array(label, ref), root / "preprocessed" / scan / "label.nii.gz")
        write_image(from_array(np.stack([prob, prob]), ref), root / "preprocessed" / scan / "image.nii.gz")
        write_image(from_array(np.ones((12, 12, 12), np.uint8), ref), root / "preprocessed" / scan / "brainmask.nii.gz")
        write_image(from_array(prob, ref), root / "predictions" / f"{scan}_prob_template.nii.gz")
        rows.append({"scan": scan, "subject": subject, "class": cls})
    return pd.DataFrame(rows)


def test_evaluate_segmentation_end_to_end(tmp_path: Path) -> None:
    cases = _seg_cohort(tmp_path)
    params = {"bootstrap": 50, "n_overlays": 1, "space": "template"}
    m = evaluate_segmentation(tmp_path / "predictions", tmp_path / "preprocessed", cases,
                              tmp_path / "eval", params, seed=1, experiment="seg")
    out = tmp_path / "eval"
    # Dice over lesion scans: (1 + 0) / 2; empties: sub-002 1.0, sub-003 0.0 -> 0.5
    assert m["dice"] == pytest.approx(0.5) and m["dice_empty"] == pytest.approx(0.5)
    assert m["space"] == "template"
    # HD95: the hit 0 mm, the miss (nothing predicted on its lesion box: the FP is elsewhere, so
    # the prediction is not empty) is measured; empties: sub-002 both empty 0, sub-003 FP only ->
    # diagonal 12 * 2 * sqrt(3) = 41.57 mm
    assert m["hd95_empty_mm"] == pytest.approx((0 + 24 * np.sqrt(3)) / 2)
    assert m["hd95_n_convention"] == 2 and m["hd95_n_empty_truth"] == 2
    # lesions 2, TP 1 (0.9), FP 0.7 and 0.6 over 4 scans: sensitivity 1/2 from 0 FP/scan on
    assert m["froc_score"] == pytest.approx(0.5) and m["n_lesions"] == 2 and m["n_scans"] == 4
    # case scores: lesion scans 0.9, 0.7; empty 0.0, 0.6 -> all 4 pairs won
    assert m["auroc"] == pytest.approx(1.0)
    # burden: sub-001 mean 1 candidate -> low (right); sub-002 0 -> none; sub-003 1 -> low (wrong)
    assert m["burden_accuracy"] == pytest.approx(2 / 3)
    for name in ("metrics.json", "per_case.tsv", "froc.tsv", "confusion.tsv", "roc.tsv",
                 "froc.png", "confusion.png", "roc.png", "dice.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(list(out.glob("overlay_*.png"))) == 1
    saved = json.loads((out / "metrics.json").read_text())
    lo, hi = saved["ci95"]["dice"]
    assert lo <= saved["dice"] <= hi
    assert not any(k.startswith("_") for k in saved["ci95"])
    per_case = pd.read_csv(out / "per_case.tsv", sep="\t")
    assert list(per_case["n_tp"]) == [1, 0, 0, 0] and list(per_case["n_fp"]) == [0, 1, 0, 1]
    assert per_case.loc[0, "true_volume_ml"] == pytest.approx(27 * 8 / 1000)


def test_evaluate_classification_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    table = pd.DataFrame({
        "subject": ["s1", "s1", "s2", "s3", "s4"],
        "scan": ["s1_a", "s1_b", "s2_a", "s3_a", "s4_a"],
        "true_class": ["low", "low", "none", "high", "none"],
        "pred_class": ["low", "none", "none", "low", "none"],
        "prob_high": [0.1, 0.1, 0.1, 0.4, 0.0],
        "prob_low": [0.8, 0.2, 0.2, 0.5, 0.1],
        "prob_none": [0.1, 0.7, 0.7, 0.1, 0.9],
    })
    table.to_csv(tmp_path / "pred" / "predictions.tsv", sep="\t", index=False)
    m = evaluate_classification(tmp_path / "pred", tmp_path / "eval", {"bootstrap": 20}, seed=0)
    # subject means: s1 low (0.5 vs none 0.4) right, s2 none right, s3 low wrong, s4 none right
    assert m["accuracy"] == pytest.approx(3 / 4) and m["n_subjects"] == 4
    confusion = pd.read_csv(tmp_path / "eval" / "confusion.tsv", sep="\t", index_col=0)
    assert confusion.loc["high", "low"] == 1 and confusion.to_numpy().trace() == 3
    assert set(pd.read_csv(tmp_path / "eval" / "roc.tsv", sep="\t")["curve"]) == {"high", "low", "none"}


def test_mlflow_evaluation_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("seg")
    trial_run = c.create_run(exp).info.run_id
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "per_case.tsv").write_text("scan\n")
    metrics = {"task": "segmentation", "dice": 0.5, "auroc": float("nan"),
               "sensitivity_at_fp": {"0.125": 0.25}, "ci95": {"dice": [0.25, 0.75]}}
    selected = {"trial": "trial-000", "mlflow_run_id": trial_run, "tracking_uri": uri}
    run_id = log_evaluation("seg", selected, tmp_path / "selected.json", tmp_path / "eval",
                            metrics, {"threshold": 0.5})
    assert run_id is not None
    run = c.get_run(run_id)
    assert run.info.experiment_id == exp and run.data.tags["mripipe.trial_run_id"] == trial_run
    assert run.data.metrics == flat_metrics(metrics)
    assert run.data.metrics["dice_ci95_low"] == 0.25 and "auroc" not in run.data.metrics
    # no mlflow_run_id and no tracking URI: nothing fails
    unlinked = log_evaluation("seg", {"tracking_uri": uri}, tmp_path / "selected.json",
                              tmp_path / "eval", metrics, {})
    assert "mripipe.trial_run_id" not in c.get_run(str(unlinked)).data.tags
    assert log_evaluation("seg", {}, tmp_path / "selected.json", tmp_path / "eval", metrics, {}) is None

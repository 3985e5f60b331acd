"""summarise: headline metrics of every experiment with CI bounds; where: the locations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mripipe.core.utils import write_json
from mripipe.evaluate.summarise import summarise, where


def test_summary_of_two_experiments(tmp_path: Path) -> None:
    seg = tmp_path / "lesion_seg" / "eval" / "metrics.json"
    cls = tmp_path / "burden_cls" / "eval" / "metrics.json"
    write_json(seg, {"task": "segmentation", "dice": 0.7, "froc_score": 0.5, "auroc": None,
                     "n_scans": 12, "n_lesions": 30, "ci95": {"dice": [0.6, 0.8]},
                     "params": {"threshold": 0.5}})
    write_json(cls, {"task": "classification", "accuracy": 0.75, "balanced_accuracy": 0.7,
                     "n_subjects": 10, "ci95": {"accuracy": [0.5, 0.9]}})
    out = tmp_path / "summary.json"
    summarise([seg, cls], out)
    saved = json.loads(out.read_text())
    assert saved["lesion_seg"] == {"task": "segmentation", "dice": 0.7, "dice_ci95_low": 0.6,
                                   "dice_ci95_high": 0.8, "auroc": None, "froc_score": 0.5,
                                   "n_scans": 12, "n_lesions": 30}
    assert saved["burden_cls"]["accuracy_ci95_high"] == 0.9
    assert saved["burden_cls"]["balanced_accuracy"] == 0.7


def test_unknown_task_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "x" / "eval" / "metrics.json"
    write_json(bad, {"task": "regression"})
    with pytest.raises(ValueError, match=r"metrics\.json: unknown task"):
        summarise([bad], tmp_path / "summary.json")


def test_where_lists_report_metrics_and_mlflow(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_text("")
    lines = "\n".join(where(tmp_path))
    assert f"{tmp_path}/results/report.html  (not yet" in lines
    assert f"MLflow:  {tmp_path}/mlflow.db\n" in lines
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in lines
    assert "http://127.0.0.1:5000" in lines


def test_summary_reports_space_and_hd95_convention(tmp_path: Path) -> None:
    seg = tmp_path / "lesion_seg" / "eval" / "metrics.json"
    write_json(seg, {"task": "segmentation", "space": "native", "hd95_mm": 16.8,
                     "hd95_mm_median": 12.0, "hd95_n_convention": 2, "ci95": {}})
    saved = summarise([seg], tmp_path / "summary.json")["lesion_seg"]
    assert saved == {"task": "segmentation", "space": "native", "hd95_mm": 16.8,
                     "hd95_mm_median": 12.0, "hd95_n_convention": 2}

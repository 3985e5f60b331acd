"""Tests of mripipe.learn.select: ranking on the validation metric only, selected.json, MLflow model."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from mripipe.core.utils import write_json
from mripipe.learn.networks import build_model
from mripipe.learn.search import resolve_params
from mripipe.learn.select import cli_select, rank_trials, select_trial
from mripipe.track.tracking import client, open_trial_run, search_init

torch.set_num_threads(1)
CFG = {"task": "segmentation", "network": {"channels": [4, 8]},
       "search": {"n_trials": 3, "seed": 0, "metric": "val_dice"}}


def make_trials(root: Path, metrics: list[dict], search: dict | None = None) -> list[Path]:
    """Trial folders with val_metrics.json and a real (untrained) checkpoint each."""
    dirs = []
    for i, m in enumerate(metrics):
        d = root / "trials" / f"trial-{i:03d}"
        d.mkdir(parents=True)
        write_json(d / "val_metrics.json", m)
        params = resolve_params(CFG, i)
        run_id = ""
        if search is not None:
            run_id = open_trial_run(client(search["tracking_uri"]), search, d.name, {"i": i}, {})
        torch.manual_seed(i)
        model = build_model(params, 2, 2)
        torch.save({"model": model.state_dict(), "params": params, "epoch": 1, "task": "segmentation",
                    "in_channels": 2, "n_classes": 2, "roi_size": [16, 16, 16],
                    "mlflow_run_id": run_id}, d / "checkpoint.pt")
        dirs.append(d)
    return dirs


def test_ranking_uses_the_validation_metric_only(tmp_path: Path) -> None:
    # trial-000 has the best val_loss and trial-002 the best "test_dice" (which must be
    # ignored); trial-001 has the highest val_dice, the selection metric.
    dirs = make_trials(tmp_path, [
        {"val_dice": 0.40, "val_loss": 0.1, "test_dice": 0.1, "epoch": 3},
        {"val_dice": 0.70, "val_loss": 0.9, "test_dice": 0.2, "epoch": 5},
        {"val_dice": 0.55, "val_loss": 0.5, "test_dice": 0.9, "epoch": 2},
    ])
    ranking = rank_trials(dirs, "val_dice")
    assert [r["trial"] for r in ranking] == ["trial-001", "trial-002", "trial-000"]
    assert ranking[0]["epoch"] == 5


def test_ties_break_by_name_and_nan_ranks_last(tmp_path: Path) -> None:
    dirs = make_trials(tmp_path, [{"val_dice": math.nan}, {"val_dice": 0.5}, {"val_dice": 0.5}])
    assert [r["trial"] for r in rank_trials(dirs, "val_dice")] == ["trial-001", "trial-002", "trial-000"]


def test_missing_metric_names_the_file(tmp_path: Path) -> None:
    dirs = make_trials(tmp_path, [{"val_accuracy": 0.5}])
    with pytest.raises(ValueError, match=r"trial-000/val_metrics.json: no 'val_dice'"):
        rank_trials(dirs, "val_dice")


def test_select_writes_json_logs_the_model_and_tags_runs(tmp_path: Path) -> None:
    import mlflow.pytorch

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    search = search_init("lesion_seg", uri, CFG, tmp_path / "search.json")
    dirs = make_trials(tmp_path, [{"val_dice": 0.2}, {"val_dice": 0.6}], search)
    out = tmp_path / "selected.json"
    cli_select(argparse.Namespace(experiment="lesion_seg", trials=[str(d) for d in dirs],
                                  search=str(tmp_path / "search.json"), params=CFG, out=str(out)))
    doc = json.loads(out.read_text())
    assert doc["trial"] == "trial-001" and doc["value"] == 0.6 and doc["metric"] == "val_dice"
    assert doc["tracking_uri"] == uri and doc["parent_run_id"] == search["parent_run_id"]
    ckpt = torch.load(dirs[1] / "checkpoint.pt", weights_only=True)
    assert doc["mlflow_run_id"] == ckpt["mlflow_run_id"]
    c = client(uri)
    assert c.get_run(doc["mlflow_run_id"]).data.tags["selected"] == "true"
    parent = c.get_run(search["parent_run_id"])
    assert parent.data.tags["selected_trial"] == "trial-001"
    assert parent.info.status == "FINISHED"
    # The logged MLflow model computes what the checkpoint computes.
    mlflow.set_tracking_uri(uri)
    logged = mlflow.pytorch.load_model(doc["model_uri"]).eval()
    reference = build_model(ckpt["params"], 2, 2)
    reference.load_state_dict(ckpt["model"])
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(logged(x), reference.eval()(x))


def test_select_without_mlflow_model(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    search_init("e", uri, CFG, tmp_path / "search.json")
    dirs = make_trials(tmp_path, [{"val_dice": 0.3}])
    doc = select_trial("e", dirs, tmp_path / "search.json", CFG, tmp_path / "sel.json", log_model=False)
    assert doc["trial"] == "trial-000" and doc["model_uri"] is None

"""Tests of mripipe.track.tracking against a real SQLite MLflow store in a temporary folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from mripipe.track.search_init import search_init, start_search
from mripipe.track.tracking import (
    artifact_location,
    client,
    data_hash,
    git_commit,
    log_epoch,
    open_trial_run,
    retry,
)

CFG = {"task": "segmentation", "search": {"n_trials": 2, "seed": 1, "metric": "val_dice",
                                          "space": {"optimizer.lr": {"loguniform": [1e-4, 1e-2]}}}}


def test_search_init_creates_experiment_parent_run_and_search_json(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    start_search("lesion_seg", uri, CFG, tmp_path / "search.json")
    doc = json.loads((tmp_path / "search.json").read_text())
    assert set(doc) == {"experiment", "mlflow_experiment_id", "parent_run_id", "tracking_uri"}
    c = client(uri)
    exp = c.get_experiment_by_name("lesion_seg")
    assert exp.experiment_id == doc["mlflow_experiment_id"]
    assert exp.artifact_location == (tmp_path / "mlartifacts" / "lesion_seg").as_uri()
    parent = c.get_run(doc["parent_run_id"])
    assert parent.data.params["n_trials"] == "2" and parent.data.params["metric"] == "val_dice"
    assert "config_hash" in parent.data.tags
    # A second search of the same experiment reuses the MLflow experiment, with a new parent run.
    again = search_init("lesion_seg", uri, CFG, tmp_path / "search2.json")
    assert again["mlflow_experiment_id"] == doc["mlflow_experiment_id"]
    assert again["parent_run_id"] != doc["parent_run_id"]


def test_trial_run_is_nested_and_reopened(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    search = search_init("exp", uri, CFG, tmp_path / "search.json")
    c = client(uri)
    params = {"optimizer.lr": 0.001, "network.channels": [8, 16]}
    run_id = open_trial_run(c, search, "trial-000", params, {"data_hash": "abc"})
    log_epoch(c, run_id, {"train_loss": 1.0, "val_dice": float("nan")}, 1)
    assert open_trial_run(c, search, "trial-000", params, {"data_hash": "abc"}) == run_id
    other = open_trial_run(c, search, "trial-001", params, {})
    assert other != run_id
    run = c.get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == search["parent_run_id"]
    assert run.data.params == {"optimizer.lr": "0.001", "network.channels": "[8, 16]"}
    assert run.data.metrics == {"train_loss": 1.0}  # NaN (no validation that epoch) is skipped


def test_retry_waits_out_a_locked_database() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert retry(flaky, attempts=3) == "ok" and len(calls) == 3
    with pytest.raises(MlflowException, match="no such"):
        retry(lambda: (_ for _ in ()).throw(MlflowException("no such run")))


def test_concurrent_writers_on_one_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    search = search_init("exp", uri, CFG, tmp_path / "search.json")
    script = (
        "import json, sys\n"
        "from mripipe.track.tracking import client, open_trial_run, log_epoch\n"
        "search = json.load(open(sys.argv[1]))\n"
        "c = client(search['tracking_uri'])\n"
        "run = open_trial_run(c, search, sys.argv[2], {'x': 1}, {})\n"
        "for e in range(1, 21):\n"
        "    log_epoch(c, run, {'train_loss': float(e)}, e)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "search.json"), f"trial-{i:03d}"])
             for i in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    c = client(uri)
    runs = c.search_runs([search["mlflow_experiment_id"]],
                         filter_string=f"tags.mlflow.parentRunId = '{search['parent_run_id']}'")
    assert len(runs) == 3
    for r in runs:
        assert len(c.get_metric_history(r.info.run_id, "train_loss")) == 20


def test_hashes_and_git_never_fail(tmp_path: Path) -> None:
    a = tmp_path / "splits.json"
    a.write_text("{}")
    h1 = data_hash([a, tmp_path / "missing.tsv"])
    a.write_text('{"x": 1}')
    assert data_hash([a, tmp_path / "missing.tsv"]) != h1
    assert git_commit(tmp_path) is None  # not a repository: no tag, no failure
    assert artifact_location("http://127.0.0.1:5000", "x") is None

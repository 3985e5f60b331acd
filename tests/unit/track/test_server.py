"""One MLflow tracking server, many concurrent trial processes: nothing lost, nothing locked."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mripipe.track import server, tracking
from mripipe.track.search_init import search_init

N_TRIALS = 8
N_EPOCHS = 25
METRICS = ("train_loss", "val_loss", "val_dice")

# One trial process: the project's own tracking functions, as `mripipe train` calls them.
TRIAL = """
import json, sys
from mripipe.track import tracking
uri, search_path, trial, index, epochs = sys.argv[1:6]
index, epochs = int(index), int(epochs)
c = tracking.client(uri)
search = json.loads(open(search_path).read())
params = {"optimizer.lr": 0.001 * (index + 1), "network.name": "unet", "trial.index": index}
run_id = tracking.open_trial_run(c, search, trial, params, {"data_hash": "abc"})
for epoch in range(epochs):
    tracking.log_epoch(c, run_id, {"train_loss": index + 1.0 / (epoch + 1),
                                   "val_loss": index + 2.0 / (epoch + 1),
                                   "val_dice": epoch / epochs}, epoch)
tracking.finish_run(c, run_id)
print(run_id)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tracking server did not start (exit {proc.poll()})")
            time.sleep(0.5)


def test_server_command_binds_localhost_and_proxies_artifacts(tmp_path: Path) -> None:
    cmd = server.server_command(artifacts=tmp_path / "art", mlflow="mlflow")
    assert cmd[:2] == ["mlflow", "server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:///mlflow.db"
    assert "--serve-artifacts" in cmd
    assert cmd[cmd.index("--artifacts-destination") + 1] == str((tmp_path / "art").resolve())
    pg = server.server_command("postgresql://u:p@db:5432/mlflow", "s3://bucket/x", mlflow="mlflow")
    assert pg[pg.index("--artifacts-destination") + 1] == "s3://bucket/x"
    with pytest.raises(ValueError, match="sqlite"):
        server.server_command("file:///tmp/mlruns", mlflow="mlflow")
    with pytest.raises(ValueError, match="workers"):
        server.server_command(workers=0, mlflow="mlflow")
    env = server.server_env({"PATH": "/bin"})
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and env["PATH"] == "/bin"


def test_http_uri_has_no_file_store_side_effects(tmp_path: Path) -> None:
    uri = "http://127.0.0.1:5000"
    assert tracking.sqlite_path(uri) is None
    assert tracking.artifact_location(uri, "exp") is None  # the server's artifact root decides
    with tracking.store_lock(uri):  # no lock file anywhere
        pass
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_eight_concurrent_trials_lose_nothing(tmp_path: Path) -> None:
    port = _free_port()
    bindir = Path(sys.executable).parent
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_fh:
        proc = subprocess.Popen(
            [str(bindir / "mripipe"), "tracking-server", "--port", str(port),
             "--backend-store-uri", "sqlite:///store/mlflow.db", "--artifacts", "artifacts"],
            cwd=tmp_path, stdout=log_fh, stderr=subprocess.STDOUT,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{uri}/health", proc)
        search_path = tmp_path / "search.json"
        search = search_init("concurrency", uri, {"task": "segmentation", "search": {
            "n_trials": N_TRIALS, "seed": 1, "metric": "val_dice"}}, search_path, workdir=tmp_path)
        trials = [
            subprocess.Popen(
                [sys.executable, "-c", TRIAL, uri, str(search_path), f"trial-{i:03d}", str(i),
                 str(N_EPOCHS)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            )
            for i in range(N_TRIALS)
        ]
        outputs = [t.communicate(timeout=300) for t in trials]
        for t, (_, err) in zip(trials, outputs, strict=True):
            assert t.returncode == 0, err[-3000:]
            assert "locked" not in err.lower(), err[-3000:]

        c = tracking.client(uri)
        runs = c.search_runs([search["mlflow_experiment_id"]],
                             filter_string=f"tags.mlflow.parentRunId = '{search['parent_run_id']}'")
        assert sorted(r.data.tags["trial"] for r in runs) == [f"trial-{i:03d}" for i in range(N_TRIALS)]
        assert {out.split()[-1] for out, _ in outputs} == {r.info.run_id for r in runs}
        logged = 0
        for run in runs:
            index = int(run.data.params["trial.index"])
            assert run.info.status == "FINISHED"
            assert float(run.data.params["optimizer.lr"]) == pytest.approx(0.001 * (index + 1))
            for key in METRICS:
                history = sorted(c.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
                assert [m.step for m in history] == list(range(N_EPOCHS)), (run.data.tags, key)
                logged += len(history)
            loss = sorted(c.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
            assert [m.value for m in loss] == pytest.approx(
                [index + 1.0 / (e + 1) for e in range(N_EPOCHS)])
        assert logged == N_TRIALS * N_EPOCHS * len(METRICS)  # 8 x 25 x 3 = 600, 0 lost
        assert (tmp_path / "store" / "mlflow.db").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log_path.read_text(errors="replace")
    assert "database is locked" not in text.lower(), text[-3000:]
    assert json.loads(search_path.read_text())["tracking_uri"] == uri

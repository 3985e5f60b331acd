"""End to end: the whole Snakemake DAG on a tiny phantom config, in a temporary directory."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "e2e" / "config.yaml"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
    }
    cmd = [
        str(bindir / "snakemake"),
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(CONFIG),
        "--cores", "2",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("e2e")
    proc = _snakemake(workdir, "--keep-going")
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log"))
        )
        pytest.fail(f"snakemake failed\n{proc.stderr[-6000:]}\n{logs}")
    return workdir


def test_data_contract_outputs_exist(run_dir: Path) -> None:
    res = run_dir / "results"
    manifest = pd.read_csv(res / "manifest.tsv", sep="\t")
    assert {"subject", "session", "scan", "T1w", "FLAIR", "label", "class"} <= set(manifest.columns)
    assert manifest["scan"].is_unique and len(manifest) >= 9
    for scan in manifest["scan"]:
        d = res / "preprocessed" / scan
        for name in ("image.nii.gz", "label.nii.gz", "brainmask.nii.gz", "transform.tfm", "qc.json", "qc.png"):
            assert (d / name).is_file(), d / name
    splits = json.loads((res / "splits.json").read_text())
    assert splits["test"] and splits["folds"] and splits["test_sha256"]
    assert (res / "patches" / "index.tsv").is_file()
    for exp in ("lesion_seg", "burden_cls"):
        trial = res / exp / "trials" / "trial-000"
        for name in ("params.json", "checkpoint.pt", "history.tsv", "val_metrics.json"):
            assert (trial / name).is_file(), trial / name
        assert (res / exp / "selected.json").is_file()
        assert any((res / exp / "predictions").iterdir())
        assert (res / exp / "eval" / "metrics.json").is_file()
    assert (res / "summary.json").is_file()
    assert (run_dir / "mlflow.db").is_file()


def test_segmentation_metrics_are_finite_dice(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "results" / "lesion_seg" / "eval" / "metrics.json").read_text())
    per_case = pd.read_csv(run_dir / "results" / "lesion_seg" / "eval" / "per_case.tsv", sep="\t")
    assert len(per_case) > 0
    dice = per_case["dice"].to_numpy(dtype=float)
    assert all(math.isfinite(d) and 0.0 <= d <= 1.0 for d in dice)
    flat = json.dumps(metrics)
    assert "dice" in flat


def test_second_run_has_nothing_to_do(run_dir: Path) -> None:
    proc = _snakemake(run_dir, "-n")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_server_lists_trials_with_params_and_curves(run_dir: Path) -> None:
    """`mlflow ui` at the run's root shows every trial, comparable, with per-epoch curves."""
    port = _free_port()
    bindir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [str(bindir / "mlflow"), "server", "--backend-store-uri", "sqlite:///mlflow.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=run_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"

    def call(path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            f"{base}/{path}", data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                call("experiments/get-by-name?experiment_name=lesion_seg")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(1)
        for name in ("lesion_seg", "burden_cls"):
            exp = call(f"experiments/get-by-name?experiment_name={name}")["experiment"]
            runs = call("runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
            trials = [r for r in runs if "mlflow.parentRunId" in {t["key"] for t in r["data"].get("tags", [])}]
            assert trials, f"{name}: no nested trial run"
            run = trials[0]
            params = {p["key"] for p in run["data"].get("params", [])}
            assert any("lr" in p for p in params), params
            history = call(
                f"metrics/get-history?run_id={run['info']['run_id']}&metric_key=train_loss"
            )["metrics"]
            assert len(history) >= 2  # one point per epoch: a curve, not a number
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_bad_scan_fails_alone_with_one_clear_message(run_dir: Path, tmp_path: Path) -> None:
    """A corrupt scan fails its own job naming the file; the other scans finish; data/ untouched."""
    data = tmp_path / "data" / "phantom"
    shutil.copytree(run_dir / "data" / "phantom", data)
    manifest = pd.read_csv(run_dir / "results" / "manifest.tsv", sep="\t")
    bad_scan = manifest["scan"].iloc[1]
    bad_file = data / Path(manifest["FLAIR"].iloc[1]).relative_to("data/phantom")
    bad_file.write_bytes(b"this is not a NIfTI file")
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    proc = _snakemake(tmp_path, "--keep-going", "results/preprocessed/qc.tsv")

    assert proc.returncode != 0
    log = (tmp_path / "logs" / "preprocess" / f"{bad_scan}.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log
    assert bad_file.name in errors[0] and "cannot be read" in errors[0]
    assert "Traceback" not in log
    assert not (tmp_path / "results" / "preprocessed" / bad_scan / "image.nii.gz").exists()
    for scan in manifest["scan"]:
        if scan != bad_scan:
            assert (tmp_path / "results" / "preprocessed" / scan / "qc.json").is_file(), scan
    after = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    assert after == before  # nothing in data/ is ever written over

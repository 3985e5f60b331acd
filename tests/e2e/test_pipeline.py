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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_data_contract_outputs_exist(run_dir: Path) -> None:
    res = run_dir / "results"
    manifest = pd.read_csv(res / "manifest.tsv", sep="\t")
    assert {"subject", "session", "scan", "T1w", "FLAIR", "label", "class"} <= set(manifest.columns)
    assert manifest["scan"].is_unique and len(manifest) >= 9
    ready = pd.read_csv(res / "manifest.ready.tsv", sep="\t")
    excluded = pd.read_csv(res / "excluded.tsv", sep="\t")
    # every scan is either ready (all preprocessing outputs) or excluded with its reason
    assert len(ready) >= 0.75 * len(manifest)
    assert set(ready["scan"]) | set(excluded["scan"]) == set(manifest["scan"])
    assert not set(ready["scan"]) & set(excluded["scan"])
    assert excluded["reason"].astype(str).str.len().gt(0).all()
    for scan in ready["scan"]:
        d = res / "preprocessed" / scan
        for name in ("image.nii.gz", "label.nii.gz", "brainmask.nii.gz", "transform.tfm", "qc.json",
                     "qc.png", "status.json"):
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


def test_training_loss_falls(run_dir: Path) -> None:
    history = pd.read_csv(run_dir / "results" / "lesion_seg" / "trials" / "trial-000" / "history.tsv",
                          sep="\t")
    losses = history["train_loss"].to_numpy(dtype=float)
    assert len(losses) >= 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses


def test_second_run_has_nothing_to_do(run_dir: Path, run_snakemake: Callable[..., Any]) -> None:
    proc = run_snakemake(run_dir, "-n")
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


def test_bad_scan_fails_alone_with_one_clear_message(run_dir: Path, tmp_path: Path, workflow_copy: Callable[[Path], Path],
                                                     run_snakemake: Callable[..., Any]) -> None:
    """A corrupt scan is caught by validation in one line naming the file; the other scans
    finish; data/ untouched."""
    work = workflow_copy(tmp_path / "repo")
    data = work / "data" / "phantom"
    shutil.copytree(run_dir / "data" / "phantom", data)
    manifest = pd.read_csv(run_dir / "results" / "manifest.tsv", sep="\t")
    bad_scan = manifest["scan"].iloc[1]
    bad_file = data / Path(manifest["FLAIR"].iloc[1]).relative_to("data/phantom")
    bad_file.write_bytes(b"this is not a NIfTI file")
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    proc = run_snakemake(work, "--keep-going", "results/preprocessed/qc.tsv")

    # validation catches it up front, in one line naming the file; the other scans go on
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (work / "logs" / "validate.log").read_text()
    errors = [line for line in log.splitlines() if bad_file.name in line]
    assert len(errors) == 1, log
    assert "readable" in errors[0]
    assert "Traceback" not in log
    valid = pd.read_csv(work / "results" / "manifest.valid.tsv", sep="\t")
    assert bad_scan not in set(valid["scan"])
    assert not (work / "results" / "preprocessed" / bad_scan / "image.nii.gz").exists()
    ready = pd.read_csv(work / "results" / "manifest.ready.tsv", sep="\t")
    # every scan the intact run kept, but the bad one (registration QC drops the same others)
    kept = pd.read_csv(run_dir / "results" / "manifest.ready.tsv", sep="\t")
    assert set(ready["scan"]) == set(kept["scan"]) - {bad_scan}
    for scan in ready["scan"]:
        assert (work / "results" / "preprocessed" / scan / "qc.json").is_file(), scan
    after = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    assert after == before  # nothing in data/ is ever written over


def _planned(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Job counts per rule from a dry run's "Job stats" table ({} when nothing is to be done)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    lines = out[out.index("Job stats:"):].splitlines()[3:]
    counts = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _edited(work: Path, rel: str) -> tuple[Path, bytes, float]:
    path = work / rel
    content, mtime = path.read_bytes(), path.stat().st_mtime
    if path.suffix == ".py":  # a code edit
        path.write_bytes(content + b"\n# edited by the re-run test\n")
    else:  # a table row: one more scan (a copy of the last, under a new name)
        last = content.decode().rstrip("\n").splitlines()[-1].split("\t")
        last[2] = "sub-099_ses-01"
        path.write_bytes(content + ("\t".join(last) + "\n").encode())
    os.utime(path, (time.time() + 5, time.time() + 5))
    return path, content, mtime


def test_reruns_exactly_what_changed(run_dir: Path, tmp_path: Path, run_snakemake: Callable[..., Any]) -> None:
    """A finished run, moved to another folder, plans nothing; editing one module, or replacing
    one raw file, plans exactly the jobs that execute or read it."""
    work = tmp_path / "moved"
    shutil.copytree(run_dir, work, symlinks=True)
    assert _planned(run_snakemake(work, "-n")) == {}
    valid = pd.read_csv(work / "results" / "manifest.valid.tsv", sep="\t")
    n_scans = len(valid)
    cases = {
        # N4 code: every preprocess job (and what follows), nothing upstream
        "src/mripipe/preprocess/intensity.py": ({"preprocess": n_scans},
                                                {"phantom", "manifest", "validate"}),
        # bootstrap statistics: evaluation, not training or inference
        "src/mripipe/evaluate/stats.py": ({"evaluate": 2, "summarise": 1},
                                         {"preprocess", "train", "predict", "package", "patches"}),
        # the training loop: the trials and what follows, not the data
        "src/mripipe/learn/loop.py": ({"train": 2, "package": 2},
                                         {"preprocess", "patches", "split", "manifest"}),
        # the adapters of the evaluation commands: their rules, no other family's
        "src/mripipe/cli/evaluate_commands.py": ({"evaluate": 2, "summarise": 1},
                                                 {"preprocess", "train", "predict", "package", "patches"}),
        # a new manifest (say, one more scan) re-validates but re-plans no scan's preprocessing
        "results/manifest.tsv": ({"validate": 1}, {"preprocess", "manifest", "phantom"}),
    }
    for rel, (expected, untouched) in cases.items():
        path, content, mtime = _edited(work, rel)
        try:
            planned = _planned(run_snakemake(work, "-n"))
        finally:
            path.write_bytes(content)
            os.utime(path, (mtime, mtime))
        for rule, count in expected.items():
            assert planned.get(rule) == count, (rel, planned)
        assert not untouched & set(planned), (rel, planned)
    # replacing one raw image (new content: Snakemake ignores a mere touch) re-runs that scan only
    raw = work / valid["FLAIR"].iloc[0]
    img = sitk.ReadImage(str(raw))
    arr = sitk.GetArrayFromImage(img)
    arr[0, 0, 0] += 1
    new = sitk.GetImageFromArray(arr)
    new.CopyInformation(img)
    sitk.WriteImage(new, str(raw), True)
    folders = [f"results/preprocessed/{scan}" for scan in valid["scan"]]
    planned = _planned(run_snakemake(work, "-n", *folders))
    assert planned.get("preprocess") == 1 and "manifest" not in planned, planned


def test_report_has_every_category(run_dir: Path, run_snakemake: Callable[..., Any]) -> None:
    """`snakemake --report` tells the story: data, preprocessing QC, training, evaluation, summary."""
    proc = run_snakemake(run_dir, "--report", "results/report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (run_dir / "results" / "report.html").read_text()
    for category in ("Data", "Preprocessing", "Training", "Evaluation", "Summary"):
        assert f'"{category}"' in page, category
    # each trial's curves, the search comparison, the model card, the data page, the QC gallery
    for name in ("history.png", "search.png", "card.html", "data.html", "qc.png"):
        assert name in page, name


DVC_PLOTS = ("results/lesion_seg/eval/froc.tsv", "results/lesion_seg/eval/roc.tsv",
             "results/burden_cls/eval/roc.tsv", "results/burden_cls/eval/per_case.tsv",
             "results/lesion_seg/training/history.tsv", "results/burden_cls/training/history.tsv")


def test_dvc_plots_show_renders_the_declared_plots(run_dir: Path, tmp_path: Path) -> None:
    """dvc.yaml's plots render from the run's files in a fresh git + DVC repository."""
    repo = tmp_path / "dvc"
    repo.mkdir()
    shutil.copy2(REPO / "dvc.yaml", repo / "dvc.yaml")
    for rel in DVC_PLOTS:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / rel, repo / rel)
    bindir = Path(sys.executable).parent
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(bindir / "dvc"), "init", "-q"], cwd=repo, check=True, env=env)
    proc = subprocess.run([str(bindir / "dvc"), "plots", "show", "--json"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plots = json.loads(proc.stdout)["data"]
    assert set(plots) == set(DVC_PLOTS)
    for rel, (renderer,) in plots.items():
        rows = renderer["content"]["data"]["values"]
        assert len(rows) == len(pd.read_csv(run_dir / rel, sep="\t")), rel
    confusion = plots["results/burden_cls/eval/per_case.tsv"][0]["content"]
    assert json.dumps(confusion).count("true_class") >= 1 and "rect" in json.dumps(confusion)

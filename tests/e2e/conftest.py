"""The end-to-end tests' shared run: one tiny DAG (tests/e2e/config.yaml) in a copy of the
workflow, run once per session and read by test_pipeline.py (the data contract, re-runs, MLflow,
report, DVC) and test_infer.py (its model package on an unseen subject)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "e2e" / "config.yaml"
BIN = Path(sys.executable).parent


def checkout(dest: Path) -> Path:
    """A copy of the workflow (Snakefile, rules, schema, configs, package source) in ``dest``:
    runs happen in the repository root as a user's do, so code inputs are relative paths."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("Snakefile", "workflow", "config", "src"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    shutil.copy2(CONFIG, dest / "config" / "e2e.yaml")
    return dest


def run_env(workdir: Path) -> dict[str, str]:
    """The venv's tools first on PATH, and the copy's own package source (a user's checkout)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(workdir / "src"), "MLFLOW_DISABLE_TELEMETRY": "true",
            "DVC_NO_ANALYTICS": "1"}


def snakemake(workdir: Path, *args: str, configfile: str = "config/e2e.yaml") -> subprocess.CompletedProcess[str]:
    """Snakemake run in ``workdir`` (a :func:`checkout`)."""
    cmd = [str(BIN / "snakemake"), "--configfile", configfile, "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, env=run_env(workdir), capture_output=True, text=True, timeout=900)


def run_in(workdir: Path, *cmd: str, timeout: int = 1500) -> subprocess.CompletedProcess[str]:
    """A command (``mripipe ...``) run in ``workdir`` with :func:`run_env`."""
    return subprocess.run(list(cmd), cwd=workdir, env=run_env(workdir), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole DAG of the tiny config, run once."""
    workdir = checkout(tmp_path_factory.mktemp("e2e") / "repo")
    proc = snakemake(workdir, "--keep-going")
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log"))
        )
        pytest.fail(f"snakemake failed\n{proc.stderr[-6000:]}\n{logs}")
    return workdir


@pytest.fixture(scope="session")
def workflow_copy() -> Callable[[Path], Path]:
    """:func:`checkout`, for tests that need a fresh copy of the workflow."""
    return checkout


@pytest.fixture(scope="session")
def run_snakemake() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`snakemake`."""
    return snakemake


@pytest.fixture(scope="session")
def run_command() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`run_in`."""
    return run_in

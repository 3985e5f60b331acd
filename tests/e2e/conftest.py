"""The end-to-end tests' shared run: one tiny DAG (tests/e2e/config.yaml) in a copy of the
workflow, run once per session and read by test_pipeline.py (the data contract, re-runs, MLflow,
report, DVC) and test_infer.py (its model package on an unseen subject)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


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
def run_dir(tmp_path_factory: pytest.TempPathFactory, workflow_copy: Callable[[Path], Path]) -> Path:
    """The whole DAG of the tiny config, run once, in a copy of the workflow (tests/conftest.py)."""
    workdir = workflow_copy(tmp_path_factory.mktemp("e2e") / "repo")
    proc = snakemake(workdir, "--keep-going")
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log"))
        )
        pytest.fail(f"snakemake failed\n{proc.stderr[-6000:]}\n{logs}")
    return workdir


@pytest.fixture(scope="session")
def run_snakemake() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`snakemake`."""
    return snakemake


@pytest.fixture(scope="session")
def run_command() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`run_in`."""
    return run_in


@pytest.fixture(scope="session")
def run_environ() -> Callable[[Path], dict[str, str]]:
    """:func:`run_env`."""
    return run_env

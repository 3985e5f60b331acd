"""Shared pytest setup: no telemetry, a single torch thread, GPU tests skipped without CUDA, and
the copy of the workflow that the e2e and cluster tests run in (fixture ``workflow_copy``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


#: test files that must share one pytest-xdist worker: the files reading one session fixture's DAG
#: run (it would run once per worker otherwise), and each other e2e DAG on a worker of its own
XDIST_GROUPS = {
    "tests/e2e/test_pipeline.py": "e2e-run",
    "tests/e2e/test_infer.py": "e2e-run",
    "tests/e2e/test_bad_data.py": "e2e-bad-data",
    "tests/e2e/test_pipeline_multiclass.py": "e2e-multiclass",
}


def _group_for_xdist(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``make test`` runs ``pytest -n 2 --dist loadgroup``: keep each e2e DAG on one worker."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        path = Path(str(item.path)).resolve()
        rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else ""
        if rel in XDIST_GROUPS:
            item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS[rel]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _group_for_xdist(config, items)
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def checkout(dest: Path) -> Path:
    """A copy of the workflow (Snakefile, rules, schema, configs, package source) in ``dest``, with
    the tiny e2e config as ``config/e2e.yaml``: runs happen in the repository root as a user's
    do, so code inputs are relative paths."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("Snakefile", "workflow", "config", "src"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    shutil.copy2(REPO / "tests" / "e2e" / "config.yaml", dest / "config" / "e2e.yaml")
    return dest


@pytest.fixture(scope="session")
def workflow_copy() -> Callable[[Path], Path]:
    """:func:`checkout`, for tests that need a fresh copy of the workflow."""
    return checkout

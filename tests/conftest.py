"""Shared pytest setup: no telemetry, a single torch thread, GPU tests skipped without CUDA, the
copy of the workflow that the e2e and cluster tests run in (fixture ``workflow_copy``), and
oversize NIfTI files written in bounded memory (:func:`write_sparse_nifti`, fixture
``sparse_nifti``)."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


#: test files that must share one pytest-xdist worker: the files reading one session fixture's DAG
#: run (it would run once per worker otherwise); each other e2e DAG is a scope of its own anyway
XDIST_SCOPES = {
    "tests/e2e/test_pipeline.py": "e2e-run",
    "tests/e2e/test_infer.py": "e2e-run",
    "tests/e2e/test_ui_browser.py": "e2e-run",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test`` runs ``pytest -n 2 --dist loadscope``: a module per worker at a time, the two
    modules of the shared e2e run as one scope. (pytest-xdist's ``loadgroup`` marks do not take
    with pytest 9.2: xdist 3.8 renames ``item._nodeid``, which pytest no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return XDIST_SCOPES.get(nodeid.split("::", 1)[0]) or str(super()._split_scope(nodeid))

    return SharedRunScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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


def write_sparse_nifti(path: Path, shape: tuple[int, int, int], spacing: float = 1.0,
                       dtype: type = np.uint8, chunk: int = 64 << 20) -> Path:
    """A ``.nii.gz`` of any size, mostly zeros with a sparse ramp (not constant), written without
    ever holding more than ``chunk`` bytes: the header as one gzip member, then one compressed
    chunk repeated as further members (a valid multi-member gzip that nibabel and ITK read).
    1024^3 uint8 is a 3 MB file of 1 GiB of voxels."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(np.diag([spacing, spacing, spacing, 1.0]), code=1)
    header.set_qform(np.diag([spacing, spacing, spacing, 1.0]), code=1)
    header["vox_offset"] = 352
    total = int(np.prod(shape)) * np.dtype(dtype).itemsize
    block = np.zeros(min(chunk, total), np.uint8)
    block[:: 4093] = np.arange(len(block[:: 4093])) % 200 + 1  # a prime stride: varies over every axis
    packed = gzip.compress(block.tobytes(), compresslevel=1)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(header.binaryblock + b"\0" * 4))
        for _ in range(total // len(block)):
            fh.write(packed)
        if total % len(block):
            fh.write(gzip.compress(block[: total % len(block)].tobytes()))
    return path


@pytest.fixture(scope="session")
def sparse_nifti() -> Callable[..., Path]:
    """:func:`write_sparse_nifti`."""
    return write_sparse_nifti

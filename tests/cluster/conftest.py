"""The SLURM tests run only when asked for (`make test-slurm`, i.e. `pytest -m cluster`): they
install and start a whole cluster, which `make test` must not do."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "cluster" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="SLURM cluster test: run `make test-slurm` (pytest -m cluster)")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)

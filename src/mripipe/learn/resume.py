"""``last.pt``: the random state it saves, atomic writes, and which one a training job continues.

A job continues its own ``last.pt`` when a previous attempt was interrupted (same parameters,
data and trial; not finished; short of this job's budget). A promoted trial of successive halving
(:mod:`mripipe.learn.halving`) otherwise continues the ``last.pt`` of its previous rung's folder,
which is never written to: the new rung's folder gets its own copy of the state.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mripipe.core.errors import InputError
from mripipe.core.utils import atomic_path

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """torch (CPU, CUDA), numpy and Python generator states, storable with ``weights_only``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(cached)],
        "python": [random.getstate()[0], list(random.getstate()[1])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((state["python"][0], tuple(state["python"][1]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_torch(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary name, then rename (a kill never leaves half a file)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _same_run(state: dict[str, Any], params: dict[str, Any], meta: dict[str, Any]) -> bool:
    """Same resolved parameters (trial index included), data and trial."""
    saved = state.get("meta", {})
    return (state.get("params") == params and saved.get("data_hash") == meta.get("data_hash")
            and saved.get("trial") == meta.get("trial"))


def _continues(own: dict[str, Any], source: dict[str, Any]) -> bool:
    """``own`` is a later point of the run that ``source`` saved (NaN-safe history comparison)."""
    n = int(source["epoch"])
    return int(own["epoch"]) >= n and (json.dumps(own["history"][:n], sort_keys=True)
                                       == json.dumps(source["history"], sort_keys=True))


def _source_state(source: Path, params: dict[str, Any], meta: dict[str, Any], stop: int) -> dict[str, Any]:
    path = source / "last.pt"
    if not path.is_file():
        raise InputError(f"{path}: no resume state to continue the trial from (re-run the previous rung)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not _same_run(state, params, meta):
        raise InputError(f"{path}: saved by another trial, parameters or data than "
                         f"{meta.get('trial')} has now (re-run the previous rung)")
    if int(state["epoch"]) > stop:
        raise InputError(f"{path}: already {state['epoch']} epochs, past this rung's budget of {stop}")
    return dict(state)


def resume_state(
    out_dir: Path, params: dict[str, Any], meta: dict[str, Any], stop: int, source: Path | None = None
) -> tuple[dict[str, Any], Path] | None:
    """The ``last.pt`` state a training job continues, and its path; None to start afresh.

    Args:
        out_dir: the job's folder (its own ``last.pt`` of an interrupted attempt).
        params: the resolved trial parameters.
        meta: the job's checkpoint entries (``data_hash``, ``trial``).
        stop: the epoch this job stops at (its rung's budget).
        source: a promoted trial's previous-rung folder; its ``last.pt`` must exist and match.
    """
    src = None if source is None else _source_state(Path(source), params, meta, stop)
    own_path = out_dir / "last.pt"
    if own_path.exists():
        own = torch.load(own_path, map_location="cpu", weights_only=True)
        # Resume only an interrupted attempt on the same parameters and data. A finished job
        # that Snakemake runs again does so because an input changed: it starts afresh.
        if (_same_run(own, params, meta) and not own.get("done") and int(own["epoch"]) < stop
                and (src is None or _continues(own, src))):
            return dict(own), own_path
        log.warning("%s: finished, or its parameters, data or source changed; not resumed", own_path)
    return None if src is None or source is None else (src, Path(source) / "last.pt")

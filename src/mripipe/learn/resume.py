"""``last.pt``: the random state it saves and which one a training job continues (its fields,
reading and writing: :mod:`mripipe.learn.checkpoint`).

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
from mripipe.learn.checkpoint import RESUME, CheckpointMeta, ResumeState, load_resume
from mripipe.learn.trial_params import TrialParams

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


def _same_run(state: ResumeState, params: TrialParams, meta: CheckpointMeta) -> bool:
    """Same resolved parameters (trial index included), data and trial."""
    return (state.params == params and state.meta.data_hash == meta.data_hash
            and state.meta.trial == meta.trial)


def _continues(own: ResumeState, source: ResumeState) -> bool:
    """``own`` is a later point of the run that ``source`` saved (NaN-safe history comparison)."""
    n = source.epoch
    return own.epoch >= n and (json.dumps(own.history[:n], sort_keys=True)
                               == json.dumps(source.history, sort_keys=True))


def _source_state(source: Path, params: TrialParams, meta: CheckpointMeta, stop: int) -> ResumeState:
    path = source / RESUME
    if not path.is_file():
        raise InputError(f"{path}: no resume state to continue the trial from (re-run the previous rung)")
    state = load_resume(path)
    if not _same_run(state, params, meta):
        raise InputError(f"{path}: saved by another trial, parameters or data than "
                         f"{meta.trial} has now (re-run the previous rung)")
    if state.epoch > stop:
        raise InputError(f"{path}: already {state.epoch} epochs, past this rung's budget of {stop}")
    return state


def _own_state(path: Path) -> ResumeState | None:
    """The job's own ``last.pt``; None (warned) when another version of mripipe wrote it."""
    try:
        return load_resume(path)
    except InputError as exc:
        log.warning("%s; not resumed", exc)
        return None


def resume_state(
    out_dir: Path, params: TrialParams, meta: CheckpointMeta, stop: int, source: Path | None = None
) -> tuple[ResumeState, Path] | None:
    """The ``last.pt`` state a training job continues, and its path; None to start afresh.

    Args:
        out_dir: the job's folder (its own ``last.pt`` of an interrupted attempt).
        params: the resolved trial parameters.
        meta: the job's checkpoint entries (``data_hash``, ``trial``).
        stop: the epoch this job stops at (its rung's budget).
        source: a promoted trial's previous-rung folder; its ``last.pt`` must exist and match.
    """
    src = None if source is None else _source_state(Path(source), params, meta, stop)
    own_path = out_dir / RESUME
    own = _own_state(own_path) if own_path.exists() else None
    if own is not None:
        # Resume only an interrupted attempt on the same parameters and data. A finished job
        # that Snakemake runs again does so because an input changed: it starts afresh.
        if (_same_run(own, params, meta) and not own.done and own.epoch < stop
                and (src is None or _continues(own, src))):
            return own, own_path
        log.warning("%s: finished, or its parameters, data or source changed; not resumed", own_path)
    return None if src is None or source is None else (src, Path(source) / RESUME)

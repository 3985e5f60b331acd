"""Rank the trials of a rung on the validation metric and write who goes on (``mripipe rung``).

Reads each trial's ``val_metrics.json`` (validation fold only), ranks the rung's trials (the
highest metric first; ties by trial name, i.e. by trial index; NaN last) and writes
``results/{experiment}/rungs/rung-{r}.json``::

    {"experiment", "rung", "metric", "eta", "budget", "next_budget",
     "ranking": [{"trial", "trial_dir", "value", "epoch"}, ...],
     "survivors": [{"slot", "trial", "trial_dir", "value"}, ...]}

The top ``ceil(n_trials / eta**(r + 1))`` survive: slot ``k`` of rung ``r + 1`` continues the
``k``-th of them (see :mod:`mripipe.learn.halving`). The same files and config always give the
same decisions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import read_json, write_json
from mripipe.learn.halving import ladder, survivors
from mripipe.learn.search import search_metric, search_setting

log = logging.getLogger(__name__)


def rank_trials(
    trial_dirs: Sequence[str | Path], metric: str, names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Trials ranked by ``metric`` from their ``val_metrics.json``, best (highest) first.

    Ties are broken by trial name, shorter first (``trial-999`` before ``trial-1000``: by trial
    index); a NaN value ranks last.

    Args:
        trial_dirs: the trial folders.
        metric: the validation metric (e.g. ``val_dice``).
        names: the trial of each folder (a rung's slots); default the folder names.

    Returns:
        ``[{"trial", "trial_dir", "value", "epoch"}, ...]``.
    """
    if names is not None and len(names) != len(trial_dirs):
        raise InputError(f"{len(trial_dirs)} trial folders but {len(names)} trial names")
    rows = []
    for i, d in enumerate(trial_dirs):
        path = Path(d) / "val_metrics.json"
        metrics = read_json(path)
        if metric not in metrics:
            raise InputError(f"{path}: no {metric!r} (has {sorted(metrics)})")
        value = float(metrics[metric])
        rows.append({"trial": Path(d).name if names is None else str(names[i]), "trial_dir": str(d),
                     "value": value, "epoch": int(metrics.get("epoch", 0))})
    if not rows:
        raise InputError("no trial given to rank")

    def key(row: dict[str, Any]) -> tuple[bool, float, int, str]:
        nan = math.isnan(row["value"])
        return (nan, 0.0 if nan else -row["value"], len(row["trial"]), row["trial"])

    return sorted(rows, key=key)


def rank_rung(
    experiment: str,
    rung: int,
    trial_dirs: Sequence[str | Path],
    params: dict[str, Any],
    out: str | Path,
    previous: str | Path | None = None,
) -> dict[str, Any]:
    """Rank rung ``rung`` of ``experiment`` and write its rung file.

    Args:
        experiment: experiment name.
        rung: the rung ranked (0 .. rungs - 2; the last rung is ranked by ``select``).
        trial_dirs: the rung's folders: the trials (rung 0) or the slots ``0..n-1`` (rung >= 1).
        params: the experiment's config section (``search.*``, ``training.epochs``).
        out: ``results/{experiment}/rungs/rung-{rung}.json``.
        previous: rung ``rung - 1``'s file (which trial each slot holds); rung >= 1 only.

    Returns:
        The rung file's content.
    """
    rungs = ladder(params)
    if not 0 <= rung < len(rungs) - 1:
        raise InputError(f"{experiment}: rung {rung} has no successor to rank for "
                         f"(search.rungs {len(rungs)}: rungs 0..{len(rungs) - 2} are ranked)")
    if len(trial_dirs) != rungs[rung].n_trials:
        raise InputError(f"{experiment}: rung {rung} trains {rungs[rung].n_trials} trials, "
                         f"{len(trial_dirs)} folders given")
    if (previous is None) != (rung == 0):
        raise InputError(f"{experiment}: rung {rung} needs the previous rung's file exactly when rung > 0")
    names = None if previous is None else [row["trial"] for row in survivors(previous)]
    metric = search_metric(params)
    ranking = rank_trials(trial_dirs, metric, names)
    keep = rungs[rung + 1].n_trials
    doc = {
        "experiment": experiment, "rung": rung, "metric": metric,
        "eta": search_setting(params, "eta"), "budget": rungs[rung].budget,
        "next_budget": rungs[rung + 1].budget, "ranking": ranking,
        "survivors": [{"slot": k, "trial": row["trial"], "trial_dir": row["trial_dir"],
                       "value": row["value"]} for k, row in enumerate(ranking[:keep])],
    }
    write_json(out, doc)
    log.info("%s rung %d (%d epochs): %s go on to %d epochs", experiment, rung, rungs[rung].budget,
             ", ".join(f"{r['trial']} ({metric}={r['value']:.4f})" for r in ranking[:keep]),
             rungs[rung + 1].budget)
    return doc


def ladder_record(rung_files: Sequence[str | Path]) -> list[dict[str, Any]]:
    """What selected.json records of the ladder: each ranked rung's budget, ranking and survivors."""
    record = []
    for path in rung_files:
        doc = read_json(path)
        record.append({"rung": doc["rung"], "budget": doc["budget"], "metric": doc["metric"],
                       "ranking": [{"trial": r["trial"], "value": r["value"], "trial_dir": r["trial_dir"]}
                                   for r in doc["ranking"]],
                       "survivors": [r["trial"] for r in doc["survivors"]]})
    return record

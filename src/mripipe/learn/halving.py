"""Successive halving as DAG rungs: the ladder of an experiment and the rung files' survivors.

With ``search.rungs: R`` and ``search.eta: η``, rung ``r`` (0-based) trains
``ceil(n_trials / η**r)`` trials. Every trial follows the schedule of the full budget
(``training.epochs``: warm-up, decay, early stopping), and rung ``r`` stops it at epoch

    budget_r = val_every * floor(epochs / (η**(R - 1 - r) * val_every))   (r < R - 1)
    budget_{R-1} = epochs

so the last rung trains the full budget and each earlier one about ``1/η`` of the next, cut at a
validation epoch. A promoted trial continues its own ``last.pt`` (model, optimiser, schedule,
random state, early-stopping state): its final history is, to the bit on CPU, the history of the
same trial trained for ``epochs`` without interruption. ``R = 1`` is plain random search.

Rung ``r < R - 1`` is ranked by ``mripipe rung`` (:mod:`mripipe.learn.rung`) into
``results/{experiment}/rungs/rung-{r}.json``; its ``survivors`` (rank order, the best first) are
what slot ``k`` of rung ``r + 1`` continues. This module stays light (no torch): the workflow
imports it when the DAG is parsed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import read_json
from mripipe.learn.search import resolve_params, search_setting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rung:
    """One rung of the ladder.

    Attributes:
        index: 0-based rung number.
        n_trials: trials (jobs) trained in this rung.
        budget: the epoch of the full schedule at which this rung stops its trials.
    """

    index: int
    n_trials: int
    budget: int


@dataclass(frozen=True)
class RungJob:
    """Where one training job sits on the ladder.

    Attributes:
        rung: 0 for the first rung (a fresh trial), ``r`` for a promoted one.
        stop_at: the rung's budget in epochs (None: ``training.epochs``).
        resume_from: the folder whose ``last.pt`` a promoted trial continues (None: rung 0).
    """

    rung: int = 0
    stop_at: int | None = None
    resume_from: Path | None = None


def ladder(params: dict[str, Any]) -> list[Rung]:
    """The rungs of an experiment (its config section), in order.

    Raises:
        InputError: the budgets do not grow strictly from at least one epoch, or the search space
            samples ``training.epochs`` or ``training.val_every`` (the ladder must be static).
    """
    rungs, eta = search_setting(params, "rungs"), search_setting(params, "eta")
    n_trials = search_setting(params, "n_trials")
    if rungs < 1 or eta < 2:
        raise InputError(f"search.rungs {rungs} / search.eta {eta}: need rungs >= 1 and eta >= 2")
    space = (params.get("search") or {}).get("space") or {}
    searched = sorted({"training.epochs", "training.val_every"} & set(space))
    if rungs > 1 and searched:
        raise InputError(f"search.space samples {searched}: successive halving (search.rungs "
                         f"{rungs}) needs the epochs and val_every of every trial fixed")
    training = resolve_params(params, 0).training
    epochs, every = training.epochs, max(1, training.val_every)
    out = []
    for r in range(rungs):
        shrink = eta ** (rungs - 1 - r)
        budget = epochs if r == rungs - 1 else every * (epochs // (shrink * every))
        out.append(Rung(r, -(-n_trials // eta**r), budget))
    budgets = [x.budget for x in out]
    if budgets[0] < 1 or any(a >= b for a, b in zip(budgets, budgets[1:], strict=False)):
        raise InputError(
            f"search.rungs {rungs} with eta {eta} gives rung budgets {budgets} epochs "
            f"(training.epochs {epochs}, cut at multiples of val_every {every}); they must grow "
            "from at least one epoch: use fewer rungs, a smaller eta or more epochs")
    return out


def survivors(rung_file: str | Path) -> list[dict[str, Any]]:
    """The survivors of a ranked rung, in slot order: ``[{"slot", "trial", "trial_dir", "value"}]``."""
    doc = read_json(rung_file)
    if "survivors" not in doc or "rung" not in doc:
        raise InputError(f"{rung_file}: not a rung file (no 'rung'/'survivors')")
    return list(doc["survivors"])


def promoted(rung_file: str | Path, slot: int, budget: int | None) -> tuple[str, RungJob]:
    """The trial in ``slot`` of the rung after ``rung_file``, and its job (continue, stop at ``budget``).

    Returns:
        ``(trial, job)``: e.g. ``("trial-003", RungJob(1, 24, Path("results/x/trials/trial-003")))``.
    """
    rows = survivors(rung_file)
    if not 0 <= slot < len(rows):
        raise InputError(f"{rung_file}: slot {slot} requested, {len(rows)} trials survive this rung")
    row = rows[slot]
    rung = int(read_json(rung_file)["rung"]) + 1
    log.info("rung %d slot %d: %s continues from %s", rung, slot, row["trial"], row["trial_dir"])
    return str(row["trial"]), RungJob(rung, budget, Path(row["trial_dir"]))

"""``mripipe choose``: the best trial of a search on the validation metric only (``choice.json``).

Only each trial's ``val_metrics.json`` (validation fold) decides; the test split is never read.
The choice comes first, so that with ``split.n_folds > 1`` the fold jobs can train the chosen
configuration on the other folds (:mod:`mripipe.learn.folds`); ``mripipe package``
(:mod:`mripipe.learn.package`) then writes the model package and ``selected.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mripipe.core.utils import write_json
from mripipe.learn.halving import survivors
from mripipe.learn.rung import ladder_record, rank_trials
from mripipe.learn.search import search_metric

__all__ = ["choose_trial", "rank_trials"]

log = logging.getLogger(__name__)


def choose_trial(experiment: str, trial_dirs: Sequence[str | Path], params: dict[str, Any],
                 out: str | Path | None = None, rung_files: Sequence[str | Path] = ()) -> dict[str, Any]:
    """The trial with the highest validation metric (``mripipe choose``: ``choice.json``).

    Args:
        experiment: experiment name.
        trial_dirs: the trial folders (each with ``val_metrics.json``).
        params: the experiment's config section (``search.metric``).
        out: ``results/{experiment}/choice.json``; None = not written.
        rung_files: successive halving: the ranked rungs' files, in order; ``trial_dirs`` are then
            the last rung's slots, holding the survivors of the last file.

    Returns:
        ``{"experiment", "trial", "trial_dir", "metric", "value", "epoch", "ranking"}`` and
        ``"rungs"`` (:func:`~mripipe.learn.rung.ladder_record`) with ``rung_files``.
    """
    metric = search_metric(params)
    names = [row["trial"] for row in survivors(rung_files[-1])] if rung_files else None
    ranking = rank_trials(trial_dirs, metric, names)
    best = ranking[0]
    doc = {"experiment": experiment, "trial": best["trial"], "trial_dir": best["trial_dir"],
           "metric": metric, "value": best["value"], "epoch": best["epoch"], "ranking": ranking}
    if rung_files:  # which trial each slot held, and every rung's decisions
        doc["rungs"] = ladder_record(rung_files)
    if out is not None:
        write_json(out, doc)
    log.info("%s: chose %s (%s=%.4f) of %d trials", experiment, best["trial"], metric,
             best["value"], len(ranking))
    return doc

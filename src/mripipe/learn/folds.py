"""k-fold selection and fold ensembles (``split.n_folds: k > 1``).

The search (trials, rungs) runs on the experiment's ``fold`` (default 0). ``mripipe choose``
(:func:`mripipe.learn.choose.choose_trial`) then fixes the selected trial in
``results/{experiment}/choice.json``, and one ``train_fold`` job per other fold ``f`` trains that
trial's configuration on fold ``f`` from scratch (``results/{experiment}/folds/fold-{f}``): the
same resolved parameters, the same seed (``derive_seed(seed, "train", experiment, trial)``), the
full budget (``training.epochs``, the last rung's), its own MLflow run ``{trial}-fold-{f}``. The
search fold's member is the selected trial itself. So fold ``f``'s model is exactly what the
selected trial would have been with ``fold: f``.

``mripipe package`` then chooses the post-processing on the pooled out-of-fold validation predictions
(each member predicts its own fold's validation scans) and writes one weight file per member into
the package; ``model.json`` ``ensemble`` lists them, and :mod:`mripipe.infer.ensemble` averages
their softmax probabilities. With ``k = 1`` there is no fold job and no ``ensemble`` entry.

This module stays light (no torch at import): the workflow imports it when the DAG is parsed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import read_json

log = logging.getLogger(__name__)

#: model.json ``ensemble.combine``: how the members' outputs are combined.
COMBINE = "mean of the members' softmax probabilities"


def search_fold(params: Mapping[str, Any]) -> int:
    """The fold the search trains and validates on (the experiment's ``fold``, default 0)."""
    return int(params.get("fold", 0))


def other_folds(params: Mapping[str, Any], n_folds: int) -> list[int]:
    """The folds a ``train_fold`` job trains the selected configuration on (none when ``k = 1``).

    Raises:
        InputError: the experiment's ``fold`` is not one of the ``n_folds`` folds.
    """
    fold = search_fold(params)
    if not 0 <= fold < max(1, n_folds):
        raise InputError(f"experiment fold {fold}: split.n_folds is {n_folds} (folds 0..{n_folds - 1})")
    return [f for f in range(n_folds) if f != fold]


def fold_job(choice: str | Path, params: Mapping[str, Any], fold: int) -> tuple[str, dict[str, Any], str]:
    """What ``mripipe train --choice FILE --fold F`` trains.

    Args:
        choice: ``results/{experiment}/choice.json`` (``trial``).
        params: the experiment's config section.
        fold: the fold to train and validate on.

    Returns:
        ``(trial, params with fold F, MLflow run name)``: e.g. ``("trial-003", {..., "fold": 2},
        "trial-003-fold-2")``.
    """
    doc = read_json(choice)
    if "trial" not in doc:
        raise InputError(f"{choice}: not a choice file (no 'trial')")
    if fold == search_fold(params):
        raise InputError(f"{choice}: fold {fold} is the search fold; its member is {doc['trial']} itself")
    trial = str(doc["trial"])
    log.info("%s: the selected configuration trained on fold %d", trial, fold)
    return trial, {**params, "fold": int(fold)}, f"{trial}-fold-{fold}"


def fold_members(trial_dir: str | Path, fold_dirs: Sequence[str | Path]) -> dict[int, Path]:
    """The ensemble members by fold: the selected trial (its checkpoint's fold) and the fold jobs.

    Raises:
        InputError: two members trained on the same fold, or a checkpoint without a fold.
    """
    from mripipe.learn.checkpoint import CHECKPOINT, load_checkpoint

    members: dict[int, Path] = {}
    for d in [trial_dir, *fold_dirs]:
        path = Path(d) / CHECKPOINT
        fold = load_checkpoint(path).meta.fold
        if fold is None:
            raise InputError(f"{path}: checkpoint without a fold")
        if fold in members:
            raise InputError(f"{path}: fold {fold} already has a member ({members[fold]})")
        members[fold] = Path(d)
    return dict(sorted(members.items()))


def member_rows(members: Mapping[int, str | Path], metric: str) -> list[dict[str, Any]]:
    """selected.json ``folds``: each member's own validation ``metric`` and best epoch."""
    rows = []
    for fold, d in sorted(members.items()):
        m = read_json(Path(d) / "val_metrics.json")
        rows.append({"fold": fold, "trial_dir": str(d), "value": float(m.get(metric, float("nan"))),
                     "epoch": int(m.get("epoch", 0))})
    return rows


def write_members(out_dir: Path, members: Mapping[int, str | Path], selected: str | Path,
                  selected_weights: Mapping[str, Any]) -> dict[str, Any]:
    """Write every member's weights into a package folder; the selected one is already there.

    Args:
        out_dir: the package folder being written.
        members: :func:`fold_members`.
        selected: the selected trial's folder (its weights are ``selected_weights``).
        selected_weights: model.json ``weights`` of the selected trial.

    Returns:
        model.json ``ensemble``: ``{"combine", "n_members", "members": [{"fold", "file",
        "sha256", "trial_dir", "epoch"}]}`` in fold order.

    Raises:
        InputError: a member whose network differs from the selected one's.
    """
    from mripipe.core.utils import sha256_file
    from mripipe.learn.checkpoint import CHECKPOINT, load_checkpoint, save_state_dict

    ref = load_checkpoint(Path(selected) / CHECKPOINT)
    rows = []
    for fold, d in sorted(members.items()):
        path = Path(d) / CHECKPOINT
        ckpt = load_checkpoint(path)
        for key in ("task", "in_channels", "n_classes"):
            if getattr(ckpt.meta, key) != getattr(ref.meta, key):
                raise InputError(f"{path}: {key} {getattr(ckpt.meta, key)!r} differs from the "
                                 f"selected {getattr(ref.meta, key)!r}")
        if ckpt.params.network != ref.params.network:
            raise InputError(f"{path}: network differs from the selected trial's")
        if Path(d) == Path(selected):
            file, sha = str(selected_weights["file"]), str(selected_weights["sha256"])
        else:
            file = f"weights-fold-{fold}.pt"
            save_state_dict(ckpt.model, out_dir / file)
            sha = sha256_file(out_dir / file)
        rows.append({"fold": fold, "file": file, "sha256": sha, "trial_dir": str(d),
                     "epoch": ckpt.epoch})
    return {"combine": COMBINE, "n_members": len(rows), "members": rows}

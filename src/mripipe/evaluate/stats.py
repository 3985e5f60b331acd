"""Classification metrics and subject-level bootstrap confidence intervals.

Confusion matrix rows are true classes, columns predicted classes (scikit-learn's convention).
Bootstrap CIs are 95 % percentile intervals over test subjects, resampled with replacement by
subject (all scans of a drawn subject come along), seeded through :func:`mripipe.core.utils.rng`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from mripipe.core.roc import confusion, roc_auc
from mripipe.core.utils import interactive, rng

log = logging.getLogger(__name__)


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str],
                           proba: np.ndarray | None = None) -> dict[str, Any]:
    """Confusion matrix, accuracy, balanced accuracy, per-class sensitivity/specificity, AUROC.

    Args:
        y_true: true class per subject, length N.
        y_pred: predicted class per subject, length N.
        classes: class names; index = row/column of the confusion matrix.
        proba: class probabilities, shape (N, K) in the order of ``classes``; None skips AUROC.

    Returns:
        ``{"confusion": (K, K) int array, "accuracy", "balanced_accuracy",
        "sensitivity": {class: v}, "specificity": {class: v}, "auroc": {class: v},
        "auroc_macro"}``; a value that is undefined on this set (no true member of a class,
        only one class present) is NaN.
    """
    classes = list(classes)
    cm = confusion(list(y_true), list(y_pred), classes)
    n = cm.sum()
    tp = np.diag(cm).astype(float)
    pos = cm.sum(axis=1).astype(float)
    neg = n - pos
    tn = n - cm.sum(axis=0) - pos + tp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(pos > 0, tp / pos, np.nan)
        spec = np.where(neg > 0, tn / neg, np.nan)
    # balanced accuracy = mean recall over the classes present in y_true (scikit-learn's
    # balanced_accuracy_score, read off the same confusion matrix)
    out: dict[str, Any] = {
        "confusion": cm,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "balanced_accuracy": float(np.mean(sens[pos > 0])) if (pos > 0).any() else float("nan"),
        "sensitivity": dict(zip(classes, map(float, sens), strict=True)),
        "specificity": dict(zip(classes, map(float, spec), strict=True)),
    }
    if proba is not None:
        auc = {c: ovr_auroc(y_true, proba[:, k], c) for k, c in enumerate(classes)}
        out["auroc"] = auc
        finite = [v for v in auc.values() if np.isfinite(v)]
        out["auroc_macro"] = float(np.mean(finite)) if finite else float("nan")
    return out


def ovr_auroc(y_true: Sequence[str], score: np.ndarray, positive: str) -> float:
    """One-vs-rest AUROC of ``score`` for class ``positive`` (NaN unless both groups occur)."""
    y = np.array([t == positive for t in y_true], dtype=int)
    if y.min(initial=1) == y.max(initial=0):
        return float("nan")
    return roc_auc(y, score)


def bootstrap_ci(subjects: Sequence[str], statistic: Callable[[list[str]], dict[str, float]],
                 n_boot: int, seed: int, stage: str = "evaluate", level: float = 0.95
                 ) -> dict[str, list[float | None]]:
    """Percentile confidence intervals by resampling subjects with replacement.

    Args:
        subjects: the distinct test subjects.
        statistic: maps a resampled subject list (duplicates allowed) to ``{metric: value}``.
        n_boot: number of resamples; 0 returns no interval.
        seed: master seed (the stream is ``derive_seed(seed, stage, "bootstrap")``).
        stage: stage name for the derived seed (e.g. the experiment).
        level: coverage of the interval.

    Returns:
        ``{metric: [low, high]}``; ``[None, None]`` when no resample gave a finite value.
    """
    subjects = list(subjects)
    if n_boot <= 0 or not subjects:
        return {}
    gen = rng(seed, stage, "bootstrap")
    draws: dict[str, list[float]] = {}
    for _ in tqdm(range(n_boot), desc=f"bootstrap {stage}", unit="resample", disable=not interactive(),
                  leave=False):
        sample = [subjects[i] for i in gen.integers(0, len(subjects), len(subjects))]
        for key, value in statistic(sample).items():
            draws.setdefault(key, []).append(float(value))
    alpha = (1.0 - level) / 2.0
    out: dict[str, list[float | None]] = {}
    for key, values in draws.items():
        arr = np.asarray(values)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            out[key] = [None, None]
        else:
            lo, hi = np.quantile(arr, [alpha, 1.0 - alpha])
            out[key] = [float(lo), float(hi)]
    return out



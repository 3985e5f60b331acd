"""ROC AUC, average precision and the confusion matrix in plain numpy.

Each computes exactly what scikit-learn 1.9 computes, operation for operation, so the values are
bit-identical (``tests/unit/core/test_ranking.py`` compares them on random inputs with ties). They
exist for speed: the bootstrap CIs call them once per resample, and scikit-learn's input
validation (``type_of_target``, ``check_array``) cost 20-36 ms per call, about 25 s of each
evaluation job with 1,000 resamples (measured with cProfile), for arrays of a few dozen values.
Inputs are trusted here: 1-D, finite, the same length; callers check that both classes occur.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def _counts_at_thresholds(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """False and true positives (``y_true == 1``) at each distinct score, in descending order
    (sklearn's ``confusion_matrix_at_thresholds``)."""
    s = np.asarray(score)
    order = s.shape[0] - 1 - np.argsort(s[::-1], kind="stable")[::-1]  # stable descending
    s, y = s[order], (np.asarray(y_true) == 1)[order].astype(np.float64)
    idx = np.concatenate([np.nonzero(np.diff(s))[0], [y.shape[0] - 1]])
    tps = np.cumsum(y)[idx]
    fps = 1 + idx.astype(np.float64) - tps
    return fps, tps


def roc_auc(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float:
    """Binary ROC AUC (``sklearn.metrics.roc_auc_score``): positives are ``y_true == 1``."""
    fps, tps = _counts_at_thresholds(y_true, score)
    if fps.shape[0] > 2:  # drop_intermediate: collinear points
        keep = np.where(np.concatenate([[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]]))[0]
        fps, tps = fps[keep], tps[keep]
    tps, fps = np.concatenate([[0.0], tps]), np.concatenate([[0.0], fps])
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))


def average_precision(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float:
    """Binary average precision (``sklearn.metrics.average_precision_score``), ``y_true == 1``."""
    fps, tps = _counts_at_thresholds(y_true, score)
    ps = tps + fps
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(ps != 0, np.divide(tps, ps), 0.0)
    recall = tps / tps[-1]
    precision = np.concatenate((np.flip(precision), [1.0]))
    recall = np.concatenate((np.flip(recall), [0.0]))
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def confusion(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
              labels: Sequence[Hashable]) -> np.ndarray:
    """(K, K) int64 counts, rows true and columns predicted, in ``labels`` order; pairs with a
    value outside ``labels`` are left out (``sklearn.metrics.confusion_matrix``)."""
    index = {c: i for i, c in enumerate(labels)}
    cm = np.zeros((len(index), len(index)), np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    return cm

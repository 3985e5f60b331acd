"""core.roc equals scikit-learn bit for bit (the bootstrap CIs and published numbers rest on it)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from mripipe.core.roc import average_precision, confusion, roc_auc


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    cases = []
    for n in (2, 3, 5, 11, 40, 300):
        for ties in (False, True):
            for _ in range(20):
                y = rng.integers(0, 2, n)
                if y.min() == y.max():
                    y[0] = 1 - y[0]
                s = rng.random(n)
                if ties:  # few distinct values: tied scores across both classes
                    s = np.round(s * 3) / 3
                cases.append((y, s.astype(rng.choice([np.float32, np.float64]))))
    return cases


@pytest.mark.parametrize("k", range(0, 240, 7))
def test_roc_auc_and_ap_equal_sklearn(k: int) -> None:
    y, s = _cases()[k]
    assert roc_auc(y, s) == roc_auc_score(y, s)
    assert average_precision(y, s) == average_precision_score(y, s)


def test_all_cases_equal_sklearn_and_edge_cases() -> None:
    for y, s in _cases():
        assert roc_auc(y, s) == roc_auc_score(y, s)
        assert average_precision(y, s) == average_precision_score(y, s)
    only_pos = np.ones(4)
    assert average_precision(only_pos, [0.9, 0.2, 0.5, 0.5]) == average_precision_score(only_pos, [0.9, 0.2, 0.5, 0.5])
    assert roc_auc([0, 1], [0.1, 0.9]) == 1.0
    assert roc_auc([1, 0], [0.1, 0.9]) == 0.0


def test_confusion_equals_sklearn() -> None:
    rng = np.random.default_rng(3)
    labels = ["none", "low", "high"]
    for _ in range(50):
        t = list(rng.choice(labels + ["other"], 12))
        p = list(rng.choice(labels, 12))
        got = confusion(t, p, labels)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, confusion_matrix(t, p, labels=labels))

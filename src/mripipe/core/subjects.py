"""Scan-level class scores aggregated to subjects (the unit of the classification metrics)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def subject_predictions(table: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Subject level: mean class probabilities over a subject's scans, predicted = argmax.

    Returns:
        Indexed by subject: ``true_class``, ``n_scans``, ``prob_<class>``..., ``pred_class``.
    """
    prob_cols = [f"prob_{c}" for c in classes]
    grouped = table.groupby("subject")
    subj = grouped[prob_cols].mean()
    subj.insert(0, "true_class", grouped["true_class"].agg(lambda s: next((c for c in s if c), "")))
    subj.insert(1, "n_scans", grouped.size())
    subj["pred_class"] = [classes[i] for i in np.argmax(subj[prob_cols].to_numpy(), axis=1)]
    return subj

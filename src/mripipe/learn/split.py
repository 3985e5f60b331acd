"""Patient-level stratified splits with a locked test set, and the leakage guard.

The unit of splitting is the **subject**: the manifest (one row per scan) is reduced to one row per
subject with its class, and scikit-learn's stratified splitters split those rows. Every session of
a subject therefore lands in the same set by construction (exact grouping), and stratification
balances *subjects* per class — each class's count in a set is within one subject of the ideal.
(``StratifiedGroupKFold`` on scan rows would balance scans, counting a two-session subject twice,
and only approximately.)

- Test hold-out: ``StratifiedShuffleSplit`` with ``test_fraction``.
- Folds over the remaining subjects: ``StratifiedKFold(n_folds)``; ``n_folds = 1`` gives one
  train/val split by ``StratifiedShuffleSplit`` with ``val_fraction``.
- Classes with a single subject are pooled into one stratum. When stratifying is still impossible
  (fewer held-out places than classes, or a class with fewer subjects than folds), the split
  falls back to the unstratified ``ShuffleSplit``/``KFold`` and logs a warning.

Seeds are ``derive_seed(seed, "split", "test")`` and ``derive_seed(seed, "split", "folds")``.

:func:`load_splits` is the leakage guard every reader goes through: a subject in two of
train/val/test (within any fold), or a test list whose sha256 differs from the recorded one, raises
one error naming the file before any work. Roles ``train`` and ``select`` get the split without
its test list, so training and selection cannot open test scans even by mistake.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, ShuffleSplit, StratifiedKFold, StratifiedShuffleSplit

from mripipe.core.config import param
from mripipe.core.errors import InputError
from mripipe.core.split_guard import check_splits, hash_test_list
from mripipe.core.utils import derive_seed, write_json
from mripipe.data.manifest import read_manifest

log = logging.getLogger(__name__)



def subject_classes(manifest: pd.DataFrame) -> pd.Series:
    """One class per subject (sorted by subject); empty classes become ``""``.

    Raises:
        ValueError: a subject whose sessions disagree on the class.
    """
    if "subject" not in manifest:
        raise InputError("no 'subject' column")
    cls = manifest["class"] if "class" in manifest else pd.Series("", index=manifest.index)
    table = pd.DataFrame({"subject": manifest["subject"].astype(str),
                          "class": cls.fillna("").astype(str)})
    per_subject = table.groupby("subject")["class"].unique()
    mixed = per_subject[per_subject.map(len) > 1]
    if len(mixed):
        raise InputError(f"subjects with sessions of different classes: {list(mixed.index[:5])}")
    return per_subject.map(lambda v: v[0]).sort_index()


def _strata(classes: np.ndarray) -> np.ndarray:
    """Classes with a single subject pooled into one stratum (into the largest class if alone)."""
    counts = Counter(classes.tolist())
    rare = {c for c, n in counts.items() if n < 2}
    if not rare:
        return classes
    pooled = "\x00rare" if sum(counts[c] for c in rare) >= 2 else counts.most_common(1)[0][0]
    log.info("classes %s have one subject each; stratified together", sorted(rare))
    return np.array([pooled if c in rare else c for c in classes.tolist()])


def _hold_out(
    subjects: np.ndarray, classes: np.ndarray, fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``subjects`` into (kept, held out) with a stratified shuffle split."""
    try:
        splitter: Any = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        kept, held = next(splitter.split(subjects, _strata(classes)))
    except ValueError as exc:
        log.warning("%s split cannot be stratified (%s); using an unstratified split", what, exc)
        splitter = ShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        kept, held = next(splitter.split(subjects))
    return subjects[kept], subjects[held]


def _folds(subjects: np.ndarray, classes: np.ndarray, k: int, seed: int) -> list[dict[str, list[str]]]:
    """k stratified folds over ``subjects`` (unstratified if a class has fewer than k subjects)."""
    if k > len(subjects):
        raise InputError(f"n_folds = {k} but only {len(subjects)} non-test subjects")
    strata = _strata(classes)
    if min(Counter(strata.tolist()).values()) >= k:
        splitter: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        pairs = splitter.split(subjects, strata)
    else:
        log.warning("a class has fewer than %d subjects; folds are not stratified", k)
        pairs = KFold(n_splits=k, shuffle=True, random_state=seed).split(subjects)
    return [{"train": sorted(subjects[tr]), "val": sorted(subjects[va])} for tr, va in pairs]


def make_splits(manifest: pd.DataFrame, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Patient-level stratified split: a locked test set and k train/val folds.

    Args:
        manifest: ``results/manifest.tsv`` as a DataFrame (``subject``, ``class``; one row per scan).
        params: the ``split`` config section (``test_fraction``, ``n_folds``, ``val_fraction``).
        seed: master seed.

    Returns:
        ``{"seed", "test", "test_sha256", "folds": [{"train", "val"}], "class_counts",
        "n_folds", "test_fraction", "val_fraction", "n_subjects", "n_scans"}``; ``class_counts``
        counts subjects per class: ``{"test": {...}, "folds": [{"train": {...}, "val": {...}}]}``.
    """
    test_fraction = float(param("split", params, "test_fraction"))
    n_folds = int(param("split", params, "n_folds"))
    val_fraction = float(param("split", params, "val_fraction"))
    per_subject = subject_classes(manifest)
    subjects = per_subject.index.to_numpy(dtype=str)
    classes = per_subject.to_numpy(dtype=str)
    if len(subjects) < 3:
        raise InputError(f"{len(subjects)} subjects; at least 3 are needed to split")
    rest, test = _hold_out(subjects, classes, test_fraction, derive_seed(seed, "split", "test"), "test")
    of = dict(zip(subjects, classes, strict=True))
    rest_classes = np.array([of[s] for s in rest])
    fold_seed = derive_seed(seed, "split", "folds")
    if n_folds == 1:
        train, val = _hold_out(rest, rest_classes, val_fraction, fold_seed, "validation")
        folds = [{"train": sorted(train), "val": sorted(val)}]
    else:
        folds = _folds(rest, rest_classes, n_folds, fold_seed)
    for k, fold in enumerate(folds):
        if not fold["train"] or not fold["val"]:
            raise InputError(f"fold {k} has an empty train or val set; add subjects")

    def counts(group: list[str]) -> dict[str, int]:
        return {str(c): int(n) for c, n in sorted(Counter(of[s] for s in group).items())}

    test_list = sorted(str(s) for s in test)
    return {
        "seed": int(seed),
        "test": test_list,
        "test_sha256": hash_test_list(test_list),
        "folds": [{"train": [str(s) for s in f["train"]], "val": [str(s) for s in f["val"]]}
                  for f in folds],
        "class_counts": {
            "all": counts(list(subjects)),
            "test": counts(test_list),
            "folds": [{"train": counts(f["train"]), "val": counts(f["val"])} for f in folds],
        },
        "n_folds": n_folds,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "n_subjects": len(subjects),
        "n_scans": len(manifest),
    }


def write_splits(manifest: Path, params: dict[str, Any], seed: int, out: Path) -> dict[str, Any]:
    """``mripipe split``: :func:`make_splits` of the manifest's subjects, checked by the leakage
    guard and written to ``out`` (``results/splits.json``)."""
    table = read_manifest(manifest)
    try:
        splits = make_splits(table, params, seed)
    except ValueError as exc:
        raise InputError(f"{manifest}: {exc}") from None
    check_splits(splits, out)
    write_json(out, splits)
    counts = splits["class_counts"]
    log.info("test: %d subjects %s; %d fold(s); first fold train %s val %s -> %s",
             len(splits["test"]), counts["test"], len(splits["folds"]),
             counts["folds"][0]["train"], counts["folds"][0]["val"], out)
    return splits

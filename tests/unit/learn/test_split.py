"""Tests of mripipe.learn.split: patient-level stratified splits and the leakage guard."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from mripipe.core.split_guard import hash_test_list, load_splits
from mripipe.learn.split import make_splits, write_splits


def cohort(n: int = 40, two_session_every: int = 4) -> pd.DataFrame:
    """A manifest of ``n`` subjects, classes none/low/high in turn, every 4th with two sessions.

    40 subjects -> 14 none, 13 low, 13 high; 10 subjects have 2 sessions (50 scans).
    """
    classes = ["none", "low", "high"]
    rows = []
    for i in range(n):
        subject = f"sub-{i:03d}"
        sessions = 2 if i % two_session_every == 0 else 1
        for j in range(1, sessions + 1):
            rows.append({"subject": subject, "session": f"ses-{j:02d}",
                         "scan": f"{subject}_ses-{j:02d}", "class": classes[i % 3]})
    return pd.DataFrame(rows)


def sets_of(splits: dict) -> list[dict[str, set[str]]]:
    return [{"train": set(f["train"]), "val": set(f["val"]), "test": set(splits["test"])}
            for f in splits["folds"]]


@pytest.mark.parametrize("n_folds", [1, 3])
def test_no_subject_in_two_sets_and_all_sessions_together(n_folds: int) -> None:
    manifest = cohort()
    splits = make_splits(manifest, {"test_fraction": 0.25, "n_folds": n_folds}, seed=42)
    assert len(splits["folds"]) == n_folds
    for sets in sets_of(splits):
        assert not sets["train"] & sets["val"]
        assert not sets["train"] & sets["test"]
        assert not sets["val"] & sets["test"]
        # Every subject (hence every session of it) is in exactly one set.
        assert sets["train"] | sets["val"] | sets["test"] == set(manifest["subject"])
    if n_folds > 1:
        # k-fold: each non-test subject is validation exactly once.
        vals = Counter(s for f in splits["folds"] for s in f["val"])
        assert set(vals.values()) == {1}


def test_class_proportions_within_one_subject_of_ideal() -> None:
    # Ideal counts: test = 25 % of each class (14 -> 3.5, 13 -> 3.25); the 30 others are split
    # into 3 folds: validation = a third of each remaining class.
    manifest = cohort()
    totals = Counter(manifest.drop_duplicates("subject")["class"])
    splits = make_splits(manifest, {"test_fraction": 0.25, "n_folds": 3}, seed=7)
    test_counts = splits["class_counts"]["test"]
    for cls, n in totals.items():
        assert abs(test_counts.get(cls, 0) - 0.25 * n) <= 1
        rest = n - test_counts.get(cls, 0)
        for fold in splits["class_counts"]["folds"]:
            assert abs(fold["val"].get(cls, 0) - rest / 3) <= 1
            assert fold["train"].get(cls, 0) + fold["val"].get(cls, 0) == rest
    single = make_splits(manifest, {"test_fraction": 0.25, "n_folds": 1, "val_fraction": 0.2}, 7)
    for cls, n in totals.items():
        rest = n - single["class_counts"]["test"].get(cls, 0)
        assert abs(single["class_counts"]["folds"][0]["val"].get(cls, 0) - 0.2 * rest) <= 1


def test_seeded() -> None:
    manifest = cohort()
    params = {"test_fraction": 0.25, "n_folds": 1}
    a, b = make_splits(manifest, params, 1), make_splits(manifest, params, 1)
    c = make_splits(manifest, params, 2)
    assert a == b
    assert a["test"] != c["test"] or a["folds"] != c["folds"]
    assert a["seed"] == 1 and a["test_sha256"] == hash_test_list(a["test"])


def test_sessions_with_different_classes_raise() -> None:
    manifest = cohort(6)
    manifest.loc[1, "class"] = "high"  # sub-000 ses-02 disagrees with ses-01
    with pytest.raises(ValueError, match="sub-000"):
        make_splits(manifest, {}, 0)


def write_split(tmp_path: Path) -> Path:
    path = tmp_path / "splits.json"
    manifest = tmp_path / "manifest.tsv"
    cohort(20).to_csv(manifest, sep="\t", index=False)
    write_splits(manifest, {"n_folds": 2}, 3, path)
    return path


def test_load_splits_roles(tmp_path: Path) -> None:
    path = write_split(tmp_path)
    full = load_splits(path, "predict")
    assert full["test"] and len(full["folds"]) == 2
    hidden = load_splits(path, "train")
    assert "test" not in hidden and hidden["folds"] == full["folds"]
    with pytest.raises(ValueError, match="unknown role"):
        load_splits(path, "peek")


@pytest.mark.parametrize("where", ["train", "val"])
def test_planted_leak_raises(tmp_path: Path, where: str) -> None:
    path = write_split(tmp_path)
    data = json.loads(path.read_text())
    data["folds"][1][where].append(data["test"][0])  # a test subject also trains/validates
    path.write_text(json.dumps(data))
    for role in ("train", "select", "predict", "evaluate"):
        with pytest.raises(ValueError, match=rf"^{path}: leakage in fold 1"):
            load_splits(path, role)


def test_train_val_overlap_raises(tmp_path: Path) -> None:
    path = write_split(tmp_path)
    data = json.loads(path.read_text())
    data["folds"][0]["val"].append(data["folds"][0]["train"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="both train and val"):
        load_splits(path, "train")


def test_tampered_test_list_raises(tmp_path: Path) -> None:
    path = write_split(tmp_path)
    data = json.loads(path.read_text())
    moved = data["test"].pop()  # move a test subject into training: hash no longer matches
    data["folds"][0]["train"].append(moved)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"^{path}: the test subject list does not match"):
        load_splits(path, "train")


def test_too_few_subjects_raise(tmp_path: Path) -> None:
    manifest, out = tmp_path / "m.tsv", tmp_path / "s.json"
    cohort(2).to_csv(manifest, sep="\t", index=False)
    with pytest.raises(ValueError, match=rf"^{manifest}: 2 subjects"):
        write_splits(manifest, {}, 0, out)
    assert not out.exists()


def test_tiny_cohort_with_a_single_subject_class() -> None:
    # 7 subjects: one "rare" subject cannot be stratified alone; it is pooled, and the split
    # still puts every subject in exactly one set with non-empty train and val.
    manifest = cohort(6)
    manifest.loc[len(manifest)] = {"subject": "sub-100", "session": "ses-01",
                                   "scan": "sub-100_ses-01", "class": "rare"}
    for n_folds in (1, 2):
        splits = make_splits(manifest, {"test_fraction": 0.3, "n_folds": n_folds}, seed=0)
        for sets in sets_of(splits):
            assert sets["train"] and sets["val"]
            assert sum(map(len, sets.values())) == 7

"""The reader of ``results/splits.json``: the leakage guard every stage goes through.

:func:`load_splits` raises one error naming the file for a subject in two of train/val/test
(within any fold) or a test list whose sha256 differs from the recorded one. Roles ``train`` and
``select`` get the split without its test list, so training and selection cannot open test scans
even by mistake. ``learn.split`` writes the file; every later stage reads it through here.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import read_json, sha256_text

log = logging.getLogger(__name__)

ROLES = ("train", "select", "predict", "evaluate")
HIDDEN_TEST_ROLES = ("train", "select")


def hash_test_list(test: list[str]) -> str:
    """sha256 of ``"\\n".join(sorted(test))`` — the lock on the test list."""
    return sha256_text("\n".join(sorted(test)))


def check_splits(splits: dict[str, Any], path: str | Path) -> None:
    """The leakage guard: raise ``ValueError`` naming ``path`` on any leak or tampering."""
    for key in ("test", "test_sha256", "folds"):
        if key not in splits:
            raise InputError(f"{path}: not a split file (no '{key}')")
    test = [str(s) for s in splits["test"]]
    if hash_test_list(test) != splits["test_sha256"]:
        raise InputError(
            f"{path}: the test subject list does not match its recorded sha256 "
            "(the locked test set was edited); re-run `mripipe split`"
        )
    if not splits["folds"]:
        raise InputError(f"{path}: no folds")
    for k, fold in enumerate(splits["folds"]):
        sets = {"train": fold.get("train", []), "val": fold.get("val", []), "test": test}
        for name, members in sets.items():
            dupes = sorted(s for s, n in Counter(members).items() if n > 1)
            if dupes:
                raise InputError(f"{path}: fold {k}: subjects listed twice in {name}: {dupes[:5]}")
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = sorted(set(sets[a]) & set(sets[b]))
            if shared:
                raise InputError(
                    f"{path}: leakage in fold {k}: subjects in both {a} and {b}: {shared[:5]}"
                )


def load_splits(path: str | Path, role: str) -> dict[str, Any]:
    """Read ``splits.json`` through the leakage guard, before any work.

    Args:
        path: ``results/splits.json``.
        role: the reading stage: ``train`` | ``select`` | ``predict`` | ``evaluate``.

    Returns:
        The split. For ``train`` and ``select`` the ``test`` list is removed (only its hash
        remains), so those stages cannot touch the test subjects.

    Raises:
        ValueError: a subject in two of train/val/test, a tampered test list, or a bad role.
    """
    if role not in ROLES:
        raise InputError(f"{path}: unknown role {role!r} (expected one of {ROLES})")
    splits = read_json(path)
    if not isinstance(splits, dict):
        raise InputError(f"{path}: not a split file (expected a JSON object)")
    check_splits(splits, path)
    if role in HIDDEN_TEST_ROLES:
        splits = {k: v for k, v in splits.items() if k != "test"}
    log.info("%s: split checked (no leakage, test list intact) for role %s", path, role)
    return splits

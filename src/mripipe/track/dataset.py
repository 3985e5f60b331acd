"""The data a search saw, as an MLflow dataset input: the manifest with its digest and the split.

``search-init`` describes the dataset once (:func:`describe_dataset`), logs it on the parent run
and stores the description in ``search.json``; each trial logs the same description on its own
run (:func:`log_dataset`), so the runs table's Dataset column names the data of every row. The
client calls are those ``mlflow.log_input`` makes (``MlflowClient.log_inputs``), without a
global active run.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mripipe.core.split_guard import load_splits
from mripipe.core.utils import sha256_file, sha256_text

CONTEXT_TAG = "mlflow.data.context"
#: MLflow stores at most 36 characters of digest.
DIGEST_CHARS = 12


def describe_dataset(manifest: str | Path, splits: str | Path, name: str, fold: int = 0) -> dict[str, Any]:
    """The dataset entry of ``search.json``: name, digest, source, schema and profile.

    Args:
        manifest: the manifest the trials read (``results/manifest.ready.tsv``).
        splits: ``results/splits.json`` (read without the test list: only its hash is recorded).
        name: the dataset's name (e.g. the data root's folder, ``phantom``).
        fold: the fold the trials train on.

    Returns:
        ``{"name", "digest", "source_type", "source", "schema", "profile"}`` (schema and profile
        as JSON text). The digest covers the manifest's bytes and the split's train/val subjects
        and test hash: a new scan or a new split changes it.
    """
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
        columns = list(rows[0]) if rows else []
    split = load_splits(splits, "select")
    folds = split["folds"]
    part = folds[fold] if 0 <= fold < len(folds) else {"train": [], "val": []}
    subjects = {r.get("subject", "") for r in rows}
    profile = {
        "num_rows": len(rows), "num_subjects": len(subjects),
        "split": {"fold": fold, "n_folds": len(folds), "train_subjects": len(part["train"]),
                  "val_subjects": len(part["val"]), "test_sha256": split.get("test_sha256"),
                  "seed": split.get("seed")},
    }
    key = json.dumps([sha256_file(manifest), sorted(part["train"]), sorted(part["val"]),
                      split.get("test_sha256")])
    return {
        "name": name,
        "digest": sha256_text(key)[:DIGEST_CHARS],
        "source_type": "local",
        "source": json.dumps({"uri": str(manifest)}),
        "schema": json.dumps({"mlflow_colspec": [{"name": c, "type": "string"} for c in columns]}),
        "profile": json.dumps(profile),
    }


def log_dataset(c: Any, run_id: str, dataset: Mapping[str, Any], context: str = "training") -> None:
    """Log ``dataset`` (:func:`describe_dataset`) as an input of ``run_id`` with its context.

    Callers wrap it in :func:`mripipe.track.tracking.retry` (a busy SQLite store).
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    entity = Dataset(name=str(dataset["name"]), digest=str(dataset["digest"]),
                     source_type=str(dataset["source_type"]), source=str(dataset["source"]),
                     schema=dataset.get("schema"), profile=dataset.get("profile"))
    c.log_inputs(run_id, datasets=[DatasetInput(entity, [InputTag(CONTEXT_TAG, context)])])

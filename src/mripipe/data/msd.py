"""Medical Segmentation Decathlon adapter: ``dataset.json`` (``modality``, ``labels``,
``training``), 4-D multimodal images split into channels lazily.

Each modality becomes a channel column that names the same 4-D file: nothing is copied, and
:func:`mripipe.core.imageio.load_channels` takes volume k for the k-th channel when it reads them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import read_json
from mripipe.data.index import Index, Problem, check_channels, clean_id

log = logging.getLogger(__name__)


def read_dataset_json(root: Path) -> dict[str, Any]:
    """``root/dataset.json`` as a dict, with one clear error when it is missing or not an object."""
    path = root / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset.json not found")
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise InputError(f"{path}: expected a JSON object")
    return meta


def _numbered(meta: dict[str, Any], key: str, path: Path) -> dict[int, str]:
    """``{"0": "FLAIR", ...}`` -> {0: "FLAIR", ...}."""
    value = meta.get(key)
    if not isinstance(value, dict) or not value:
        raise InputError(f"{path}: no {key!r} object")
    try:
        return {int(k): str(v) for k, v in sorted(value.items(), key=lambda kv: int(kv[0]))}
    except ValueError:
        raise InputError(f"{path}: the keys of {key!r} must be integers") from None


def index_msd(params: dict[str, Any]) -> Index:
    """Index the ``training`` cases of an MSD task (``params``: the ``data:`` section).

    Every modality of ``dataset.json`` is a channel, in key order; a case is its own subject
    (no session). Label names come from ``labels``.
    """
    root = Path(params["root"])
    meta = read_dataset_json(root)
    where = root / "dataset.json"
    modality = _numbered(meta, "modality", where)
    channels = [clean_id(modality[k]) for k in sorted(modality)]
    check_channels(where, channels)
    index = Index(source="msd", channels=channels, labels=_numbered(meta, "labels", where))
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        raise InputError(f"{where}: no 'training' cases")
    for case in training:
        image = root / str(case.get("image", ""))
        label = root / str(case.get("label", "")) if case.get("label") else None
        name = image.name.split(".")[0]
        scan = clean_id(name)
        row = {"subject": scan, "session": "", "scan": scan, "class": ""}
        if not image.is_file():
            index.problems.append(Problem(scan, str(image), "missing", "image listed in dataset.json not found"))
        row.update({ch: str(image) if image.is_file() else "" for ch in channels})
        if label is not None and not label.is_file():
            index.problems.append(Problem(scan, str(label), "missing", "label listed in dataset.json not found"))
        row["label"] = str(label) if label is not None and label.is_file() else ""
        index.rows.append(row)
    log.info("msd: %d cases, channels %s, labels %s", len(index.rows), channels, index.labels)
    return index

"""The model package format, shared by its writer (``learn.package``, run by ``select``) and its
readers (``infer``: ``predict`` and ``mripipe infer``).

A package is a folder (``results/{experiment}/model/``) holding two files:

- ``model.json``: everything needed to rebuild and apply the network to a new raw scan
  (network definition, channels in order, label names, preprocessing parameters and target
  spacing, sliding-window settings, post-processing, the training data's fingerprint, the MLflow
  run it came from); its keys are listed in ``docs/contract.md``.
- ``weights.pt``: the network's ``state_dict`` alone (tensors only), read with
  ``torch.load(weights_only=True)``: never a pickled object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import read_json

FORMAT = "mripipe-model/1"
META_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
REQUIRED = ("format", "task", "params", "in_channels", "n_classes", "channels", "labels",
            "preprocess", "target_spacing", "postprocess", "fingerprint", "weights")


def find_package(folder: str | Path) -> Path:
    """The package folder at or below ``folder`` (an MLflow model keeps it under ``artifacts/``).

    Raises:
        FileNotFoundError: neither ``folder`` nor a sub-folder holds ``model.json``.
    """
    folder = Path(folder)
    if (folder / META_FILE).is_file():
        return folder
    found = sorted(p.parent for p in folder.rglob(META_FILE)) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(f"{folder}: no model package ({META_FILE}) found")
    return found[0]


def read_meta(folder: str | Path) -> dict[str, Any]:
    """Read and check a package's ``model.json``.

    Raises:
        InputError: not a package of this format, or a required key missing (naming the file).
    """
    path = Path(folder) / META_FILE
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path}: not an mripipe model package (format {FORMAT!r} expected)")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise InputError(f"{path}: missing keys {missing}")
    return meta

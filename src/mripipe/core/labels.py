"""The segmentation label map: foreground class name -> integer value (background 0 implicit).

Where it comes from (:func:`resolve_labels`): ``data.labels`` of the config when set, else the
labels the dataset declares (``manifest.json`` of the MSD / nnU-Net adapters, ``{"0":
"background", "1": "PZ", ...}``), else ``{"lesion": 1}``. Foreground classes are the entries
with a value >= 1, ordered by value; K is their number. K = 1 is the binary lesion path (every
non-zero value, e.g. lesion instance ids, is lesion); K >= 2 is multi-class: network output
channel k (1..K) is the k-th class by value, and :func:`class_index` maps a label file's values
onto 0..K. ``mripipe patches`` records the resolved map in ``patches.json`` (``labels``); train,
select and the model package read it there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mripipe.core.errors import InputError

#: The label map of a dataset that declares none (lesion instance masks).
DEFAULT_LABELS: dict[str, int] = {"lesion": 1}


def foreground(labels: Mapping[str, int] | None) -> dict[str, int]:
    """The foreground entries (value >= 1) of a label map, ordered by value; the default map
    when there are none."""
    fg = {str(k): int(v) for k, v in (labels or {}).items() if int(v) >= 1}
    if len(set(fg.values())) != len(fg):
        raise InputError(f"label map {dict(labels or {})}: two classes share a value")
    return dict(sorted(fg.items(), key=lambda kv: kv[1])) or dict(DEFAULT_LABELS)


def class_names(labels: Mapping[str, int] | None) -> list[str]:
    """Foreground class names ordered by value (network output channels 1..K)."""
    return list(foreground(labels))


def is_multiclass(labels: Mapping[str, int] | None) -> bool:
    """K >= 2 foreground classes."""
    return len(foreground(labels)) >= 2


def from_declared(declared: Mapping[str, Any] | None) -> dict[str, int]:
    """``manifest.json``'s ``labels`` (``{"0": "background", "1": "PZ"}``) as name -> value."""
    out: dict[str, int] = {}
    for value, name in (declared or {}).items():
        if int(value) >= 1:
            out[str(name)] = int(value)
    return foreground(out)


def resolve_labels(configured: Mapping[str, int] | None, manifest_meta: str | Path | None) -> dict[str, int]:
    """The label map of a run: ``data.labels`` if set, else the dataset's declared labels.

    Args:
        configured: the config's ``data.labels`` (``{}`` = not set).
        manifest_meta: ``results/manifest.json`` (its ``labels``: value -> name, or null), or None.
    """
    if configured:
        return foreground(configured)
    if manifest_meta is not None and Path(manifest_meta).is_file():
        from mripipe.core.utils import read_json

        return from_declared(read_json(manifest_meta).get("labels"))
    return dict(DEFAULT_LABELS)


def class_index(ids: np.ndarray, labels: Mapping[str, int], where: str | Path) -> np.ndarray:
    """A K >= 2 label array's values mapped onto class indices 0..K (uint8).

    Raises:
        InputError: a value that is neither 0 nor in the map (naming ``where`` and the values).
    """
    fg = foreground(labels)
    values = np.unique(ids)
    unknown = sorted(int(v) for v in values if v != 0 and int(v) not in fg.values())
    if unknown:
        raise InputError(f"{where}: label values {unknown[:10]} are not in the label map {fg}")
    lut = np.zeros(int(max(values.max(initial=0), max(fg.values()))) + 1, np.uint8)
    for k, v in enumerate(fg.values(), start=1):
        lut[v] = k
    return lut[np.asarray(ids, dtype=np.int64)]

"""The label map of a multi-class segmentation and what evaluation scores of it: classes, regions
(``evaluate.regions``) and lesion-detection names (``evaluate.detection_classes``).

Light on purpose (no imaging libraries): the workflow checks a config's ``data.labels`` against
``evaluate`` when it is parsed, before any job runs; ``evaluate`` checks ``predict.json``'s map.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.labels import LabelSpec, foreground, from_declared, label_spec
from mripipe.core.utils import read_json

__all__ = ["LabelSpec", "label_map", "label_spec", "prediction_labels"]

def label_map(raw: Any, where: str) -> dict[str, int]:
    """A ``labels`` entry as ``{name: value}`` of the foreground classes, ordered by value
    (:func:`mripipe.core.labels.foreground`); ``{value: name}`` (``dataset.json`` style) is read
    too (:func:`mripipe.core.labels.from_declared`).

    Raises:
        InputError: not a non-empty mapping of names and integer values, or a value used twice.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise InputError(f"{where}: labels must be a mapping of class names to values, got {raw!r}")
    try:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
            return foreground(raw)
        return from_declared(raw)
    except InputError:
        raise
    except (TypeError, ValueError):
        raise InputError(f"{where}: labels must map class names to integer values, got {raw!r}") from None


def prediction_labels(predictions: Path) -> dict[str, int] | None:
    """The label map of a predictions folder (``predict.json`` ``labels``), None when absent."""
    path = Path(predictions) / "predict.json"
    if not path.is_file():
        return None
    meta = read_json(path)
    if not isinstance(meta, Mapping) or meta.get("labels") is None:
        return None
    return label_map(meta["labels"], str(path))

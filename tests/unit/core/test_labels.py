"""mripipe.core.labels: where the label map comes from and how label values map to classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mripipe.core.errors import InputError
from mripipe.core.labels import class_index, class_names, foreground, is_multiclass, resolve_labels
from mripipe.core.utils import write_json


def test_config_labels_win_over_the_declared_ones(tmp_path: Path) -> None:
    meta = tmp_path / "manifest.json"
    write_json(meta, {"labels": {"0": "background", "2": "TZ", "1": "PZ"}})
    assert resolve_labels({}, meta) == {"PZ": 1, "TZ": 2}  # the dataset's, ordered by value
    assert list(resolve_labels({"b": 2, "a": 1}, meta)) == ["a", "b"]
    write_json(meta, {"labels": None})  # BIDS: instance masks, no declared labels
    assert resolve_labels({}, meta) == {"lesion": 1} == resolve_labels({}, None)
    write_json(meta, {"labels": {"0": "background", "1": "lesion"}})
    assert not is_multiclass(resolve_labels({}, meta))


def test_class_names_follow_the_values() -> None:
    assert class_names({"ET": 3, "edema": 1, "NET": 2}) == ["edema", "NET", "ET"]
    assert class_names(None) == ["lesion"]
    with pytest.raises(InputError, match="share a value"):
        foreground({"a": 1, "b": 1})


def test_class_index_maps_values_and_rejects_unknown_ones() -> None:
    ids = np.array([[[0, 1, 4], [4, 0, 1]]], np.uint16)
    out = class_index(ids, {"edema": 1, "enhancing": 4}, "lab.nii.gz")
    assert out.dtype == np.uint8 and out.tolist() == [[[0, 1, 2], [2, 0, 1]]]
    with pytest.raises(InputError, match=r"lab\.nii\.gz: label values \[2, 7\] are not in the label map"):
        class_index(np.array([0, 2, 7, 1]), {"edema": 1, "enhancing": 4}, "lab.nii.gz")

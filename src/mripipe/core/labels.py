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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mripipe.core.config import param
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


#: names that would make a metric key ambiguous (``dice_empty``, ``hd95_mm_median``)
RESERVED = ("empty", "median")


@dataclass(frozen=True)
class LabelSpec:
    """What a multi-class evaluation scores.

    Attributes:
        classes: foreground class name -> label value, ordered by value (channel k = k-th class).
        regions: region name -> the label values it unites (``evaluate.regions``).
        detection: detection name -> label values (``evaluate.detection_classes``).
    """

    classes: dict[str, int]
    regions: dict[str, tuple[int, ...]]
    detection: dict[str, tuple[int, ...]]

    @property
    def n_classes(self) -> int:
        """K, the number of foreground classes."""
        return len(self.classes)

    def scored(self) -> dict[str, tuple[int, ...]]:
        """Every name scored with Dice/HD95: the classes, then the regions not equal to one."""
        out: dict[str, tuple[int, ...]] = {name: (value,) for name, value in self.classes.items()}
        out.update({r: v for r, v in self.regions.items() if r not in out})
        return out

    def channels(self, values: Sequence[int]) -> list[int]:
        """Network channels (1..K) of label values."""
        order = list(self.classes.values())
        return [order.index(v) + 1 for v in values]


def label_spec(labels: Mapping[str, int], params: Mapping[str, Any]) -> LabelSpec:
    """Resolve ``evaluate.regions`` and ``evaluate.detection_classes`` against a label map.

    Region members are class names or label values; a detection name is a class or a region.

    Raises:
        InputError: naming the config key, for a member or name that is not a known class or
            region, a region named like a class but uniting other classes, or a reserved name.
    """
    classes = foreground(labels)
    by_value = {v: n for n, v in classes.items()}
    regions: dict[str, tuple[int, ...]] = {}
    for region, members in dict(param("evaluate", params, "regions")).items():
        values = []
        for m in members:
            if isinstance(m, int) and not isinstance(m, bool) and m in by_value:
                values.append(m)
            elif isinstance(m, str) and m in classes:
                values.append(classes[m])
            else:
                raise InputError(f"evaluate.regions: region {region!r} names {m!r}, not a class of the "
                                 f"label map {classes} (give class names or their values)")
        region_values = tuple(sorted(set(values)))
        if region in classes and region_values != (classes[region],):
            raise InputError(f"evaluate.regions: region {region!r} has the name of a class but unites "
                             f"{[by_value[v] for v in region_values]}")
        regions[str(region)] = region_values
    for name in [*classes, *regions]:
        if name in RESERVED:
            raise InputError(f"evaluate.regions / data.labels: {name!r} is reserved (metric key "
                             f"dice_{name} exists already); rename it")
    detection: dict[str, tuple[int, ...]] = {}
    for name in param("evaluate", params, "detection_classes"):
        if name in classes:
            detection[str(name)] = (classes[name],)
        elif name in regions:
            detection[str(name)] = regions[name]
        else:
            raise InputError(f"evaluate.detection_classes: {name!r} is neither a class of the label "
                             f"map {classes} nor a region of evaluate.regions {sorted(regions)}")
    return LabelSpec(classes, regions, detection)

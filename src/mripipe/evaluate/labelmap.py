"""The label map of a multi-class segmentation and what evaluation scores of it: classes, regions
(``evaluate.regions``) and lesion-detection names (``evaluate.detection_classes``).

Light on purpose (no imaging libraries): the workflow checks a config's ``data.labels`` against
``evaluate`` when it is parsed, before any job runs; ``evaluate`` checks ``predict.json``'s map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mripipe.core.config import param
from mripipe.core.errors import InputError
from mripipe.core.labels import foreground, from_declared
from mripipe.core.utils import read_json

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

"""nnU-Net v2 raw dataset adapter: ``dataset.json`` (``channel_names``, ``labels``,
``file_ending``), ``imagesTr/{case}_{XXXX}{ending}`` and ``labelsTr/{case}{ending}``."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.data.index import Index, Problem, check_channels, clean_id
from mripipe.data.msd import read_dataset_json

log = logging.getLogger(__name__)


def _labels(value: Any, where: Path) -> dict[int, str]:
    """nnU-Net's ``{"background": 0, "lesion": 1}`` (regions as lists) -> {0: background, ...}."""
    if not isinstance(value, dict) or not value:
        raise InputError(f"{where}: no 'labels' object")
    out: dict[int, str] = {}
    for name, ids in value.items():
        for v in ids if isinstance(ids, list) else [ids]:
            if not isinstance(v, int):
                raise InputError(f"{where}: label {name!r} must be an integer (or a list of them)")
            out.setdefault(v, str(name))
    return out


def index_nnunet(params: dict[str, Any]) -> Index:
    """Index the training cases of an nnU-Net v2 raw dataset (``params``: the ``data:`` section).

    Cases are the ids ``{case}`` of ``imagesTr/{case}_{XXXX}{file_ending}``; channel XXXX is
    ``channel_names[XXXX]``. A case missing a channel file is listed as a problem.
    """
    root = Path(params["root"])
    meta = read_dataset_json(root)
    where = root / "dataset.json"
    names = meta.get("channel_names") or meta.get("modality")
    if not isinstance(names, dict) or not names:
        raise InputError(f"{where}: no 'channel_names' object")
    order = sorted(int(k) for k in names)
    channels = [clean_id(names[str(k)]) for k in order]
    check_channels(where, channels)
    ending = str(meta.get("file_ending", ".nii.gz"))
    index = Index(source="nnunet", channels=channels, labels=_labels(meta.get("labels"), where))
    pattern = re.compile(rf"^(?P<case>.+)_(?P<ch>\d{{4}}){re.escape(ending)}$")
    cases: dict[str, dict[int, Path]] = {}
    for path in sorted((root / "imagesTr").glob(f"*{ending}")):
        if m := pattern.match(path.name):
            cases.setdefault(m["case"], {})[int(m["ch"])] = path
    if not cases:
        raise InputError(f"{root / 'imagesTr'}: no images named {{case}}_XXXX{ending}")
    for case, files in cases.items():
        scan = clean_id(case)
        row = {"subject": scan, "session": "", "scan": scan, "class": ""}
        for k, ch in zip(order, channels, strict=True):
            row[ch] = str(files[k]) if k in files else ""
            if k not in files:
                index.problems.append(Problem(scan, str(root / "imagesTr" / f"{case}_{k:04d}{ending}"), "missing", f"no {ch} image"))
        label = root / "labelsTr" / f"{case}{ending}"
        row["label"] = str(label) if label.is_file() else ""
        index.rows.append(row)
    log.info("nnunet: %d cases, channels %s", len(index.rows), channels)
    return index

"""``mripipe ready`` (a checkpoint): the scans that made it through preprocessing, and those that
did not.

Each scan's folder ends with a ``status.json`` (``ok``, ``check``, ``reason``; written by
:mod:`mripipe.preprocess.preprocess_scan`). This gathers them into ``results/manifest.ready.tsv`` (the
scans everything downstream uses) and ``results/excluded.tsv`` (scan, stage, check, reason) for
both the scans validation excluded and those preprocessing lost.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from mripipe.core.errors import InputError
from mripipe.core.utils import atomic_path, read_json
from mripipe.data.manifest import read_manifest

log = logging.getLogger(__name__)

STATUS = "status.json"
EXCLUDED_COLUMNS = ["scan", "stage", "check", "reason"]


def ready(valid: str | Path, validation: str | Path, preprocessed: str | Path, out: str | Path,
          excluded: str | Path) -> pd.DataFrame:
    """The scans that made it through preprocessing, and every scan that did not (and why).

    Args:
        valid: ``results/manifest.valid.tsv`` (the scans validation kept).
        validation: ``results/validation.tsv`` (errors there exclude a scan).
        preprocessed: ``results/preprocessed`` (``{scan}/status.json``).
        out: ``results/manifest.ready.tsv``.
        excluded: ``results/excluded.tsv`` (scan, stage, check, reason).

    Raises:
        InputError: no scan made it.
    """
    table = read_manifest(valid)
    problems = pd.read_csv(validation, sep="\t", dtype=str, keep_default_na=False)
    rows = [{"scan": q.scan, "stage": "validate", "check": q.check, "reason": f"{q.file}: {q.detail}"}
            for q in problems.itertuples() if q.severity == "error"]
    ok = []
    for scan in table["scan"]:
        status = read_json(Path(preprocessed) / scan / STATUS)
        if status.get("ok"):
            ok.append(scan)
        else:
            rows.append({"scan": scan, "stage": "preprocess", "check": status.get("check", ""), "reason": status.get("reason", "")})
    gone = pd.DataFrame(rows, columns=EXCLUDED_COLUMNS)
    with atomic_path(excluded) as tmp:
        gone.to_csv(tmp, sep="\t", index=False)
    kept = table[table["scan"].isin(ok)]
    log.info("ready: %d scans; %d excluded (%d by validation, %d in preprocessing)", len(kept),
             gone["scan"].nunique(), (gone["stage"] == "validate").groupby(gone["scan"]).any().sum(),
             int((gone["stage"] == "preprocess").sum()))
    if kept.empty:
        raise InputError(f"{excluded}: no scan made it through preprocessing ({len(table)} tried)")
    with atomic_path(out) as tmp:
        kept.to_csv(tmp, sep="\t", index=False)
    return kept

"""``mripipe ready`` (a checkpoint): the scans that made it through preprocessing, and those that
did not.

Each scan's folder ends with a ``status.json`` (``ok``, ``check``, ``reason``; written by
:mod:`mripipe.preprocess.preprocess_scan`). This gathers them into ``results/manifest.ready.tsv`` (the
scans everything downstream uses) and ``results/excluded.tsv`` (scan, stage, check, reason) for
both the scans validation excluded and those preprocessing lost.

Registration is also judged against the dataset, which only this step sees whole: among the
scans that passed their own checks, one whose correlation with the template (``registration_ncc``
in qc.json, above the absolute floor ``preprocess.min_registration_ncc``) lies more than
``preprocess.registration_ncc_max_z`` robust standard deviations below the dataset's median
(:func:`mripipe.preprocess.qc.robust_z`) is excluded as ``registration_outlier``, with its
reference image, its NCC, its z-score and the median in the reason. Needs at least
``preprocess.registration_outlier_min_scans`` registered scans; the dataset's figures are logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from mripipe.core.config import with_defaults
from mripipe.core.errors import InputError
from mripipe.core.utils import atomic_path, read_json
from mripipe.data.manifest import channel_columns, read_manifest
from mripipe.preprocess.qc import robust_z

log = logging.getLogger(__name__)

STATUS = "status.json"
EXCLUDED_COLUMNS = ["scan", "stage", "check", "reason"]


def _registered_ncc(preprocessed: Path, ok: list[str]) -> dict[str, dict[str, Any]]:
    """The qc.json of each scan in ``ok`` that records a ``registration_ncc``."""
    qcs = {s: read_json(preprocessed / s / "qc.json") for s in ok if (preprocessed / s / "qc.json").is_file()}
    return {s: q for s, q in qcs.items() if "registration_ncc" in q}


def registration_outliers(table: pd.DataFrame, preprocessed: str | Path, ok: list[str],
                          params: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Excluded-table rows of the registered scans whose NCC is an outlier low in the dataset.

    Args:
        table: the manifest of the valid scans (for each scan's reference image path).
        preprocessed: ``results/preprocessed`` (``{scan}/qc.json`` with ``registration_ncc``).
        ok: the scans that passed their own checks.
        params: the ``preprocess:`` section (``registration_ncc_max_z``,
            ``registration_ncc_min_sd``, ``registration_outlier_min_scans``; defaults if absent).

    Raises:
        InputError: a wrong value in ``params``, naming the key.
    """
    cfg = with_defaults("preprocess", params)
    max_z, least = float(cfg["registration_ncc_max_z"]), int(cfg["registration_outlier_min_scans"])
    qcs = _registered_ncc(Path(preprocessed), ok)
    if len(qcs) < least:
        log.info("ready: %d registered scans (< preprocess.registration_outlier_min_scans %d): "
                 "no test against the dataset", len(qcs), least)
        return []
    ncc = {s: float(q["registration_ncc"]) for s, q in qcs.items()}
    rz = robust_z(ncc, float(cfg["registration_ncc_min_sd"]))
    log.info("ready: registration NCC of %d scans: median %.4f, robust sd %.4f; outliers below %.4f",
             len(ncc), rz.median, rz.sd, rz.median - max_z * rz.sd)
    first = (channel_columns(table) or [""])[0]
    rows = []
    for scan in sorted(s for s, z in rz.z.items() if z < -max_z):
        row = table[table["scan"] == scan].iloc[0]
        ref = str(qcs[scan].get("reference", first))
        where = row[ref] if ref in row and row[ref] else Path(preprocessed) / scan / "qc.json"
        reason = (f"{where}: correlation with the template in the brain mask {ncc[scan]:.3f} is "
                  f"{-rz.z[scan]:.1f} robust sd below the dataset median {rz.median:.3f} (robust z "
                  f"{rz.z[scan]:.1f} < -preprocess.registration_ncc_max_z {max_z:g}; sd {rz.sd:.4f}, "
                  f"{len(ncc)} scans; failed template registration?)")
        rows.append({"scan": scan, "stage": "preprocess", "check": "registration_outlier", "reason": reason})
    return rows


def ready(valid: str | Path, validation: str | Path, preprocessed: str | Path, out: str | Path,
          excluded: str | Path, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """The scans that made it through preprocessing, and every scan that did not (and why).

    Args:
        valid: ``results/manifest.valid.tsv`` (the scans validation kept).
        validation: ``results/validation.tsv`` (errors there exclude a scan).
        preprocessed: ``results/preprocessed`` (``{scan}/status.json``).
        out: ``results/manifest.ready.tsv``.
        excluded: ``results/excluded.tsv`` (scan, stage, check, reason).
        params: the ``preprocess:`` section (the registration outlier test; defaults if absent).

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
    outliers = registration_outliers(table, preprocessed, ok, params)
    rows += outliers
    ok = [s for s in ok if s not in {r["scan"] for r in outliers}]
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

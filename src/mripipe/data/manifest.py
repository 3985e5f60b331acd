"""``results/manifest.tsv``: one row per scan, one column per channel, whatever ``data.source`` is.

The adapters (:mod:`~mripipe.data.bids`, :mod:`~mripipe.data.msd`, :mod:`~mripipe.data.nnunet`,
:mod:`~mripipe.data.dicom`, :mod:`~mripipe.data.table`) index a dataset into the same table;
:func:`read_manifest` is the one reader every stage uses. Paths are written as found from the
given root (relative roots stay relative to the working directory, absolute ones stay absolute).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mripipe.core.config import with_defaults
from mripipe.core.errors import InputError
from mripipe.core.utils import read_json
from mripipe.data import bids, dicom, msd, nnunet, table
from mripipe.data.index import BASE_COLUMNS, TAIL_COLUMNS, Index, write_manifest

log = logging.getLogger(__name__)

__all__ = ["BASE_COLUMNS", "TAIL_COLUMNS", "build", "build_manifest", "channel_columns", "read_manifest"]


def index_dataset(params: dict[str, Any], dicom_cache: str | Path | None = None) -> Index:
    """Index the dataset that ``params`` (the ``data:`` section) describes, with its adapter."""
    source = params["source"]
    if source in ("bids", "phantom"):
        index = bids.index_bids(params)
        index.source = source
        return index
    if source == "msd":
        return msd.index_msd(params)
    if source == "nnunet":
        return nnunet.index_nnunet(params)
    if source == "table":
        return table.index_table(params)
    if source == "dicom":
        if dicom_cache is None:
            raise InputError(f"{params['root']}: data.source dicom needs the converted cache (--dicom-cache)")
        return dicom.index_dicom(params, Path(dicom_cache))
    raise InputError(f"data.source: unknown source {source!r}")


def build(params: dict[str, Any] | None, out: str | Path | None = None,
          dicom_cache: str | Path | None = None) -> pd.DataFrame:
    """Index a dataset and write ``manifest.tsv`` + ``manifest.json`` (when ``out`` is given).

    Args:
        params: the ``data:`` config section (missing keys take the schema's defaults).
        out: ``results/manifest.tsv``; None only returns the table.
        dicom_cache: the dcm2niix output folder (``results/dicom``) for ``source: dicom``.

    Returns:
        Columns ``subject, session, scan, <channels...>, label, class, truth, source`` (strings,
        "" when absent), one row per scan, sorted by scan. Missing and ambiguous files are left
        empty and listed in ``manifest.json``'s ``problems`` (``mripipe validate`` reports them).
    """
    index = index_dataset(with_defaults("data", params), dicom_cache)
    if not index.rows:
        raise InputError(f"{with_defaults('data', params)['root']}: no scans found")
    if out is None:
        return index.frame()
    for problem in index.problems:
        log.warning("%s: %s (%s)", problem.file, problem.detail, problem.scan)
    return write_manifest(index, out)


def build_manifest(root: str | Path, channels: list[str], label: str, out: str | Path | None = None) -> pd.DataFrame:
    """Index a BIDS dataset (the phantom's layout): :func:`build` with ``source: bids``.

    Raises:
        InputError: a scan misses a channel or has several images for one (the first problem).
    """
    index = bids.index_bids(with_defaults("data", {"source": "bids", "root": str(root), "channels": list(channels), "label": label}))
    if index.problems:
        first = index.problems[0]
        raise InputError(f"{first.file}: {first.detail}")
    if out is not None:
        return write_manifest(index, out)
    return index.frame()


def read_meta(manifest: str | Path) -> dict[str, Any]:
    """``manifest.json`` beside a manifest (source, channels, declared labels, problems); {} if absent."""
    path = Path(manifest).with_suffix(".json")
    return dict(read_json(path)) if path.is_file() else {}


def read_manifest(path: str | Path, required: Sequence[str] = ("subject", "scan")) -> pd.DataFrame:
    """Read ``manifest.tsv`` back with every column as a string and empty cells as "".

    The one reader every stage uses. ``required`` names the columns the caller needs; a missing
    file or column is one clear error naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise InputError(f"{path}: not a manifest (missing columns {missing})")
    return table


def channel_columns(table: pd.DataFrame) -> list[str]:
    """The channel columns of a manifest, in order (every column that is not metadata)."""
    return [c for c in table.columns if c not in BASE_COLUMNS + TAIL_COLUMNS]


def reference_channel(manifest: pd.DataFrame, manifest_path: Path) -> str:
    """The manifest's first channel column (the native reference, T1w in the default config)."""
    channels = channel_columns(manifest)
    if not channels:
        raise InputError(f"{manifest_path}: no channel column")
    return channels[0]


def held_out_scans(manifest_path: Path, test_subjects: list[str]) -> pd.DataFrame:
    """Manifest rows of the test subjects: ``scan``, ``subject``, ``class``, ``native``."""
    manifest = read_manifest(manifest_path)
    rows = manifest[manifest["subject"].isin(set(test_subjects))].copy()
    if rows.empty:
        raise InputError(f"{manifest_path}: no scan of the {len(test_subjects)} test subjects")
    rows["native"] = rows[reference_channel(manifest, manifest_path)]
    rows["class"] = rows["class"] if "class" in rows.columns else ""
    return rows[["scan", "subject", "class", "native"]].sort_values("scan").reset_index(drop=True)

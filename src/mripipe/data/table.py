"""Table adapter: a CSV/TSV with one row per scan -- ``subject``, optional ``session``, one
column per channel, the label column and the class column; relative paths are relative to the
table's folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from mripipe.core.errors import InputError
from mripipe.data.index import Index, Problem, check_channels, class_value, clean_id, scan_id

log = logging.getLogger(__name__)


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (``.csv``) or TSV table as strings, with one clear error naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table not found")
    try:
        return pd.read_csv(path, sep="," if path.suffix == ".csv" else "\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot be read as a table ({exc})") from None


def resolve(base: Path, cell: str) -> str:
    """A path cell made relative to ``base`` (the table's folder), normalised (``a/b/../c`` is
    ``a/c``; a relative path stays relative); "" stays ""."""
    cell = str(cell).strip()
    if not cell:
        return ""
    path = Path(cell)
    return os.path.normpath(path if path.is_absolute() else base / path)


def ids(subject: str, session: str) -> tuple[str, str]:
    """``sub-``/``ses-`` prefixed, file-name-safe ids."""
    sub = subject if subject.startswith("sub-") else f"sub-{clean_id(subject)}"
    ses = "" if not session else (session if session.startswith("ses-") else f"ses-{clean_id(session)}")
    return sub, ses


def index_table(params: dict[str, Any]) -> Index:
    """Index the scans listed in ``data.root / data.table.path`` (``params``: the ``data:`` section)."""
    path = Path(params["root"]) / params["table"]["path"]
    frame = read_table(path)
    channels = list(params["channels"])
    check_channels(path, channels)
    missing = [c for c in ["subject", *channels] if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing} (columns: {list(frame.columns)})")
    label_col, class_col = params["label"], params["class_column"]
    index = Index(source="table", channels=channels)
    for _, cells in frame.iterrows():
        sub, ses = ids(cells["subject"], cells.get("session", ""))
        scan = scan_id(sub, ses)
        row = {"subject": sub, "session": ses, "scan": scan,
               "class": class_value(cells[class_col]) if class_col in frame.columns else ""}
        for ch in channels:
            row[ch] = resolve(path.parent, cells[ch])
            if not row[ch]:
                index.problems.append(Problem(scan, str(path), "missing", f"no {ch} image"))
        row["label"] = resolve(path.parent, cells[label_col]) if label_col in frame.columns else ""
        index.rows.append(row)
    seen: dict[str, int] = {}
    for row in index.rows:
        seen[row["scan"]] = seen.get(row["scan"], 0) + 1
    for scan, n in seen.items():
        if n > 1:
            index.problems.append(Problem(scan, str(path), "duplicate", f"{n} rows for scan {scan}"))
    index.rows = list({r["scan"]: r for r in index.rows}.values())
    log.info("table: %d scans, channels %s", len(index.rows), channels)
    return index

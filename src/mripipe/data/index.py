"""What every dataset adapter produces: the manifest's columns, the rows, the problems met while
indexing (a missing or ambiguous file is recorded, not raised, so validation lists them all), and
the dataset's declared label values. Written as ``results/manifest.tsv`` + ``manifest.json``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mripipe.core.errors import InputError
from mripipe.core.utils import atomic_path, write_json

BASE_COLUMNS = ["subject", "session", "scan"]
#: ``source``: where each file came from when that is not the path itself (DICOM series folders
#: of the converted channels, ``channel=path;...``); empty otherwise.
TAIL_COLUMNS = ["label", "class", "truth", "source"]
MISSING_VALUES = {"", "n/a", "nan", "NaN", "None"}


@dataclass
class Problem:
    """One problem with one file of one scan (a row of ``results/validation.tsv``)."""

    scan: str
    file: str
    check: str
    detail: str
    severity: str = "error"


@dataclass
class Index:
    """A dataset indexed by an adapter.

    Attributes:
        source: the adapter (``bids``, ``msd``, ...).
        channels: channel names, in order (the first is the reference).
        rows: one dict per scan with ``BASE_COLUMNS``, the channels and ``TAIL_COLUMNS`` (strings;
            "" when absent).
        labels: declared label values -> names; None = any non-negative integer (instance masks).
        problems: missing or ambiguous files found while indexing.
        class_file: the table the classes come from (participants.tsv, ...), "" if none.
    """

    source: str
    channels: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)
    labels: dict[int, str] | None = None
    problems: list[Problem] = field(default_factory=list)
    class_file: str = ""

    def frame(self) -> pd.DataFrame:
        """The manifest table, sorted by scan."""
        columns = BASE_COLUMNS + list(self.channels) + TAIL_COLUMNS
        rows = [{c: str(r.get(c, "")) for c in columns} for r in self.rows]
        table = pd.DataFrame(rows, columns=columns).sort_values("scan", kind="stable")
        return table.reset_index(drop=True)

    def meta(self) -> dict[str, Any]:
        """``manifest.json``: source, channels, declared labels, indexing problems."""
        labels = None if self.labels is None else {str(k): v for k, v in sorted(self.labels.items())}
        return {"source": self.source, "channels": list(self.channels), "labels": labels,
                "class_file": self.class_file, "problems": [asdict(p) for p in self.problems]}


def check_channels(where: Path | str, channels: list[str]) -> None:
    """Channel names must be unique and not clash with the manifest's other columns."""
    if not channels:
        raise InputError(f"{where}: no channels requested")
    reserved = set(BASE_COLUMNS + TAIL_COLUMNS)
    if len(set(channels)) != len(channels) or set(channels) & reserved:
        raise InputError(f"{where}: channel names must be unique and not one of {sorted(reserved)}: {channels}")


def clean_id(text: str) -> str:
    """A subject/session/case id safe in file names and Snakemake wildcards."""
    return re.sub(r"[^A-Za-z0-9]+", "", str(text)) or "x"


def scan_id(subject: str, session: str) -> str:
    """``sub-X_ses-Y`` (or ``sub-X`` without a session)."""
    return f"{subject}_{session}" if session else subject


def class_value(value: Any) -> str:
    """A class cell as a string, "" when missing."""
    text = str(value).strip()
    return "" if text in MISSING_VALUES else text


def write_manifest(index: Index, out: str | Path) -> pd.DataFrame:
    """Write ``manifest.tsv`` and ``manifest.json`` (same stem) atomically."""
    table = index.frame()
    out = Path(out)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    write_json(out.with_suffix(".json"), index.meta())
    return table

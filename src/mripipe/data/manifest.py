"""Index a BIDS dataset into ``results/manifest.tsv``: one row per scan, one column per channel.

Works with and without the ``ses-`` level. Paths are written as found from the given root
(relative roots stay relative to the working directory, absolute ones stay absolute).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mripipe.core.errors import InputError
from mripipe.core.utils import atomic_path

log = logging.getLogger(__name__)

BASE_COLUMNS = ["subject", "session", "scan"]
TAIL_COLUMNS = ["label", "class", "truth"]
_MISSING = {"", "n/a", "nan", "NaN", "None"}


def _find_one(folder: Path, prefix: str, suffix: str) -> Path | None:
    """``{prefix}_{suffix}.nii.gz`` (or ``.nii``), else the single ``{prefix}_*_{suffix}.nii*``.

    Raises:
        ValueError: several candidates match (the scan is ambiguous).
    """
    for ext in (".nii.gz", ".nii"):
        exact = folder / f"{prefix}_{suffix}{ext}"
        if exact.is_file():
            return exact
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.glob(f"{prefix}_*_{suffix}.nii*") if p.name.endswith((".nii", ".nii.gz")))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise InputError(f"{folder}: several {suffix} images for {prefix} ({names}); keep one per scan")
    return found[0] if found else None


def _read_classes(path: Path) -> dict[str, str]:
    """participant_id -> class from participants.tsv (empty when the file has no class column)."""
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot be read as a tab-separated table ({exc})") from None
    if "participant_id" not in table.columns:
        raise InputError(f"{path}: no participant_id column (columns: {', '.join(map(str, table.columns))})")
    if "class" not in table.columns:
        return {}
    return {str(pid): ("" if str(c).strip() in _MISSING else str(c).strip()) for pid, c in zip(table["participant_id"], table["class"], strict=True)}


def _label_root(root: Path, label: str) -> Path:
    """``label`` is a derivatives name (``lesions`` -> root/derivatives/lesions) or a path."""
    as_path = Path(label)
    if as_path.is_absolute() or len(as_path.parts) > 1:
        return as_path
    return root / "derivatives" / label


def build_manifest(root: str | Path, channels: list[str], label: str, out: str | Path | None = None) -> pd.DataFrame:
    """Index every scan of a BIDS dataset.

    A scan is a subject (``sub-*``) or a subject's session (``sub-*/ses-*``); its images are
    ``anat/{scan}_{channel}.nii[.gz]`` (other entities such as ``acq-`` are accepted when they
    leave one match). Lesion masks are looked up as ``{label_root}/sub/[ses/]anat/{scan}_*mask.nii*``
    and phantom ground truth as ``derivatives/truth/sub/[ses/]{scan}_truth.json``.

    Args:
        root: BIDS root folder.
        channels: image suffixes to stack as channels, e.g. ``["T1w", "FLAIR"]``.
        label: derivatives folder name holding lesion masks (or a path to it).
        out: where to write the TSV (atomically); None only returns the table.

    Returns:
        Columns ``subject, session, scan, <channels...>, label, class, truth`` (strings, empty
        when absent), one row per scan, sorted by scan.

    Raises:
        FileNotFoundError: the root does not exist.
        ValueError: no subjects, a scan missing a channel, ambiguous images, or an unreadable
            participants.tsv; the message starts with the offending path.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: BIDS root not found")
    if not channels:
        raise InputError(f"{root}: no channels requested")
    if len(set(channels)) != len(channels) or set(channels) & set(BASE_COLUMNS + TAIL_COLUMNS):
        raise InputError(f"{root}: channel names must be unique and not one of {BASE_COLUMNS + TAIL_COLUMNS}: {channels}")
    subjects = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if not subjects:
        raise InputError(f"{root}: no subject folders (sub-*) found")
    participants = root / "participants.tsv"
    classes = _read_classes(participants) if participants.exists() else {}
    label_root = _label_root(root, label)
    truth_root = root / "derivatives" / "truth"
    rows = []
    for sub_dir in subjects:
        sessions: list[Path | None] = [p for p in sorted(sub_dir.glob("ses-*")) if p.is_dir()]
        for ses_dir in sessions or [None]:
            session = ses_dir.name if ses_dir is not None else ""
            scan = f"{sub_dir.name}_{session}" if session else sub_dir.name
            rel = Path(sub_dir.name, session) if session else Path(sub_dir.name)
            anat = root / rel / "anat"
            row = {"subject": sub_dir.name, "session": session, "scan": scan}
            for ch in channels:
                found = _find_one(anat, scan, ch)
                if found is None:
                    raise InputError(f"{anat}: scan {scan} has no {ch} image (expected {scan}_{ch}.nii.gz)")
                row[ch] = str(found)
            mask = _find_one(label_root / rel / "anat", scan, "mask") if label_root.is_dir() else None
            truth = truth_root / rel / f"{scan}_truth.json"
            row["label"] = str(mask) if mask is not None else ""
            row["class"] = classes.get(sub_dir.name, "")
            row["truth"] = str(truth) if truth.is_file() else ""
            rows.append(row)
    table = pd.DataFrame(rows, columns=BASE_COLUMNS + list(channels) + TAIL_COLUMNS).sort_values("scan", kind="stable")
    table = table.reset_index(drop=True)
    if out is not None:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    n_label = int((table["label"] != "").sum())
    log.info("manifest: %d scans of %d subjects, %d with a lesion mask, channels %s", len(table), len(subjects), n_label, channels)
    if not label_root.is_dir():
        log.info("manifest: no label folder %s (unlabelled data)", label_root)
    return table


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


def cli_manifest(ns: argparse.Namespace) -> None:
    """CLI adapter: ``mripipe manifest --root --channels --label --out``."""
    build_manifest(ns.root, list(ns.channels), ns.label, ns.out)


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

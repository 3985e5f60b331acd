"""DICOM adapter: the series of a folder of DICOM studies converted with dcm2niix (the PyPI wheel
ships the binary) into a cache under ``results/`` -- never into the data folder -- with their JSON
sidecars; one series per channel chosen by a regular expression on ``SeriesDescription`` /
``ProtocolName``; label maps (NIfTI) and classes from a table.

Subjects are the ``PatientID``s; a patient with several studies (``StudyInstanceUID``) has one
session per study (``ses-01``, ... in study order), one study means no session.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import atomic_path
from mripipe.data.index import Index, Problem, check_channels, class_value, clean_id, scan_id
from mripipe.data.table import read_table, resolve

log = logging.getLogger(__name__)


def dcm2niix_binary() -> str:
    """Path of the dcm2niix executable shipped by the ``dcm2niix`` wheel."""
    import dcm2niix

    return str(dcm2niix.bin)


def convert(root: str | Path, cache: str | Path) -> Path:
    """Convert every DICOM series under ``root`` into ``cache`` (NIfTI + JSON sidecars).

    Files are named ``{PatientID}/{StudyInstanceUID}/{SeriesNumber}_{SeriesDescription}``; the
    folder appears at once (written to a temporary sibling, then renamed). ``root`` is only read.

    Raises:
        InputError: dcm2niix fails or finds no series (its last message names the problem).
    """
    root, cache = Path(root), Path(cache)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: DICOM folder not found")
    with atomic_path(cache) as tmp:
        tmp.mkdir(parents=True)
        proc = subprocess.run(
            [dcm2niix_binary(), "-b", "y", "-ba", "n", "-z", "y", "-f", "%i/%k/%s_%d", "-o", str(tmp), str(root)],
            capture_output=True, text=True, check=False,
        )
        log.info("dcm2niix:\n%s", proc.stdout.strip())
        sidecars = list(tmp.rglob("*.json"))
        if proc.returncode != 0 or not sidecars:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise InputError(f"{root}: dcm2niix converted no series (exit {proc.returncode}: {last})")
    log.info("dcm2niix: %d series from %s -> %s", len(sidecars), root, cache)
    return cache


def _series(cache: Path) -> list[dict[str, Any]]:
    """The sidecar of every converted series, with its ``nifti`` path."""
    out = []
    for side in sorted(cache.rglob("*.json")):
        meta = json.loads(side.read_text())
        nifti = side.with_name(side.name[: -len(".json")] + ".nii.gz")
        if nifti.is_file():
            out.append({**meta, "nifti": str(nifti), "sidecar": str(side)})
    return out


def _sessions(series: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, str]]:
    """(PatientID, StudyInstanceUID) -> (subject, session)."""
    studies: dict[str, list[str]] = {}
    for s in series:
        studies.setdefault(str(s.get("PatientID", "anon")), [])
        uid = str(s.get("StudyInstanceUID", ""))
        if uid not in studies[str(s.get("PatientID", "anon"))]:
            studies[str(s.get("PatientID", "anon"))].append(uid)
    out = {}
    for patient, uids in studies.items():
        for k, uid in enumerate(sorted(uids)):
            out[(patient, uid)] = (f"sub-{clean_id(patient)}", f"ses-{k + 1:02d}" if len(uids) > 1 else "")
    return out


def _label_table(params: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str]]:
    """(subject, session) -> (label path, class) from ``data.dicom.table`` ({} when unset)."""
    name = params["dicom"]["table"]
    if not name:
        return {}
    path = Path(name) if Path(name).is_absolute() else Path(params["root"]) / name
    frame = read_table(path)
    if "subject" not in frame.columns:
        raise InputError(f"{path}: no subject column")
    out = {}
    for _, cells in frame.iterrows():
        sub = f"sub-{clean_id(cells['subject'])}"
        ses = str(cells.get("session", "")).strip()
        label = resolve(path.parent, cells[params["label"]]) if params["label"] in frame.columns else ""
        cls = class_value(cells[params["class_column"]]) if params["class_column"] in frame.columns else ""
        out[(sub, ses)] = (label, cls)
    return out


def index_dicom(params: dict[str, Any], cache: Path) -> Index:
    """Index the converted series in ``cache`` (``params``: the ``data:`` section)."""
    channels = list(params["channels"])
    check_channels(cache, channels)
    rules = params["dicom"]["series"]
    unknown = [c for c in channels if c not in rules]
    if unknown:
        raise InputError(f"data.dicom.series: no rule for channels {unknown}")
    series = _series(cache)
    ids = _sessions(series)
    labels = _label_table(params)
    index = Index(source="dicom", channels=channels)
    scans: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in series:
        scans.setdefault(ids[(str(s.get("PatientID", "anon")), str(s.get("StudyInstanceUID", "")))], []).append(s)
    for (sub, ses), members in sorted(scans.items()):
        scan = scan_id(sub, ses)
        row = {"subject": sub, "session": ses, "scan": scan}
        sources = []
        for ch in channels:
            text = [f"{s.get('SeriesDescription', '')} {s.get('ProtocolName', '')}" for s in members]
            hits = [s for s, t in zip(members, text, strict=True) if re.search(rules[ch], t)]
            row[ch] = hits[0]["nifti"] if len(hits) == 1 else ""
            if len(hits) != 1:
                what = ", ".join(f"{h.get('SeriesNumber')} {h.get('SeriesDescription', '')!r}" for h in hits)
                check, detail = ("duplicate", f"several series match {ch} ({what})") if hits else ("missing", f"no series matches {ch} ({rules[ch]!r})")
                index.problems.append(Problem(scan, str(Path(members[0]["nifti"]).parent), check, detail))
            else:
                sources.append(f"{ch}={hits[0]['sidecar']}")
        label, cls = labels.get((sub, ses), labels.get((sub, ""), ("", "")))
        row.update({"label": label, "class": cls, "source": ";".join(sources)})
        index.rows.append(row)
    log.info("dicom: %d scans from %d series, channels %s", len(index.rows), len(series), channels)
    return index


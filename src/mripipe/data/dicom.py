"""DICOM adapter: the series of a folder of DICOM studies converted with dcm2niix (the PyPI wheel
ships the binary) into a cache under ``results/`` -- never into the data folder -- with their JSON
sidecars and ``studies.tsv`` (each study's StudyDate and StudyTime, read from its files: the
sidecars carry no study date); one series per channel chosen by a regular expression on
``SeriesDescription`` / ``ProtocolName`` among the series whose ImageType is not skipped
(localizers, derived reformats); label maps (NIfTI) and classes from a table.

Subjects are the ``PatientID``s, sessions their studies numbered by StudyDate and StudyTime; the
label table names a study by StudyDate, StudyInstanceUID or ``ses-NN``
(:mod:`~mripipe.data.dicom_studies`).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from mripipe.core.errors import InputError
from mripipe.core.utils import atomic_path
from mripipe.data.dicom_studies import Study, label_table, number_sessions
from mripipe.data.index import Index, Problem, check_channels, scan_id

log = logging.getLogger(__name__)

#: the study table written beside the converted series
STUDIES = "studies.tsv"
STUDY_COLUMNS = ["PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "Manufacturer", "file"]


def dcm2niix_binary() -> str:
    """Path of the dcm2niix executable shipped by the ``dcm2niix`` wheel."""
    import dcm2niix

    return str(dcm2niix.bin)


def convert(root: str | Path, cache: str | Path) -> Path:
    """Convert every DICOM series under ``root`` into ``cache`` (NIfTI + JSON sidecars + ``studies.tsv``).

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
            [dcm2niix_binary(), "-b", "y", "-ba", "n", "-z", "y", "-d", "9", "-f", "%i/%k/%s_%d", "-o", str(tmp), str(root)],
            capture_output=True, text=True, check=False,
        )
        log.info("dcm2niix:\n%s", proc.stdout.strip())
        sidecars = list(tmp.rglob("*.json"))
        if proc.returncode != 0 or not sidecars:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise InputError(f"{root}: dcm2niix converted no series (exit {proc.returncode}: {last})")
        wanted = {_study_key(json.loads(p.read_text())) for p in sidecars}
        studies = read_study_headers(root, wanted)
        studies.to_csv(tmp / STUDIES, sep="\t", index=False)
    log.info("dcm2niix: %d series of %d studies from %s -> %s", len(sidecars), len(studies), root, cache)
    return cache


def _study_key(meta: dict[str, Any]) -> tuple[str, str]:
    return str(meta.get("PatientID", "")), str(meta.get("StudyInstanceUID", ""))


def read_study_headers(root: Path, wanted: set[tuple[str, str]]) -> pd.DataFrame:
    """StudyDate, StudyTime and Manufacturer of each (PatientID, StudyInstanceUID) in ``wanted``,
    read from the first file of that study found under ``root`` (headers only).

    Raises:
        InputError: a study of ``wanted`` has no readable file under ``root``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    tags = ["PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "Manufacturer"]
    found: dict[tuple[str, str], dict[str, str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if len(found) == len(wanted):
            break
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        key = (str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", "")))
        if key in wanted and key not in found:
            found[key] = {t: str(ds.get(t, "") or "").strip() for t in tags} | {"file": str(path)}
    missing = sorted(wanted - set(found))
    if missing:
        raise InputError(f"{root}: no readable DICOM file of study {missing[0][1]} (PatientID {missing[0][0]!r}) that dcm2niix converted")
    return pd.DataFrame(list(found.values()), columns=STUDY_COLUMNS)


def _series(cache: Path) -> list[dict[str, Any]]:
    """The sidecar of every converted series, with its ``nifti`` path."""
    out = []
    for side in sorted(cache.rglob("*.json")):
        meta = json.loads(side.read_text())
        nifti = side.with_name(side.name[: -len(".json")] + ".nii.gz")
        if nifti.is_file():
            out.append({**meta, "nifti": str(nifti), "sidecar": str(side)})
    return out


def _read_studies(cache: Path) -> dict[tuple[str, str], Study]:
    """``studies.tsv`` of the cache: (PatientID, StudyInstanceUID) -> :class:`Study` (no ids yet)."""
    path = cache / STUDIES
    if not path.is_file():
        raise InputError(f"{path}: missing; the DICOM cache predates it (delete {cache} and run `mripipe dicom` again)")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return {(r.PatientID, r.StudyInstanceUID): Study(r.PatientID, r.StudyInstanceUID, re.sub(r"\D", "", r.StudyDate),
                                                     r.StudyTime, r.Manufacturer) for r in frame.itertuples()}


def _choose(members: list[dict[str, Any]], pattern: str, skip: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The series of one study whose description matches ``pattern`` and whose ImageType has
    none of ``skip`` (localizers, derived reformats), and the matching series skipped."""
    hits, skipped = [], []
    for s in members:
        if not re.search(pattern, f"{s.get('SeriesDescription', '')} {s.get('ProtocolName', '')}"):
            continue
        kinds = [str(v) for v in s.get("ImageType", [])]
        if {k.upper() for k in kinds} & skip:
            image_type = "\\".join(kinds)
            skipped.append(f"{s.get('SeriesNumber')} {s.get('SeriesDescription', '')!r} ({image_type})")
            continue
        hits.append(s)
    return hits, skipped


def _problem(scan: str, folder: str, channel: str, pattern: str, hits: list[dict[str, Any]], skipped: list[str]) -> Problem:
    """No series, or several, for one channel of one study."""
    if hits:
        what = ", ".join(f"{h.get('SeriesNumber')} {h.get('SeriesDescription', '')!r}" for h in hits)
        return Problem(scan, folder, "duplicate", f"several series match {channel} ({what})")
    why = f"; skipped by ImageType (data.dicom.skip_image_types): {', '.join(skipped)}" if skipped else ""
    return Problem(scan, folder, "missing", f"no series matches {channel} ({pattern!r}){why}")


def index_dicom(params: dict[str, Any], cache: Path) -> Index:
    """Index the converted series in ``cache`` (``params``: the ``data:`` section)."""
    channels = list(params["channels"])
    check_channels(cache, channels)
    rules = params["dicom"]["series"]
    unknown = [c for c in channels if c not in rules]
    if unknown:
        raise InputError(f"data.dicom.series: no rule for channels {unknown}")
    skip = {str(t).upper() for t in params["dicom"]["skip_image_types"]}
    series = _series(cache)
    headers = _read_studies(cache)
    missing = [s["sidecar"] for s in series if _study_key(s) not in headers]
    if missing:
        raise InputError(f"{missing[0]}: its study is not in {cache / STUDIES} (delete {cache} and run `mripipe dicom` again)")
    studies = {(s.patient, s.uid): s for s in number_sessions([headers[k] for k in dict.fromkeys(map(_study_key, series))])}
    labels = label_table(params, list(studies.values()))
    index = Index(source="dicom", channels=channels)
    members_of: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in series:
        members_of.setdefault(_study_key(s), []).append(s)
    for key, members in sorted(members_of.items(), key=lambda kv: scan_id(studies[kv[0]].subject, studies[kv[0]].session)):
        study = studies[key]
        scan = scan_id(study.subject, study.session)
        row = {"subject": study.subject, "session": study.session, "scan": scan}
        sources = []
        for ch in channels:
            hits, skipped = _choose(members, rules[ch], skip)
            log.debug("dicom: %s: %s: series skipped by ImageType: %s", scan, ch, skipped)
            row[ch] = hits[0]["nifti"] if len(hits) == 1 else ""
            if len(hits) == 1:
                sources.append(f"{ch}={hits[0]['sidecar']}")
            else:
                index.problems.append(_problem(scan, str(Path(members[0]["nifti"]).parent), ch, rules[ch], hits, skipped))
        label, cls = labels.get(key, ("", ""))
        row.update({"label": label, "class": cls, "source": ";".join(sources)})
        index.rows.append(row)
    log.info("dicom: %d scans from %d series, channels %s", len(index.rows), len(series), channels)
    return index

"""The studies of a DICOM dataset: their subject and session ids, and the label table matched to them.

A patient (``PatientID``) is a subject; a patient with several studies (``StudyInstanceUID``) has
one session per study, ``ses-01``, ... in the order of StudyDate and StudyTime, a tie in the order
of the StudyInstanceUID (numerically); one study means no session.

The label table (``data.dicom.table``) has one row per study -- or per patient -- with ``subject``
(the PatientID), optional ``session``, the label column (a NIfTI path relative to the table) and
the class column.

``session`` names a study as the schema documents: its StudyDate (``20230314`` or
``2023-03-14``), its StudyInstanceUID, or the ``ses-NN`` the adapter numbers it (by date). Empty =
every study of the patient (a class for all of them; a label map only when the patient has one
study). A row that names no study, or a study another row already names, is an error naming the
row's line and the table: nothing is dropped silently.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mripipe.core.errors import InputError
from mripipe.data.index import class_value, clean_id
from mripipe.data.table import ids, read_table, resolve

log = logging.getLogger(__name__)

#: a StudyDate in a session cell: 20230314 or 2023-03-14
_DATE = re.compile(r"\d{4}-?\d{2}-?\d{2}")
#: a session id in a session cell: ses-01
_SESSION = re.compile(r"ses-(\d+)")


@dataclass(frozen=True)
class Study:
    """One study of one patient, with the subject and session ids it is given."""

    patient: str
    uid: str
    date: str
    time: str
    manufacturer: str
    subject: str = ""
    session: str = ""
    number: int = 1

    def describe(self) -> str:
        """``ses-01 = 20230314 101500 (SIEMENS, 1.2.3)`` for messages."""
        return f"{self.session or 'only study'} = {self.date or 'no StudyDate'} {self.time} ({self.manufacturer or 'no Manufacturer'}, {self.uid})"


def _time_key(text: str) -> str:
    """A DICOM TM (``HHMMSS.FFFFFF``, ``HHMM``, ``HH:MM:SS``) as ``HHMMSS.FFFFFF`` for sorting."""
    whole, _, frac = text.replace(":", "").partition(".")
    return f"{whole.ljust(6, '0')}.{frac.ljust(6, '0')}" if whole else ""


def _uid_key(uid: str) -> tuple[tuple[int, str], ...]:
    """A UID sorted component by component as numbers (``1.2.10`` after ``1.2.9``)."""
    return tuple((len(p), p) for p in uid.split("."))


def study_order(study: Study) -> tuple[Any, ...]:
    """Sort key of a patient's studies: StudyDate, StudyTime, then StudyInstanceUID; undated last."""
    return (not study.date, study.date, _time_key(study.time), _uid_key(study.uid))


def number_sessions(studies: list[Study]) -> list[Study]:
    """Subject and session ids of the studies (``ses-NN`` by :func:`study_order` per patient).

    Raises:
        InputError: two PatientIDs that become the same subject id.
    """
    by_patient: dict[str, list[Study]] = {}
    for s in studies:
        by_patient.setdefault(s.patient, []).append(s)
    subjects: dict[str, str] = {}
    out = []
    for patient, own in sorted(by_patient.items()):
        sub = f"sub-{clean_id(patient)}"
        if subjects.setdefault(sub, patient) != patient:
            raise InputError(f"PatientIDs {subjects[sub]!r} and {patient!r} both become subject {sub}")
        own = sorted(own, key=study_order)
        for k, s in enumerate(own):
            ses = f"ses-{k + 1:02d}" if len(own) > 1 else ""
            out.append(replace(s, subject=sub, session=ses, number=k + 1))
        if len(own) > 1:
            log.info("dicom: %s (%s): %s", patient, sub, "; ".join(s.describe() for s in out[-len(own):]))
        for a, b in zip(own, own[1:], strict=False):
            if (a.date, _time_key(a.time)) == (b.date, _time_key(b.time)):
                log.warning("dicom: %s: studies %s and %s have the same StudyDate and StudyTime; ordered by StudyInstanceUID",
                            patient, a.uid, b.uid)
    return out


def match_session(cell: str, studies: list[Study]) -> list[Study]:
    """The studies of one patient that a ``session`` cell names (all of them when it is empty)."""
    cell = cell.strip()
    if not cell:
        return list(studies)
    if m := _SESSION.fullmatch(cell):
        return [s for s in studies if s.number == int(m.group(1))]
    if _DATE.fullmatch(cell):
        return [s for s in studies if s.date == cell.replace("-", "")]
    return [s for s in studies if s.uid == cell]


def _row_studies(line: int, subject: str, session: str, has_label: bool,
                 patients: dict[str, list[Study]]) -> tuple[list[Study], str]:
    """The studies a table row names, or "" and the reason it names none (or too many)."""
    where = f"line {line} (subject {subject!r}, session {session!r})"
    own = patients.get(ids(subject, "")[0])
    if own is None:
        known = ", ".join(sorted(s[0].patient for s in patients.values())[:10])
        return [], f"{where}: no such PatientID in the DICOM export (patients: {known})"
    hits = match_session(session, own)
    listing = "; ".join(s.describe() for s in own)
    if not hits:
        return [], f"{where}: matches no study of {own[0].patient} (its studies: {listing}); session takes a StudyDate, a StudyInstanceUID or ses-NN"
    if len(hits) > 1 and (session.strip() or has_label):
        forms = "StudyInstanceUID or ses-NN" if session.strip() else "StudyDate, StudyInstanceUID or ses-NN"
        return [], f"{where}: matches {len(hits)} studies of {own[0].patient} ({listing}); a label map belongs to one: name it by {forms}"
    return hits, ""


def label_table(params: dict[str, Any], studies: list[Study]) -> dict[tuple[str, str], tuple[str, str]]:
    """(PatientID, StudyInstanceUID) -> (label path, class) from ``data.dicom.table`` ({} when unset).

    Label paths are relative to the table's folder, normalised (``data/labels/x.nii.gz``, never
    ``data/dicom/../labels/x.nii.gz``).

    Raises:
        InputError: the table has no subject column, or rows that name no study, several studies
            (a label map) or a study another row names: one message listing every such row.
    """
    name = params["dicom"]["table"]
    if not name:
        return {}
    path = Path(resolve(Path(params["root"]), name))
    frame = read_table(path)
    if "subject" not in frame.columns:
        raise InputError(f"{path}: no subject column (columns: {list(frame.columns)})")
    patients: dict[str, list[Study]] = {}
    for s in studies:
        patients.setdefault(s.subject, []).append(s)
    label_col, class_col = params["label"], params["class_column"]
    out: dict[tuple[str, str], tuple[str, str]] = {}
    named: dict[tuple[str, str], int] = {}
    errors = []
    for i, cells in enumerate(frame.to_dict("records")):
        line = i + 2  # the header is line 1
        label = resolve(path.parent, cells[label_col]) if label_col in cells else ""
        hits, error = _row_studies(line, cells["subject"], cells.get("session", ""), bool(label), patients)
        for s in hits:
            key = (s.patient, s.uid)
            if key in named:
                error = f"line {line} (subject {cells['subject']!r}, session {cells.get('session', '')!r}): names study {s.describe()} of {s.patient}, as line {named[key]} does"
                break
            named[key] = line
            out[key] = (label, class_value(cells[class_col]) if class_col in cells else "")
        if error:
            errors.append(error)
    if errors:
        raise InputError(f"{path}: {len(errors)} row(s) name no single study: " + "; ".join(errors))
    log.info("dicom: %s: labels or classes of %d of %d studies", path, len(out), len(studies))
    return out

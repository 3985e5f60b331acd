"""A DICOM export written the way PACS and scanners write it, with pydicom (independent of the
DICOM code in SimpleITK and dcm2niix that the pipeline reads it with).

What it writes: nested ``PA*/ST*/SE*/IM*`` folders whose file names are shuffled (a file's number
says nothing about its slice), one file per slice, oblique slices (ImageOrientationPatient not
axis-aligned), int16 pixels with a RescaleSlope and RescaleIntercept that are not 1 and 0,
Explicit VR Little Endian. :func:`localizer` and :func:`reformat` make the series a scanner adds
to a study: a three-slice LOCALIZER and a DERIVED\\SECONDARY\\MPR reformat.
:func:`export_phantom` turns a phantom BIDS cohort (``mripipe phantom``) into such an export with
two vendors, sessions whose StudyDate order is the opposite of their StudyInstanceUID order, lesion
labels (NIfTI, on each T1w series' grid) and a label table naming studies by StudyDate,
StudyInstanceUID and ``ses-NN``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

UID_ROOT = "1.2.826.0.1.3680043.8.498."
VENDORS = ("SIEMENS", "GE MEDICAL SYSTEMS")
ORIGINAL = ("ORIGINAL", "PRIMARY", "M", "ND")


@dataclass(frozen=True)
class Series:
    """One series: its image (real values, any oblique geometry) and how it is stored."""

    number: int
    description: str
    image: sitk.Image
    image_type: tuple[str, ...] = ORIGINAL
    slope: float = 0.5
    intercept: float = -64.0


@dataclass(frozen=True)
class Study:
    """One study of one patient on one scanner."""

    uid: str
    date: str
    time: str
    manufacturer: str
    series: tuple[Series, ...]


@dataclass(frozen=True)
class Patient:
    patient_id: str
    studies: tuple[Study, ...]


def uid(*parts: int) -> str:
    """A valid DICOM UID under pydicom's root."""
    return UID_ROOT + ".".join(str(p) for p in parts)


def quantise(image: sitk.Image, slope: float, intercept: float) -> np.ndarray:
    """The int16 values that store ``image`` (z, y, x): ``round((value - intercept) / slope)``."""
    stored = np.rint((sitk.GetArrayFromImage(image).astype(np.float64) - intercept) / slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError(f"values {stored.min()}..{stored.max()} do not fit int16 with slope {slope}, intercept {intercept}")
    return stored.astype(np.int16)


def stored_values(series: Series) -> np.ndarray:
    """What the series holds once rescaled (z, y, x): the values a reader must give back."""
    return quantise(series.image, series.slope, series.intercept) * series.slope + series.intercept


def rotation(angles_deg: tuple[float, float, float]) -> tuple[float, ...]:
    """A direction matrix (row-major 3x3) rotated about x, y and z by ``angles_deg``."""
    tx = sitk.Euler3DTransform()
    tx.SetRotation(*np.deg2rad(angles_deg))
    return tuple(tx.GetMatrix())


def grid_over(source: sitk.Image, spacing: tuple[float, float, float], direction: tuple[float, ...],
              margin_mm: float = 0.0) -> sitk.Image:
    """An empty float image with ``direction`` and ``spacing`` covering ``source``'s field of view."""
    size = np.array(source.GetSize())
    corners = np.array([source.TransformContinuousIndexToPhysicalPoint([float(c) for c in idx * (size - 1)])
                        for idx in np.array(np.meshgrid([0, 1], [0, 1], [0, 1])).reshape(3, -1).T])
    axes = np.array(direction).reshape(3, 3)
    local = corners @ axes  # coordinates along the new axes
    lo, hi = local.min(axis=0) - margin_mm, local.max(axis=0) + margin_mm
    shape = np.maximum(1, np.ceil((hi - lo) / np.array(spacing)).astype(int) + 1)
    grid = sitk.Image([int(s) for s in shape], sitk.sitkFloat32)
    grid.SetSpacing(tuple(float(s) for s in spacing))
    grid.SetDirection(direction)
    grid.SetOrigin(tuple(float(v) for v in axes @ lo))
    return grid


def resample(source: sitk.Image, grid: sitk.Image, nearest: bool = False) -> sitk.Image:
    """``source`` on ``grid`` (linear, or nearest neighbour for labels), 0 outside."""
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(source, grid, sitk.Transform(), interp, 0.0,
                         source.GetPixelID() if nearest else sitk.sitkFloat32)


def localizer(source: sitk.Image) -> sitk.Image:
    """Three thick parallel slices through the middle of ``source`` (a scout)."""
    grid = grid_over(source, (source.GetSpacing()[0] * 2, source.GetSpacing()[1] * 2, 20.0), source.GetDirection())
    centre = grid.GetDepth() // 2
    return resample(source, grid)[:, :, max(0, centre - 1): centre + 2]


def reformat(source: sitk.Image) -> sitk.Image:
    """A sagittal reformat of ``source`` (its axes permuted, coarser in-plane): an MPR."""
    d = np.array(source.GetDirection()).reshape(3, 3)
    sag = tuple(float(v) for v in d[:, [1, 2, 0]].ravel())
    sp = source.GetSpacing()
    return resample(source, grid_over(source, (sp[1] * 1.5, sp[2] * 1.5, sp[0] * 1.5), sag))


def _slice(patient: Patient, study: Study, series: Series, k: int, pixels: np.ndarray,
           series_uid: str) -> Dataset:
    """The dataset of slice ``k`` (``pixels``: its int16 rows x columns)."""
    img = series.image
    d = img.GetDirection()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPInstanceUID = f"{series_uid}.{k + 1}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.PatientID = ds.PatientName = patient.patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.uid, series_uid
    ds.FrameOfReferenceUID = f"{study.uid}.0"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = study.date
    ds.StudyTime, ds.SeriesTime = study.time, study.time
    ds.AcquisitionTime = f"{int(study.time[:2]):02d}{series.number:02d}00"
    ds.Modality, ds.Manufacturer, ds.MagneticFieldStrength = "MR", study.manufacturer, 3
    ds.ImageType = list(series.image_type)
    ds.SeriesNumber, ds.InstanceNumber = series.number, k + 1
    ds.SeriesDescription = ds.ProtocolName = series.description
    ds.ImagePositionPatient = [f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])]
    ds.PixelSpacing = [f"{img.GetSpacing()[1]:.6f}", f"{img.GetSpacing()[0]:.6f}"]
    ds.SliceThickness = ds.SpacingBetweenSlices = f"{img.GetSpacing()[2]:.6f}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{series.slope:g}", f"{series.intercept:g}", "US"
    ds.RepetitionTime, ds.EchoTime = "2300", "3.0"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


def write_export(root: Path, patients: list[Patient], seed: int = 0) -> list[Path]:
    """Write ``patients`` under ``root`` as ``PA{i}/ST{j}/SE{k}/IM{n}``; returns the files.

    File numbers are shuffled within each series, so neither names nor folder order give the
    slice order; every slice carries its position, orientation and rescale tags.
    """
    rng = np.random.default_rng(seed)
    files = []
    for i, patient in enumerate(patients):
        for j, study in enumerate(patient.studies):
            for k, series in enumerate(study.series):
                folder = root / f"PA{i}" / f"ST{j}" / f"SE{k}"
                folder.mkdir(parents=True, exist_ok=True)
                series_uid = f"{study.uid}.{series.number}"
                stored = quantise(series.image, series.slope, series.intercept)
                names = rng.permutation(len(stored))
                for z, name in zip(range(len(stored)), names, strict=True):
                    path = folder / f"IM{name}"
                    pydicom.dcmwrite(path, _slice(patient, study, series, z, stored[z], series_uid),
                                     enforce_file_format=True)
                    files.append(path)
    return files


def head(spacing: float = 6.0) -> tuple[sitk.Image, sitk.Image]:
    """A T1w-like and a FLAIR-like head (real values, axis-aligned) from the ICBM152 template."""
    from mripipe.core.template import load_template

    tpl = load_template()
    grid = grid_over(tpl.t1, (spacing,) * 3, tpl.t1.GetDirection())
    t1 = resample(tpl.t1, grid) * 800.0
    flair = resample(tpl.gm, grid) * 500.0 + resample(tpl.wm, grid) * 250.0 + resample(tpl.t1, grid) * 100.0
    return t1, flair


def oblique(image: sitk.Image, angles_deg: tuple[float, float, float], thick: float = 1.0) -> sitk.Image:
    """``image`` resampled onto an oblique grid (rotated by ``angles_deg``, slices ``thick`` times thicker)."""
    sp = image.GetSpacing()
    return resample(image, grid_over(image, (sp[0], sp[1], sp[2] * thick), rotation(angles_deg)))


def brain_series(t1: sitk.Image, flair: sitk.Image, slope: float, intercept: float,
                 extra_t1: bool = False) -> tuple[Series, ...]:
    """What a scanner writes for one brain study: a localizer, the T1w, its MPR reformat, the
    FLAIR (and, with ``extra_t1``, a second T1w series: an ambiguous study). ``t1`` and ``flair``
    are written as given (their oblique grids)."""
    out = [Series(1, "t1_fl2d_localizer", localizer(t1), ("ORIGINAL", "PRIMARY", "LOCALIZER"), slope, intercept),
           Series(2, "t1_mprage_tra", t1, ORIGINAL, slope, intercept),
           Series(3, "t1_mprage_tra_MPR_sag", reformat(t1), ("DERIVED", "SECONDARY", "MPR"), slope, intercept),
           Series(4, "t2_flair_tra", flair, ORIGINAL, slope, intercept)]
    if extra_t1:
        out.append(Series(5, "t1_se_tra_post", t1 * 1.2, ORIGINAL, slope, intercept))
    return tuple(out)


def write_label(mask: sitk.Image, grid: sitk.Image, path: Path) -> Path:
    """A label map (uint8 NIfTI) of ``mask`` on ``grid`` (nearest neighbour)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.Cast(resample(sitk.Cast(mask, sitk.sitkUInt8), grid, nearest=True), sitk.sitkUInt8), str(path))
    return path


@dataclass
class Export:
    """What :func:`export_phantom` wrote: the DICOM root, the label table and, per study, its
    PatientID, StudyInstanceUID, StudyDate, session form in the table and label file."""

    root: Path
    table: Path
    studies: list[dict[str, Any]] = field(default_factory=list)
    ambiguous: str = ""


#: how the label table names the studies of the 1st, 2nd, 3rd patient with two studies
SESSION_FORMS = ("StudyDate", "StudyInstanceUID", "ses-NN")


def _phantom_scans(bids: Path) -> list[dict[str, Any]]:
    """The phantom's scans: subject, class, session index and files."""
    participants = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str).to_dict("records")
    scans = []
    for row in participants:
        sub = row["participant_id"]
        for ses in sorted(p.name for p in (bids / sub).glob("ses-*")):
            scan, anat = f"{sub}_{ses}", bids / sub / ses / "anat"
            scans.append({"subject": sub, "class": row["class"], "session": ses, "n_sessions": int(row["n_sessions"]),
                          "T1w": anat / f"{scan}_T1w.nii.gz", "FLAIR": anat / f"{scan}_FLAIR.nii.gz",
                          "mask": bids / "derivatives" / "lesions" / sub / ses / "anat" / f"{scan}_desc-lesions_mask.nii.gz"})
    return scans


def _study_of(scan: dict[str, Any], n: int, k: int) -> tuple[Study, sitk.Image]:
    """The study of phantom scan number ``n`` (session index ``k``) and its T1w grid: ses-01 in
    2023 on a Siemens, ses-02 in 2024 on a GE scanner with a lower StudyInstanceUID."""
    angles = (8.0 - 3 * (n % 4), 5.0 - 2 * (n % 3), -6.0 + 4 * (n % 2))
    t1 = oblique(sitk.Cast(sitk.ReadImage(str(scan["T1w"])), sitk.sitkFloat32), angles)
    flair = oblique(sitk.Cast(sitk.ReadImage(str(scan["FLAIR"])), sitk.sitkFloat32), angles[::-1])
    vendor = VENDORS[k if scan["n_sessions"] > 1 else n % 2]
    slope, intercept = (0.5, -64.0) if vendor == VENDORS[0] else (0.25, 12.0)
    study = Study(uid(9 - 8 * k, n), f"{2023 + k}{3 - k:02d}{10 + n:02d}", f"{9 + n % 8:02d}1500", vendor,
                  brain_series(t1, flair, slope, intercept))
    return study, t1


def export_phantom(bids: Path, out: Path, seed: int = 0) -> Export:
    """A phantom BIDS cohort as a DICOM export ``out/dicom`` with labels ``out/labels/`` and the
    label table ``out/labels.tsv`` (columns subject, session, lesions, class).

    Each phantom subject is a patient ``P-NNN``; each session a study (see :func:`_study_of`);
    the label table names the studies of the patients with two studies by StudyDate,
    StudyInstanceUID and ``ses-NN`` in turn. One more patient, ``P-999`` (a row of the table
    too), has one study with two T1w series: ambiguous, left out by the adapter.
    """
    export = Export(out / "dicom", out / "labels.tsv")
    scans = _phantom_scans(bids)
    multi = list(dict.fromkeys(s["subject"] for s in scans if s["n_sessions"] > 1))
    patients: dict[str, list[Study]] = {}
    rows = []
    for n, scan in enumerate(scans):
        k = int(scan["session"][4:]) - 1
        patient = f"P-{scan['subject'][4:]}"
        study, grid = _study_of(scan, n, k)
        patients.setdefault(patient, []).append(study)
        label = write_label(sitk.ReadImage(str(scan["mask"])), grid, out / "labels" / f"{patient}_{study.date}.nii.gz")
        form = SESSION_FORMS[multi.index(scan["subject"]) % 3] if scan["subject"] in multi else ""
        session = {"StudyDate": study.date, "StudyInstanceUID": study.uid, "ses-NN": f"ses-{k + 1:02d}", "": ""}[form]
        rows.append({"subject": patient, "session": session, "lesions": str(label.relative_to(out)), "class": scan["class"]})
        export.studies.append({"patient": patient, "uid": study.uid, "date": study.date, "form": form,
                               "label": str(label), "phantom": f"{scan['subject']}_{scan['session']}"})
    first = scans[0]
    t1 = oblique(sitk.Cast(sitk.ReadImage(str(first["T1w"])), sitk.sitkFloat32), (5.0, 0.0, 0.0))
    flair = oblique(sitk.Cast(sitk.ReadImage(str(first["FLAIR"])), sitk.sitkFloat32), (0.0, 5.0, 0.0))
    patients["P-999"] = [Study(uid(5, 999), "20230601", "120000", VENDORS[0], brain_series(t1, flair, 0.5, -64.0, extra_t1=True))]
    label = write_label(sitk.ReadImage(str(first["mask"])), t1, out / "labels" / "P-999_20230601.nii.gz")
    rows.append({"subject": "P-999", "session": "", "lesions": str(label.relative_to(out)), "class": first["class"]})
    export.ambiguous = "sub-P999"
    write_export(export.root, [Patient(p, tuple(s)) for p, s in patients.items()], seed)
    pd.DataFrame(rows).to_csv(export.table, sep="\t", index=False)
    return export

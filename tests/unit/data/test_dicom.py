"""DICOM adapter on an export written with pydicom the way PACS and scanners write it
(tests/dicom_export.py): nested PA/ST/SE/IM folders with shuffled names, oblique int16 slices
with a rescale slope and intercept, a localizer and an MPR reformat in every study, patients with
two studies from two vendors whose StudyDate order is the opposite of their StudyInstanceUID
order. Converted with dcm2niix into a cache outside the data folder; sessions numbered by date;
the label table names studies by StudyDate, StudyInstanceUID or ses-NN; pydicom's shipped MR
file is one slice, which validation names as 2-D."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dicom_export import (
    Patient,
    Series,
    Study,
    brain_series,
    head,
    oblique,
    stored_values,
    uid,
    write_export,
    write_label,
)
from mripipe.core.errors import InputError
from mripipe.data.dicom import convert
from mripipe.data.dicom_studies import Study as DicomStudy
from mripipe.data.dicom_studies import number_sessions
from mripipe.data.manifest import build, read_meta
from mripipe.data.validate import validate

P1_LATER, P1_EARLIER = uid(1, 1), uid(9, 1)  # the 2024 study has the lower UID
P2_AFTERNOON, P2_MORNING = uid(1, 2), uid(9, 2)  # one day, two studies
P3 = uid(5, 3)


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The export under ``data/dicom``, a label per study under ``data/labels`` (on its T1w's
    grid), converted into ``results/dicom``."""
    base = tmp_path_factory.mktemp("dicom")
    t1, flair = head(6.0)
    t1_a, flair_a = oblique(t1, (12.0, -8.0, 5.0)), oblique(flair, (-5.0, 10.0, 0.0), thick=1.5)
    t1_b, flair_b = oblique(t1, (-6.0, 4.0, -9.0)), oblique(flair, (0.0, -7.0, 6.0), thick=1.5)
    siemens, ge = brain_series(t1_a, flair_a, 0.5, -64.0), brain_series(t1_b, flair_b, 0.25, 12.0)
    studies = {
        P1_LATER: Study(P1_LATER, "20240221", "101500", "GE MEDICAL SYSTEMS", ge),
        P1_EARLIER: Study(P1_EARLIER, "20230314", "090000", "SIEMENS", siemens),
        P2_AFTERNOON: Study(P2_AFTERNOON, "20230601", "143000", "SIEMENS", siemens),
        P2_MORNING: Study(P2_MORNING, "20230601", "0800", "GE MEDICAL SYSTEMS", ge),
        P3: Study(P3, "20230702", "120000", "SIEMENS", brain_series(t1_a, flair_a, 0.5, -64.0, extra_t1=True)),
    }
    patients = [Patient("P-001", (studies[P1_LATER], studies[P1_EARLIER])),
                Patient("P-002", (studies[P2_AFTERNOON], studies[P2_MORNING])), Patient("P-003", (studies[P3],))]
    root = base / "data" / "dicom"
    write_export(root, patients, seed=3)
    for patient in patients:
        for s in patient.studies:
            t1w = s.series[1].image
            write_label(t1w > 560, t1w, base / "data" / "labels" / f"{patient.patient_id}_{s.date}_{s.time}.nii.gz")
    before = _tree_hash(root)
    cache = convert(root, base / "results" / "dicom")
    return {"base": base, "root": root, "cache": cache, "before": before, "after": _tree_hash(root), "studies": studies}


def _build(export: dict[str, Any], monkeypatch: pytest.MonkeyPatch, table: str = "", **options: Any) -> pd.DataFrame:
    """The manifest from the working directory ``base`` (relative paths, as the workflow runs)."""
    monkeypatch.chdir(export["base"])
    if table:
        Path("data/labels.tsv").write_text(table)
    params = {"source": "dicom", "root": "data/dicom", "dicom": {"table": "../labels.tsv" if table else "", **options}}
    return build(params, "results/manifest.tsv", "results/dicom").set_index("scan")


def _study_of(path: str) -> str:
    """The StudyInstanceUID folder of a converted series (``results/dicom/{PatientID}/{uid}/...``)."""
    return Path(path).parent.name


def test_export_is_only_read_and_converted_to_the_rescaled_values(export: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    assert export["after"] == export["before"]
    assert (export["cache"] / "studies.tsv").is_file()
    table = _build(export, monkeypatch)
    for scan in ("sub-P001_ses-01", "sub-P001_ses-02"):
        study = export["studies"][_study_of(table.loc[scan, "T1w"])]
        source: Series = study.series[1]
        assert source.slope != 1 and source.intercept != 0
        converted = sitk.ReadImage(table.loc[scan, "T1w"])
        # the same voxels at the same physical points (dcm2niix flips the row axis)
        back = sitk.GetArrayFromImage(sitk.Resample(converted, source.image, sitk.Transform(), sitk.sitkNearestNeighbor, np.nan, sitk.sitkFloat64))
        assert not np.isnan(back).any()
        assert np.abs(back - sitk.GetArrayFromImage(source.image)).max() <= source.slope / 2 + 1e-6
        assert np.allclose(back, stored_values(source))
        d = np.abs(np.array(converted.GetDirection()).reshape(3, 3))
        assert np.allclose(d, np.abs(np.array(source.image.GetDirection()).reshape(3, 3)), atol=1e-4)
        assert d.max(axis=0).min() < 0.99  # still oblique


def test_sessions_follow_study_date_and_time_not_the_uid(export: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    table = _build(export, monkeypatch)
    assert list(table.index) == ["sub-P001_ses-01", "sub-P001_ses-02", "sub-P002_ses-01", "sub-P002_ses-02", "sub-P003"]
    assert _study_of(table.loc["sub-P001_ses-01", "T1w"]) == P1_EARLIER  # 2023, though its UID sorts last
    assert _study_of(table.loc["sub-P001_ses-02", "FLAIR"]) == P1_LATER
    assert _study_of(table.loc["sub-P002_ses-01", "T1w"]) == P2_MORNING  # same day: 08:00 before 14:30
    assert table.loc["sub-P003", "session"] == ""


def _study(uid_: str, date: str = "20230101", time: str = "120000", patient: str = "P-1") -> DicomStudy:
    return DicomStudy(patient, uid_, date, time, "SIEMENS")


def test_a_tie_in_date_and_time_falls_back_to_the_uid() -> None:
    studies = [_study("1.2.10"), _study("1.2.9"), _study("1.3", date=""), _study("1.1", time="1200"),
               _study("2.1", date="20221231", time="235959.9")]
    numbered = {s.uid: s.session for s in number_sessions(studies)}
    # 1.1, 1.2.9 and 1.2.10 share 2023-01-01 12:00 (1200 = 120000): UID order, numerically; undated last
    assert numbered == {"2.1": "ses-01", "1.1": "ses-02", "1.2.9": "ses-03", "1.2.10": "ses-04", "1.3": "ses-05"}
    with pytest.raises(InputError, match="PatientIDs 'P-1' and 'P1' both become subject sub-P1"):
        number_sessions([_study("1"), _study("2", patient="P1")])


def test_the_label_table_names_studies_by_date_uid_or_session(export: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    table = _build(export, monkeypatch, (
        "subject\tsession\tlesions\tclass\n"
        "P-001\t2023-03-14\tlabels/P-001_20230314_090000.nii.gz\tlow\n"
        "P-001\t20240221\tlabels/P-001_20240221_101500.nii.gz\thigh\n"
        f"P-002\t{P2_AFTERNOON}\tlabels/P-002_20230601_143000.nii.gz\tnone\n"
        "sub-P002\tses-01\tlabels/P-002_20230601_0800.nii.gz\tnone\n"
        "P-003\t\tlabels/P-003_20230702_120000.nii.gz\tlow\n"))
    labels = table[["label", "class"]].to_dict("index")
    assert labels == {
        "sub-P001_ses-01": {"label": "data/labels/P-001_20230314_090000.nii.gz", "class": "low"},
        "sub-P001_ses-02": {"label": "data/labels/P-001_20240221_101500.nii.gz", "class": "high"},
        "sub-P002_ses-01": {"label": "data/labels/P-002_20230601_0800.nii.gz", "class": "none"},
        "sub-P002_ses-02": {"label": "data/labels/P-002_20230601_143000.nii.gz", "class": "none"},
        "sub-P003": {"label": "data/labels/P-003_20230702_120000.nii.gz", "class": "low"},
    }
    found = validate("results/manifest.tsv", {}, "results/v.tsv", "results/valid.tsv", needs=("label", "class"))
    # every label is on its converted T1w's grid; only the study with two T1w series is left out
    assert [(q.scan, q.check) for q in found.itertuples()] == [("sub-P003", "duplicate")]


def test_a_patient_row_gives_every_study_its_class(export: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    table = _build(export, monkeypatch, "subject\tclass\nP-001\thigh\n")
    assert table["class"].to_dict() == {"sub-P001_ses-01": "high", "sub-P001_ses-02": "high", "sub-P002_ses-01": "",
                                        "sub-P002_ses-02": "", "sub-P003": ""}


@pytest.mark.parametrize(("rows", "message"), [
    ("P-001\t20220101\tlabels/a.nii.gz\n",
     "line 2 (subject 'P-001', session '20220101'): matches no study of P-001 (its studies: ses-01 = 20230314 090000 (SIEMENS, "),
    ("P-001\t20230314\tlabels/a.nii.gz\nP-007\t\tlabels/b.nii.gz\n",
     "line 3 (subject 'P-007', session ''): no such PatientID in the DICOM export (patients: P-001, P-002, P-003)"),
    ("P-002\t\tlabels/a.nii.gz\n", "line 2 (subject 'P-002', session ''): matches 2 studies of P-002"),
    ("P-002\t20230601\tlabels/a.nii.gz\n", "line 2 (subject 'P-002', session '20230601'): matches 2 studies of P-002"),
    (f"P-001\tses-01\tlabels/a.nii.gz\nP-001\t{P1_EARLIER}\tlabels/b.nii.gz\n",
     f"line 3 (subject 'P-001', session '{P1_EARLIER}'): names study ses-01 = 20230314 090000 (SIEMENS, {P1_EARLIER}) of P-001, as line 2 does"),
])
def test_a_row_naming_no_single_study_is_one_error_naming_it(export: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                             rows: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        _build(export, monkeypatch, "subject\tsession\tlesions\n" + rows)
    assert str(err.value).startswith("data/labels.tsv: 1 row(s) name no single study: ")
    assert message in str(err.value)


def test_localizer_and_mpr_are_never_chosen(export: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    table = _build(export, monkeypatch)
    assert {Path(p).name for p in table["T1w"] if p} == {"2_t1_mprage_tra.nii.gz"}  # not 1 (localizer) nor 3 (MPR)
    assert [(p["scan"], p["check"]) for p in read_meta("results/manifest.tsv")["problems"]] == [("sub-P003", "duplicate")]
    every = _build(export, monkeypatch, skip_image_types=[])
    assert every.loc["sub-P001_ses-01", "T1w"] == ""
    problems = {p["scan"]: p["detail"] for p in read_meta("results/manifest.tsv")["problems"]}
    assert problems["sub-P001_ses-01"] == "several series match T1w (1 't1_fl2d_localizer', 2 't1_mprage_tra', 3 't1_mprage_tra_MPR_sag')"
    _build(export, monkeypatch, series={"T1w": "MPR|localizer", "FLAIR": "flair"})
    problems = {p["scan"]: p["detail"] for p in read_meta("results/manifest.tsv")["problems"]}
    assert problems["sub-P002_ses-01"] == ("no series matches T1w ('MPR|localizer'); skipped by ImageType (data.dicom.skip_image_types): "
                                           "1 't1_fl2d_localizer' (ORIGINAL\\PRIMARY\\LOCALIZER), 3 't1_mprage_tra_MPR_sag' (DERIVED\\SECONDARY\\MPR)")


def test_a_cache_without_its_study_table_is_named(export: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    stale = export["base"] / "results" / "stale"
    shutil.copytree(export["cache"], stale)
    (stale / "studies.tsv").unlink()
    monkeypatch.chdir(export["base"])
    with pytest.raises(InputError, match=r"^results/stale/studies.tsv: missing; the DICOM cache predates it"):
        build({"source": "dicom", "root": "data/dicom"}, None, "results/stale")


def test_pydicom_mr_test_file_is_a_single_slice(tmp_path: Path) -> None:
    pydicom_data = pytest.importorskip("pydicom.data")
    src = Path(pydicom_data.get_testdata_file("MR_small.dcm"))
    data = tmp_path / "dicom"
    data.mkdir()
    (data / src.name).write_bytes(src.read_bytes())
    cache = convert(data, tmp_path / "results" / "dicom")
    out = tmp_path / "results" / "manifest.tsv"
    # the file is DERIVED\\SECONDARY\\OTHER: chosen only once no ImageType is skipped
    build({"source": "dicom", "root": str(data), "channels": ["T1w"], "dicom": {"series": {"T1w": "."}}}, out, cache)
    assert read_meta(out)["problems"][0]["detail"] == "no series matches T1w ('.'); skipped by ImageType (data.dicom.skip_image_types): 1 '' (DERIVED\\SECONDARY\\OTHER)"
    build({"source": "dicom", "root": str(data), "channels": ["T1w"], "dicom": {"series": {"T1w": "."}, "skip_image_types": []}}, out, cache)
    with pytest.raises(ValueError, match="no valid scan left"):
        validate(out, {}, tmp_path / "results" / "v.tsv", tmp_path / "results" / "valid.tsv")
    found = pd.read_csv(tmp_path / "results" / "v.tsv", sep="\t")
    assert list(found["check"]) == ["dimension"]
    assert found.iloc[0]["detail"] == "2-D image of shape (64, 64, 1); expected 3-D"

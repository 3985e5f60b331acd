"""End to end on DICOM as PACS and scanners write it (the issue's export): the tiny phantom written
with pydicom (tests/dicom_export.py) into nested PA/ST/SE/IM folders, oblique int16 slices with a
rescale slope and intercept, a localizer and an MPR reformat per study, patients with two studies
from two vendors whose StudyDate order is the opposite of their StudyInstanceUID order, and a label
table beside the export naming studies by StudyDate, StudyInstanceUID and ses-NN. The whole DAG
(tests/e2e/config_dicom.yaml) runs to results/summary.json; only the ambiguous study (two T1w
series) is left out, sessions follow the dates, every study keeps its label and class."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml

from dicom_export import SESSION_FORMS, Export, export_phantom

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "e2e" / "config_dicom.yaml"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory: pytest.TempPathFactory, workflow_copy: Callable[[Path], Path],
              run_snakemake: Callable[..., Any], run_command: Callable[..., Any]) -> tuple[Path, Export]:
    """The phantom as a DICOM export under data/ (the phantom itself removed) and the whole DAG on it."""
    workdir = workflow_copy(tmp_path_factory.mktemp("e2e-dicom") / "repo")
    (workdir / "config" / "e2e_dicom.yaml").write_text(CONFIG.read_text())
    cfg = yaml.safe_load(CONFIG.read_text())
    start = time.monotonic()
    proc = run_command(workdir, "mripipe", "phantom", "--out", "data/phantom", "--seed", str(cfg["seed"]),
                       "--workers", "2", "--params", json.dumps(cfg["phantom"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = export_phantom(workdir / "data" / "phantom", workdir / "data", seed=cfg["seed"])
    shutil.rmtree(workdir / "data" / "phantom")
    data_s = time.monotonic() - start
    proc = run_snakemake(workdir, "--keep-going", configfile="config/e2e_dicom.yaml")
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed\n{proc.stderr[-6000:]}\n{logs}")
    log.warning("dicom e2e: phantom + export %.0f s, DAG %.0f s", data_s, time.monotonic() - start - data_s)
    return workdir, export


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_the_export_is_what_the_issue_describes(dicom_run: tuple[Path, Export]) -> None:
    workdir, export = dicom_run
    forms = [s["form"] for s in export.studies if s["form"]]
    assert set(forms) == set(SESSION_FORMS) and len(forms) == 6  # three patients with two studies
    files = sorted(p for p in export.root.rglob("*") if p.is_file())
    assert {(p.relative_to(export.root).parts[0][:2], p.parent.name[:2], p.name[:2]) for p in files} == {("PA", "SE", "IM")}
    kinds = set()
    for path in files[::25]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 1
        assert float(ds.RescaleSlope) != 1 and float(ds.RescaleIntercept) != 0
        cosines = np.abs(np.array(ds.ImageOrientationPatient, float))
        assert ((cosines > 1e-3) & (cosines < 0.999)).any(), path  # oblique: no axis-aligned row or column
        kinds.add(ds.ImageType[-1])
    assert {"LOCALIZER", "MPR", "ND"} <= kinds
    studies = _read(workdir / "results" / "dicom" / "studies.tsv")
    vendors = studies.groupby("PatientID")["Manufacturer"].nunique()
    assert sorted(vendors[vendors > 1].index) == sorted({s["patient"] for s in export.studies if s["form"]})


def test_sessions_follow_the_study_date(dicom_run: tuple[Path, Export]) -> None:
    workdir, export = dicom_run
    manifest = _read(workdir / "results" / "manifest.tsv").set_index("scan")
    by_uid = {s["uid"]: s for s in export.studies}
    for patient in {s["patient"] for s in export.studies if s["form"]}:
        own = sorted((s for s in export.studies if s["patient"] == patient), key=lambda s: s["date"])
        assert own[0]["uid"] > own[1]["uid"]  # UID order is the opposite of date order
        sub = f"sub-{patient.replace('-', '')}"
        for k, study in enumerate(own):
            row = manifest.loc[f"{sub}_ses-{k + 1:02d}"]
            assert by_uid[Path(row["T1w"]).parent.name]["date"] == study["date"]
            assert Path(row["FLAIR"]).parent.name == study["uid"]


def test_every_study_keeps_its_label_and_class(dicom_run: tuple[Path, Export]) -> None:
    workdir, export = dicom_run
    manifest = _read(workdir / "results" / "manifest.tsv")
    labelled = manifest[manifest["scan"] != export.ambiguous]
    assert len(labelled) == len(export.studies) == 9
    # normalised relative paths: data/labels/..., never data/dicom/../labels/...
    assert sorted(labelled["label"]) == sorted(str(Path(s["label"]).relative_to(workdir)) for s in export.studies)
    assert labelled["class"].isin(["none", "low", "high"]).all()
    validation = _read(workdir / "results" / "validation.tsv")
    # no scan lost its label or class; the ambiguous study is named, and left out for that alone
    assert list(zip(validation["scan"], validation["check"], strict=True)) == [(export.ambiguous, "duplicate")]


def test_the_dag_reaches_the_summary_leaving_out_only_the_ambiguous_study(dicom_run: tuple[Path, Export]) -> None:
    workdir, export = dicom_run
    res = workdir / "results"
    summary = json.loads((res / "summary.json").read_text())
    assert {"lesion_seg", "burden_cls"} <= set(summary)
    assert list(summary["excluded"]["scans"]) == [export.ambiguous]
    ready = _read(res / "manifest.ready.tsv")
    assert len(ready) == 9

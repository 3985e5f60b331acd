"""DICOM adapter: series written from a phantom-like volume with SimpleITK (oblique, anisotropic)
are converted with dcm2niix into a cache outside the data folder, keep their geometry and
sidecars, and are assigned to channels by SeriesDescription; pydicom's shipped MR file is one
slice, which validation names as 2-D."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from mripipe.data.dicom import convert
from mripipe.data.manifest import build, read_meta
from mripipe.data.validate import validate


def _volume(seed: int) -> sitk.Image:
    """An ellipsoid 'head' with noise, oblique and anisotropic (1.5 x 1.2 x 3 mm)."""
    z, y, x = np.mgrid[:12, :20, :24]
    head = ((x - 12) / 10) ** 2 + ((y - 10) / 8) ** 2 + ((z - 6) / 5) ** 2 < 1
    arr = 400 * head + np.random.default_rng(seed).normal(50, 5, head.shape)
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing((1.5, 1.2, 3.0))
    img.SetOrigin((10.0, -20.0, 5.0))
    img.SetDirection(sitk.VersorTransform((0.1, 0.2, 0.3), 0.3).GetMatrix())
    return img


def write_series(img: sitk.Image, folder: Path, patient: str, study: str, series: str, desc: str, number: int) -> None:
    """One DICOM file per slice with the geometry tags (position, orientation, spacing)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    for i in range(img.GetDepth()):
        sl = img[:, :, i]
        tags = {"0010|0020": patient, "0010|0010": patient, "0020|000d": study, "0020|000e": series,
                "0008|103e": desc, "0018|1030": desc, "0020|0011": str(number), "0008|0060": "MR",
                "0008|0020": "20240101", "0008|0030": "120000", "0020|0037": orientation, "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
                "0008|0018": f"{series}.{i + 1}", "0020|0013": str(i + 1),
                "0020|0032": "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, i)))),
                "0018|0050": str(img.GetSpacing()[2]),
                "0028|0030": f"{img.GetSpacing()[1]}\\{img.GetSpacing()[0]}"}
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{i:04d}.dcm"))
        writer.Execute(sl)


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_dicom_series_to_channels_with_geometry(tmp_path: Path) -> None:
    data = tmp_path / "dicom"
    t1, flair = _volume(0), _volume(1)
    write_series(t1, data / "p1" / "s2", "P001", "1.2.3.4", "1.2.3.4.2", "T1 MPRAGE sag", 2)
    write_series(flair, data / "p1" / "s3", "P001", "1.2.3.4", "1.2.3.4.3", "AX FLAIR", 3)
    write_series(_volume(2), data / "p2" / "s2", "P002", "1.2.3.5", "1.2.3.5.2", "t1_mprage", 2)
    write_series(_volume(3), data / "p2" / "s3", "P002", "1.2.3.5", "1.2.3.5.3", "T1 post", 5)  # two T1 matches
    write_series(_volume(4), data / "p2" / "s4", "P002", "1.2.3.5", "1.2.3.5.4", "flair", 4)
    lab = sitk.Cast(t1 > 300, sitk.sitkUInt8)
    sitk.WriteImage(lab, str(tmp_path / "p1_mask.nii.gz"))
    (tmp_path / "labels.tsv").write_text("subject\tlesions\tclass\nP001\tp1_mask.nii.gz\tMS\n")
    before = _tree_hash(data)
    cache = convert(data, tmp_path / "results" / "dicom")
    assert _tree_hash(data) == before  # the data folder is only read
    assert len(list(cache.rglob("*.json"))) == 5  # sidecars kept
    out = tmp_path / "results" / "manifest.tsv"
    params = {"source": "dicom", "root": str(tmp_path), "dicom": {"table": "labels.tsv"}}
    table = build(params, out, cache)
    assert list(table["scan"]) == ["sub-P001", "sub-P002"]
    row = table.iloc[0]
    assert Path(row["T1w"]).name == "2_T1_MPRAGE_sag.nii.gz" and Path(row["FLAIR"]).name == "3_AX_FLAIR.nii.gz"
    assert row["class"] == "MS" and row["label"] == str(tmp_path / "p1_mask.nii.gz")
    assert "T1w=" in row["source"] and row["source"].count(".json") == 2
    assert [(p["scan"], p["check"]) for p in read_meta(out)["problems"]] == [("sub-P002", "duplicate")]
    converted = sitk.ReadImage(row["T1w"])  # same voxels at the same physical points
    back = sitk.Resample(converted, t1, sitk.Transform(), sitk.sitkNearestNeighbor)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(t1))
    found = validate(out, params, tmp_path / "results" / "v.tsv", tmp_path / "results" / "valid.tsv")
    assert list(found["check"]) == ["duplicate"]  # the label is on the converted T1w's grid


def test_pydicom_mr_test_file_is_a_single_slice(tmp_path: Path) -> None:
    pydicom_data = pytest.importorskip("pydicom.data")
    src = Path(pydicom_data.get_testdata_file("MR_small.dcm"))
    data = tmp_path / "dicom"
    data.mkdir()
    (data / src.name).write_bytes(src.read_bytes())
    cache = convert(data, tmp_path / "results" / "dicom")
    out = tmp_path / "results" / "manifest.tsv"
    build({"source": "dicom", "root": str(data), "channels": ["T1w"], "dicom": {"series": {"T1w": "."}}}, out, cache)
    with pytest.raises(ValueError, match="no valid scan left"):
        validate(out, {}, tmp_path / "results" / "v.tsv", tmp_path / "results" / "valid.tsv")
    found = pd.read_csv(tmp_path / "results" / "v.tsv", sep="\t")
    assert list(found["check"]) == ["dimension"]
    assert found.iloc[0]["detail"] == "2-D image of shape (64, 64, 1); expected 3-D"

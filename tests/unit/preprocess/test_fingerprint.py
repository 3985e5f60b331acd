"""Target spacing: nnU-Net's rule on crafted spacings, RAS axis order from headers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from mripipe.preprocess.fingerprint import compute_fingerprint, nnunet_target_spacing, ras_spacing


def _image(path: Path, spacing: tuple[float, float, float], orient: str = "LPS") -> Path:
    img = sitk.Image([8, 9, 10], sitk.sitkInt16)
    img.SetSpacing(spacing)
    sitk.WriteImage(sitk.DICOMOrient(img, orient), str(path))
    return path


def test_nnunet_rule_hand_computed() -> None:
    # median (1, 1, 5); 5 > 3 * 1 -> z takes the 10th percentile of (5, 5, 3): 3 + 0.2 * 2 = 3.4
    target, axis = nnunet_target_spacing(np.array([[1, 1, 5], [1, 1, 5], [1, 1, 3]], float))
    np.testing.assert_allclose(target, [1.0, 1.0, 3.4])
    assert axis == 2
    # (1.5, 1.5, 3): 3 is not more than 3 x 1.5 -> plain median
    target, axis = nnunet_target_spacing(np.array([[1.5, 1.5, 3.0], [1.5, 1.5, 1.5]], float))
    np.testing.assert_allclose(target, [1.5, 1.5, 2.25])
    assert axis is None
    # the 10th percentile never goes below the other axes: (0.5, 0.5, 4) x 9 + (0.5, 0.5, 0.4)
    sp = np.array([[0.5, 0.5, 4.0]] * 9 + [[0.5, 0.5, 0.4]])
    target, axis = nnunet_target_spacing(sp)
    assert axis == 2 and target[2] == pytest.approx(3.64)


def test_ras_spacing_follows_the_orientation(tmp_path: Path) -> None:
    # voxel spacing (1, 2, 3) on LPS axes; a PIR copy stores the axes permuted (P, I, R)
    path = _image(tmp_path / "a.nii.gz", (1.0, 2.0, 3.0), "PIR")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    assert reader.GetSpacing() == (2.0, 3.0, 1.0)
    assert ras_spacing(path) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="missing.nii.gz"):
        ras_spacing(tmp_path / "missing.nii.gz")


def test_compute_fingerprint_config_and_auto(tmp_path: Path) -> None:
    rows = []
    for i, z in enumerate([5.0, 5.0, 3.0]):
        t1 = _image(tmp_path / f"t1_{i}.nii.gz", (1.0, 1.0, z), "RAS")
        fl = _image(tmp_path / f"fl_{i}.nii.gz", (2.0, 2.0, 2.0))
        rows.append(
            {
                "subject": f"sub-00{i}",
                "session": "ses-01",
                "scan": f"sub-00{i}_ses-01",
                "T1w": str(t1),
                "FLAIR": str(fl),
                "label": "",
                "class": "",
                "truth": "",
            }
        )
    manifest = tmp_path / "manifest.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    auto = compute_fingerprint(manifest, {"spacing": "auto"})
    assert auto["source"] == "auto" and auto["reference_channel"] == "T1w"
    np.testing.assert_allclose(auto["target_spacing"], [1.0, 1.0, 3.4])
    assert auto["spacings"]["sub-000_ses-01"]["FLAIR"] == [2.0, 2.0, 2.0]
    fixed = compute_fingerprint(manifest, {"spacing": [2, 2, 2]})
    assert fixed["source"] == "config" and fixed["target_spacing"] == [2.0, 2.0, 2.0]


def test_unreadable_scan_is_left_out_not_fatal(tmp_path: Path) -> None:
    """One corrupt scan must not stop the fingerprint (and with it every other scan's job)."""
    good = tmp_path / "good.nii.gz"
    img = sitk.Image(8, 8, 4, sitk.sitkFloat32)
    img.SetSpacing((1.0, 1.0, 3.0))
    sitk.WriteImage(img, str(good))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"garbage")
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(
        "subject\tsession\tscan\tT1w\tlabel\tclass\ttruth\n"
        f"sub-1\tses-1\tsub-1_ses-1\t{good}\t\t\t\n"
        f"sub-2\tses-1\tsub-2_ses-1\t{bad}\t\t\t\n"
    )
    fp = compute_fingerprint(manifest, {"spacing": "auto"})
    assert fp["unreadable"] == [str(bad)]
    assert fp["auto_spacing"] == [1.0, 1.0, 3.0]

"""The native-space path (register and skull_strip off): reorient, crop to the foreground,
resample, normalise; and the round trip back to the raw grid through transform.tfm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mripipe.core.errors import InputError
from mripipe.core.imageio import read_image, to_array
from mripipe.preprocess import native
from mripipe.preprocess.pipeline import preprocess_scan

NATIVE = {"register": False, "skull_strip": False, "coregister": False, "n4": False, "denoise": "none"}
SIZE = (24, 28, 12)
SPACING = (1.0, 1.25, 2.5)  # anisotropic, like a prostate T2
BOX = (slice(4, 19), slice(6, 22), slice(2, 10))  # the non-zero region (15 x 16 x 8 voxels)


def _image(arr: np.ndarray, path: Path) -> Path:
    """Write an (X, Y, Z) array on a grid with the identity direction (ITK's "LPS", which the
    pipeline's reorientation to "RAS" flips along x and y)."""
    img = sitk.GetImageFromArray(arr.transpose(2, 1, 0))
    img.SetSpacing(SPACING)
    img.SetOrigin((30.0, 40.0, -12.0))
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture()
def scan(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    t2 = np.zeros(SIZE, np.float32)
    t2[BOX] = rng.normal(300.0, 40.0, t2[BOX].shape)
    adc = np.zeros(SIZE, np.float32)
    adc[BOX] = rng.normal(1200.0, 100.0, adc[BOX].shape)
    lab = np.zeros(SIZE, np.uint8)
    lab[8:12, 9:14, 3:7] = 1  # "PZ"
    lab[12:16, 12:18, 4:8] = 2  # "TZ"
    return {"T2": _image(t2, tmp_path / "t2.nii.gz"), "ADC": _image(adc, tmp_path / "adc.nii.gz"),
            "label": _image(lab, tmp_path / "label.nii.gz")}


def test_native_path_crops_to_the_foreground_in_ras(scan: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "case01"
    qc = preprocess_scan({"T2": scan["T2"], "ADC": scan["ADC"]}, scan["label"], out, NATIVE, list(SPACING))
    assert qc["space"] == "native"
    ras = sitk.DICOMOrient(read_image(scan["T2"]), "RAS")  # the pipeline's reorientation
    assert ras.GetDirection() != read_image(scan["T2"]).GetDirection()  # it does reorient
    nz = np.nonzero(to_array(ras))
    assert qc["crop"] == {"start": [int(i.min()) for i in nz], "size": [15, 16, 8], "full": list(SIZE)}
    img = read_image(out / "image.nii.gz")
    assert img.GetSize() == (15, 16, 8) and img.GetNumberOfComponentsPerPixel() == 2
    np.testing.assert_allclose(img.GetDirection(), ras.GetDirection())
    np.testing.assert_allclose(img.GetSpacing(), SPACING)
    arr = to_array(img)
    fg = to_array(read_image(out / "brainmask.nii.gz")) > 0
    assert fg.all()  # the crop is exactly the non-zero box
    for c in range(2):  # z-scored on the foreground
        assert abs(arr[c].mean()) < 1e-4 and abs(arr[c].std() - 1) < 1e-4
    tx = sitk.ReadTransform(str(out / "transform.tfm"))
    assert tx.TransformPoint((1.0, 2.0, 3.0)) == pytest.approx((1.0, 2.0, 3.0))
    assert qc["label_ids"] == [1, 2]


def test_label_round_trip_back_to_native_is_exact(scan: dict[str, Path], tmp_path: Path) -> None:
    """preprocess -> the label mapped back the way predict maps probabilities -> the original."""
    from mripipe.infer.apply import to_native

    out = tmp_path / "case01"
    preprocess_scan({"T2": scan["T2"], "ADC": scan["ADC"]}, scan["label"], out, NATIVE, list(SPACING))
    label = sitk.Cast(read_image(out / "label.nii.gz"), sitk.sitkFloat32)
    back = to_native(label, out / "transform.tfm", scan["T2"])
    original = read_image(scan["label"])
    assert back.GetSize() == original.GetSize()
    np.testing.assert_allclose(back.GetDirection(), original.GetDirection())
    np.testing.assert_array_equal(np.rint(to_array(back)).astype(np.uint8), to_array(original))


def test_a_label_with_permuted_axes_gives_the_same_outputs(scan: dict[str, Path], tmp_path: Path) -> None:
    """The label read by core.imageio.read_label (the reader evaluation uses too): written with its
    axes permuted and flipped it preprocesses to the same label.nii.gz; a voxel off is refused."""
    preprocess_scan({"T2": scan["T2"]}, scan["label"], tmp_path / "plain", NATIVE, list(SPACING))
    permuted = tmp_path / "permuted.nii.gz"
    sitk.WriteImage(sitk.DICOMOrient(read_image(scan["label"]), "SPR"), str(permuted))
    qc = preprocess_scan({"T2": scan["T2"]}, permuted, tmp_path / "moved", NATIVE, list(SPACING))
    plain = to_array(read_image(tmp_path / "plain" / "label.nii.gz"))
    np.testing.assert_array_equal(to_array(read_image(tmp_path / "moved" / "label.nii.gz")), plain)
    assert qc["label_ids"] == [1, 2] and qc["label_voxels"] == int((plain > 0).sum()) > 0
    shifted = read_image(scan["label"])
    shifted.SetOrigin(tuple(o + s for o, s in zip(shifted.GetOrigin(), SPACING, strict=True)))
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii.gz"))
    with pytest.raises(InputError, match=r"shifted\.nii\.gz: not on the grid of .*t2\.nii\.gz \(origin shifted"):
        preprocess_scan({"T2": scan["T2"]}, tmp_path / "shifted.nii.gz", tmp_path / "x", NATIVE, list(SPACING))


def test_coarser_spacing_keeps_the_physical_extent(scan: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "case01"
    preprocess_scan({"T2": scan["T2"]}, scan["label"], out, NATIVE, [2.0, 2.5, 2.5])
    img = read_image(out / "image.nii.gz")
    assert img.GetSize() == (8, 8, 8)  # round(15 * 1 / 2), round(16 * 1.25 / 2.5), 8
    ref = sitk.DICOMOrient(read_image(scan["T2"]), "RAS")
    start = [int(i.min()) for i in np.nonzero(to_array(ref))]
    # the outer corner of the box's first voxel is kept (the directions agree: corner = origin - d/2)
    corner = np.array(ref.TransformContinuousIndexToPhysicalPoint([i - 0.5 for i in start]))
    half = np.array(img.GetDirection()).reshape(3, 3) @ (np.array(img.GetSpacing()) / 2)
    np.testing.assert_allclose(np.array(img.GetOrigin()) - half, corner)


def test_crop_none_keeps_the_field_of_view(scan: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "case01"
    qc = preprocess_scan({"T2": scan["T2"]}, None, out, {**NATIVE, "crop": "none", "normalise": False},
                         list(SPACING))
    assert qc["crop"]["size"] == list(SIZE)
    arr = to_array(read_image(out / "image.nii.gz"))
    assert arr.max() > 100  # not normalised


def test_normalise_modes() -> None:
    stack = np.array([[[[0.0, 10.0], [20.0, 30.0]]]], np.float32)  # (1, 1, 2, 2)
    mask = np.array([[[False, True], [True, True]]])
    p = {"normalise": "zscore_image", "skull_strip": False, "ct_window": [-160.0, 240.0]}
    out = native.normalise(stack.copy(), mask, p, native=True)
    np.testing.assert_allclose(out.ravel(), (np.array([0, 10, 20, 30]) - 15) / np.std([0, 10, 20, 30]), rtol=1e-6)
    out = native.normalise(stack.copy(), mask, {**p, "normalise": "zscore_foreground"}, native=True)
    np.testing.assert_allclose(out.ravel(), [0.0, -np.sqrt(1.5), 0.0, np.sqrt(1.5)], rtol=1e-6)
    ct = np.array([[[[-1000.0, 40.0], [240.0, 3000.0]]]], np.float32)
    out = native.normalise(ct, mask, {**p, "normalise": "ct_clip"}, native=True)
    np.testing.assert_allclose(out.ravel(), [-1.0, 0.0, 1.0, 1.0])
    assert native.normalise(stack.copy(), mask, {**p, "normalise": False}, native=True).max() == 30.0


def test_unknown_normalise_is_named(scan: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="normalise"):
        preprocess_scan({"T2": scan["T2"]}, None, tmp_path / "x", {**NATIVE, "normalise": "minmax"}, [2.0] * 3)

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mripipe.core.imageio import (
    ImageError,
    from_array,
    read_image,
    read_preprocessed,
    to_array,
    write_image,
)


def test_roundtrip_keeps_axes_and_geometry(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (X, Y, Z)
    ref = sitk.Image(2, 3, 4, sitk.sitkFloat32)
    ref.SetSpacing((1.0, 2.0, 3.0))
    ref.SetOrigin((5.0, 6.0, 7.0))
    img = from_array(arr, ref)
    assert img.GetSize() == (2, 3, 4)
    # voxel (x=1, y=2, z=3) is arr[1, 2, 3]
    assert img.GetPixel(1, 2, 3) == arr[1, 2, 3]
    write_image(img, tmp_path / "a.nii.gz")
    back = read_image(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(to_array(back), arr)
    assert back.GetSpacing() == (1.0, 2.0, 3.0)


def test_vector_image_roundtrip(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).random((2, 3, 4, 5)).astype(np.float32)  # (C, X, Y, Z)
    img = from_array(arr)
    assert img.GetNumberOfComponentsPerPixel() == 2 and img.GetSize() == (3, 4, 5)
    write_image(img, tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(to_array(read_image(tmp_path / "v.nii.gz")), arr)


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="nothere.nii.gz: file not found"):
        read_image(tmp_path / "nothere.nii.gz")
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="broken.nii.gz: cannot be read"):
        read_image(bad)


def _scan_folder(folder: Path, image: np.ndarray, label: np.ndarray, mask: np.ndarray) -> Path:
    ref = sitk.Image([5, 6, 4], sitk.sitkFloat32)
    ref.SetSpacing((2.0, 2.0, 3.0))
    ref.SetOrigin((1.0, -2.0, 3.0))
    write_image(from_array(image, ref), folder / "image.nii.gz")
    write_image(from_array(label, ref), folder / "label.nii.gz")
    write_image(from_array(mask, ref), folder / "brainmask.nii.gz")
    return folder


def test_read_preprocessed_gives_the_arrays_as_written(tmp_path: Path) -> None:
    gen = np.random.default_rng(0)
    image = gen.normal(size=(2, 5, 6, 4)).astype(np.float32)
    label = np.zeros((5, 6, 4), np.uint16)
    label[1:3, 2:4, 1] = 3  # lesion instance 3 keeps its id
    mask = np.zeros((5, 6, 4), np.uint8)
    mask[1:4, 1:5, 1:3] = 1
    scan = read_preprocessed(_scan_folder(tmp_path, image, label, mask))
    assert scan.image.dtype == np.float32 and np.array_equal(scan.image, image)
    assert np.array_equal(scan.label, label) and np.array_equal(scan.brainmask, mask)
    assert scan.reference.GetSpacing() == (2.0, 2.0, 3.0) and scan.reference.GetOrigin() == (1.0, -2.0, 3.0)
    # one channel stored as a 3-D image still comes back as (C, X, Y, Z)
    single = read_preprocessed(_scan_folder(tmp_path / "one", image[0], label, mask))
    assert single.image.shape == (1, 5, 6, 4) and np.array_equal(single.image[0], image[0])
    # without the label, its file is not needed
    (tmp_path / "one" / "label.nii.gz").unlink()
    assert read_preprocessed(tmp_path / "one", label=False).label is None
    with pytest.raises(ImageError, match=r"label.nii.gz: file not found"):
        read_preprocessed(tmp_path / "one")


def test_read_preprocessed_rejects_a_mask_off_grid_or_empty(tmp_path: Path) -> None:
    image = np.ones((2, 5, 6, 4), np.float32)
    label = np.zeros((5, 6, 4), np.uint16)
    folder = _scan_folder(tmp_path, image, label, np.zeros((5, 6, 4), np.uint8))
    with pytest.raises(ImageError, match=rf"^{folder / 'brainmask.nii.gz'}: empty brain mask"):
        read_preprocessed(folder)
    write_image(from_array(np.ones((5, 6, 3), np.uint8)), folder / "brainmask.nii.gz")
    with pytest.raises(ImageError, match=rf"^{folder / 'brainmask.nii.gz'}: shape \(5, 6, 3\) differs"):
        read_preprocessed(folder, label=False)

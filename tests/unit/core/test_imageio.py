from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mripipe.core.imageio import ImageError, from_array, read_image, to_array, write_image


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

"""Image I/O with SimpleITK: reading with clear errors, atomic writing, numpy conversion."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mripipe.utils import atomic_path

log = logging.getLogger(__name__)


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and the problem."""


def read_image(path: str | Path) -> sitk.Image:
    """Read a NIfTI/MHA/NRRD image, raising :class:`ImageError` naming the file on failure."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise ImageError(f"{path}: cannot be read as an image ({first})") from None
    if img.GetDimension() not in (3, 4):
        raise ImageError(f"{path}: expected a 3-D or 4-D image, got {img.GetDimension()}-D")
    if any(s <= 0 for s in img.GetSize()):
        raise ImageError(f"{path}: empty image of size {img.GetSize()}")
    return img


def write_image(img: sitk.Image, path: str | Path, compress: bool = True) -> None:
    """Write an image atomically (temporary name, then rename)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), compress)


def to_array(img: sitk.Image) -> np.ndarray:
    """SimpleITK image -> numpy array in (X, Y, Z) order (or (C, X, Y, Z) for vector images)."""
    arr = sitk.GetArrayFromImage(img)  # (Z, Y, X) or (Z, Y, X, C)
    if img.GetNumberOfComponentsPerPixel() > 1:
        return np.ascontiguousarray(np.moveaxis(arr, -1, 0).transpose(0, 3, 2, 1))
    return np.ascontiguousarray(arr.transpose(2, 1, 0))


def from_array(arr: np.ndarray, reference: sitk.Image | None = None) -> sitk.Image:
    """numpy (X, Y, Z) or (C, X, Y, Z) array -> SimpleITK image, copying geometry from ``reference``."""
    if arr.ndim == 4:
        img = sitk.GetImageFromArray(np.moveaxis(arr.transpose(0, 3, 2, 1), 0, -1), isVector=True)
    else:
        img = sitk.GetImageFromArray(arr.transpose(2, 1, 0))
    if reference is not None:
        img.SetOrigin(reference.GetOrigin())
        img.SetSpacing(reference.GetSpacing())
        img.SetDirection(reference.GetDirection())
    return img

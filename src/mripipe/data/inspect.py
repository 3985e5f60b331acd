"""Open one image file once, decompressing all of it, and report what is wrong with it.

NIfTI files are read with nibabel, not SimpleITK: ITK silently orthogonalises a sheared
direction matrix and can return zeros for a truncated ``.nii.gz``; nibabel keeps the header's
affine as written and raises on a short gzip stream. Other formats (MHA, NRRD) go through
SimpleITK. Geometry is returned as a RAS affine either way.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class FileInfo:
    """What validation needs of one file (``issues``: (check, detail) pairs, empty when fine).

    Attributes:
        shape: spatial size (X, Y, Z); volumes: 1, or the 4th dimension of a 4-D file.
        affine: 4x4 voxel -> RAS mm.
        values: the distinct values (label maps only, else None).
    """

    path: Path
    shape: tuple[int, ...] = ()
    volumes: int = 1
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    values: np.ndarray | None = None
    issues: list[tuple[str, str]] = field(default_factory=list)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each index axis."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def ok(self) -> bool:
        return not self.issues


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    img: Any = nib.load(str(path))  # a NIfTI-1 or -2 image (FileBasedImage to the stubs)
    dtype = img.header.get_data_dtype()
    data = np.asanyarray(img.dataobj)  # decompresses the whole file
    return data, np.asarray(img.affine, dtype=float), dtype


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    img = sitk.ReadImage(str(path))
    n = img.GetDimension()
    direction = np.array(img.GetDirection()).reshape(n, n)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(img.GetSpacing()[:3])
    affine[:3, 3] = img.GetOrigin()[:3]
    arr = sitk.GetArrayFromImage(img)  # (Z, Y, X[, C]) or (T, Z, Y, X)
    comps = img.GetNumberOfComponentsPerPixel()
    if comps > 1:
        return arr, _LPS_TO_RAS @ affine, np.dtype([("c", arr.dtype, (comps,))])
    data = arr.transpose(tuple(reversed(range(arr.ndim))))
    dtype = arr.dtype
    return data, _LPS_TO_RAS @ affine, dtype


def _geometry(info: FileInfo, data: np.ndarray, expected_volumes: int) -> bool:
    """Dimension checks; fills shape/volumes. False when the data cannot be checked further."""
    shape = tuple(int(s) for s in data.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    spatial = sum(1 for n in shape[:3] if n > 1)
    if len(shape) < 3 or spatial < 3:
        info.issues.append(("dimension", f"{min(len(shape), spatial)}-D image of shape {shape}; expected 3-D"))
        return False
    if len(shape) > 4 or (len(shape) == 4 and expected_volumes == 1):
        info.issues.append(("dimension", f"{len(shape)}-D image of shape {shape}; expected 3-D"))
        return False
    info.shape, info.volumes = shape[:3], (shape[3] if len(shape) == 4 else 1)
    if expected_volumes > 1 and info.volumes != expected_volumes:
        info.issues.append(("dimension", f"{info.volumes} volume(s) of shape {shape} but named by {expected_volumes} channels"))
        return False
    return True


def _direction(info: FileInfo) -> None:
    spacing = info.spacing
    if np.any(spacing <= 0) or not np.all(np.isfinite(info.affine)):
        info.issues.append(("direction", f"degenerate voxel-to-world matrix {info.affine[:3, :3].round(4).tolist()}"))
        return
    d = info.affine[:3, :3] / spacing
    err = float(np.abs(d.T @ d - np.eye(3)).max())
    if err > 1e-3:
        info.issues.append(("direction", f"direction matrix is not orthonormal (shear; max |D'D - I| = {err:.3g}): {d.round(4).tolist()}"))


def inspect_file(path: str | Path, expected_volumes: int = 1, label: bool = False) -> FileInfo:
    """Open ``path`` once and run every file-level check on it.

    Args:
        path: an image or label file.
        expected_volumes: 1 for a 3-D file; n for a 4-D file named by n channels (MSD).
        label: a label map (values are collected; the constant check does not apply).

    Returns:
        The file's geometry and the (check, detail) pairs of everything wrong with it: missing,
        readable, dimension, pixel_type, direction, finite, constant.
    """
    info = FileInfo(Path(path))
    if not info.path.is_file():
        info.issues.append(("missing", "file not found"))
        return info
    nifti = info.path.name.endswith((".nii", ".nii.gz"))
    try:
        data, info.affine, dtype = (_read_nifti if nifti else _read_itk)(info.path)
    except (OSError, EOFError, ValueError, RuntimeError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        info.issues.append(("readable", f"cannot be read in full ({type(exc).__name__}: {first[:200]})"))
        return info
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
        info.issues.append(("pixel_type", f"pixel type {dtype} is not a real scalar (RGB, vector or complex image)"))
        return info
    if not _geometry(info, data, expected_volumes):
        return info
    _direction(info)
    _values(info, data, label)
    return info


def _values(info: FileInfo, data: np.ndarray, label: bool) -> None:
    """finite and constant checks; the distinct values of a label map."""
    if data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            info.issues.append(("finite", f"{bad} voxel(s) are NaN or infinite"))
            return
    if label:
        info.values = np.unique(data)
        return
    vols = data.reshape(*info.shape, info.volumes)
    for k in range(info.volumes):
        lo, hi = float(vols[..., k].min()), float(vols[..., k].max())
        if lo == hi:
            where = f"volume {k} " if info.volumes > 1 else ""
            info.issues.append(("constant", f"{where}every voxel is {lo:g}"))

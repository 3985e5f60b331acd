"""One image file's header, read without decompressing a voxel: dimensions, data type, geometry
(both NIfTI transforms) and the bytes it promises against those present, with the checks a header
alone decides: link, missing, readable, truncated, pixel_type, dimension, direction, xform.

NIfTI headers are read with nibabel, not SimpleITK: ITK silently orthogonalises a sheared
direction matrix and chooses between qform and sform by rules of its own (the sform when its
code is 1, else the qform), while nibabel keeps what is written. Other formats (MHA, NRRD) go
through SimpleITK's ``ReadImageInformation``. Geometry is a RAS affine either way.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np
import SimpleITK as sitk

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ITK_DTYPES = {sitk.sitkUInt8: np.uint8, sitk.sitkInt8: np.int8, sitk.sitkUInt16: np.uint16,
               sitk.sitkInt16: np.int16, sitk.sitkUInt32: np.uint32, sitk.sitkInt32: np.int32,
               sitk.sitkUInt64: np.uint64, sitk.sitkInt64: np.int64, sitk.sitkFloat32: np.float32,
               sitk.sitkFloat64: np.float64, sitk.sitkComplexFloat32: np.complex64,
               sitk.sitkComplexFloat64: np.complex128}


class Issue(NamedTuple):
    """One thing wrong with a file: a check name, a one-line detail, error or warning."""

    check: str
    detail: str
    severity: str = "error"


@dataclass
class Header:
    """What a header says of its file (nothing decompressed).

    Attributes:
        dims: every dimension as stored (X, Y, Z[, T]), trailing singleton axes beyond 3 dropped.
        dtype: the stored voxel type (byte order included).
        affine: 4x4 voxel -> RAS mm (the transform ``data.xform`` chooses).
        offset: NIfTI: the byte offset of the voxel data in the (decompressed) file.
        scaling: NIfTI: (slope, intercept) applied to stored values, None when there is none.
        nifti: read from the file's bytes (NIfTI), else through SimpleITK.
        compressed: a gzip-compressed file.
        components: values per voxel (ITK vector images; 1 otherwise).
    """

    path: Path
    dims: tuple[int, ...] = ()
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    offset: int = 0
    scaling: tuple[float, float] | None = None
    nifti: bool = True
    compressed: bool = False
    components: int = 1
    issues: list[Issue] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        """The spatial size (X, Y, Z)."""
        return self.dims[:3]

    @property
    def volumes(self) -> int:
        return self.dims[3] if len(self.dims) > 3 else 1

    @property
    def voxels(self) -> int:
        """Every voxel of every volume."""
        return int(np.prod(self.dims, dtype=np.int64)) if self.dims else 0

    @property
    def data_bytes(self) -> int:
        """The decompressed size of the voxel data."""
        return self.voxels * self.components * self.dtype.itemsize

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each index axis."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def fov_mm(self) -> np.ndarray:
        """The field of view in mm along each index axis."""
        return self.spacing * np.array(self.shape + (1,) * (3 - len(self.shape)), dtype=float)

    @property
    def ok(self) -> bool:
        """No error so far (warnings allowed)."""
        return not any(i.severity == "error" for i in self.issues)


def corners(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """The 8 outer voxel corners of a grid of ``shape`` in world mm (8 x 3)."""
    idx = np.array([[i, j, k, 1.0] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                    for k in (-0.5, shape[2] - 0.5)])
    return (affine @ idx.T).T[:, :3]


def _link_issue(path: Path) -> Issue | None:
    """A broken symbolic link or a loop of links, told as such (a plain absence is ``missing``)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Issue("link", "symbolic link loop: the path never reaches a file")
        if path.is_symlink():
            return Issue("link", f"broken symbolic link to {os.readlink(path)} (target not found)")
        return Issue("missing", "file not found")
    return None if path.is_file() else Issue("missing", "not a file")


def _nifti(header: Header) -> Any:
    """Fill ``header`` from a NIfTI file's header; the nibabel header (for the transforms)."""
    img: Any = nib.load(str(header.path))  # lazy: only the header is read (and decompressed)
    hdr = img.header
    header.dims = tuple(int(n) for n in hdr.get_data_shape())
    header.dtype = hdr.get_data_dtype()
    header.affine = np.asarray(img.affine, dtype=float)
    proxy = img.dataobj  # where the voxels start and how they scale, as nibabel resolved them
    header.offset = int(proxy.offset)
    if float(proxy.slope) != 1 or float(proxy.inter) != 0:
        header.scaling = (float(proxy.slope), float(proxy.inter))
    header.compressed = header.path.name.endswith(".gz")
    return hdr


def _itk(header: Header) -> None:
    """Fill ``header`` from an MHA/NRRD header (SimpleITK reads no voxel)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(header.path))
    reader.ReadImageInformation()
    n = reader.GetDimension()
    size = reader.GetSize()
    direction = np.array(reader.GetDirection()).reshape(n, n)[:3, :3] if n >= 3 else np.eye(3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array((tuple(reader.GetSpacing()) + (1.0,) * 3)[:3])
    affine[:3, 3] = (tuple(reader.GetOrigin()) + (0.0,) * 3)[:3]
    header.dims, header.affine, header.nifti = tuple(int(s) for s in size), _LPS_TO_RAS @ affine, False
    header.components = int(reader.GetNumberOfComponents())
    header.dtype = np.dtype(_ITK_DTYPES.get(reader.GetPixelID(), "V8"))  # V8: a vector or label type


def read_header(path: str | Path, expected_volumes: int = 1, xform: str = "error",
                xform_tolerance_mm: float = 0.1) -> Header:
    """Read ``path``'s header and run every check the header alone decides.

    Args:
        path: an image or label file.
        expected_volumes: 1 for a 3-D file; n for a 4-D file named by n channels (MSD).
        xform: ``data.xform``: what a qform/sform disagreement does (error, or use one and warn).
        xform_tolerance_mm: the largest corner displacement between the two transforms tolerated.

    Returns:
        The header, with its issues: link, missing, readable, truncated, pixel_type, dimension,
        direction, xform.
    """
    header = Header(Path(path))
    issue = _link_issue(header.path)
    if issue is not None:
        header.issues.append(issue)
        return header
    nifti = None
    try:
        if header.path.name.endswith((".nii", ".nii.gz")):
            nifti = _nifti(header)
        else:
            _itk(header)
    except (OSError, EOFError, ValueError, RuntimeError, nib.filebasedimages.ImageFileError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        header.issues.append(Issue("readable", f"header cannot be read ({type(exc).__name__}: {first[:200]})"))
        return header
    if not _pixel_type(header) or not _dimensions(header, expected_volumes):
        return header
    _truncated(header)
    if nifti is not None:
        _xform(header, nifti, xform, xform_tolerance_mm)
    _direction(header)
    return header


def _pixel_type(header: Header) -> bool:
    dtype = header.dtype
    if header.components > 1 or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
        what = f"{header.components}-component vector" if header.components > 1 else str(dtype)
        header.issues.append(Issue("pixel_type", f"pixel type {what} is not a real scalar (RGB, vector or complex image)"))
        return False
    return True


def _dimensions(header: Header, expected_volumes: int) -> bool:
    """Dimension checks (trailing singleton axes beyond 3 dropped). False: not checkable further."""
    shape = header.dims
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    header.dims = shape
    spatial = sum(1 for n in shape[:3] if n > 1)
    if len(shape) < 3 or spatial < 3:
        header.issues.append(Issue("dimension", f"{min(len(shape), spatial)}-D image of shape {shape}; expected 3-D"))
        return False
    if len(shape) > 4 or (len(shape) == 4 and expected_volumes == 1):
        header.issues.append(Issue("dimension", f"{len(shape)}-D image of shape {shape}; expected 3-D"))
        return False
    if expected_volumes > 1 and header.volumes != expected_volumes:
        header.issues.append(Issue("dimension", f"{header.volumes} volume(s) of shape {shape} but named by {expected_volumes} channels"))
        return False
    return True


def _truncated(header: Header) -> None:
    """An uncompressed NIfTI shorter than its header promises (a gzip's length is known only by
    decompressing it: :mod:`mripipe.data.voxels` tells that one)."""
    if not header.nifti or header.compressed:
        return
    promised = header.offset + header.data_bytes
    present = header.path.stat().st_size
    if present < promised:
        header.issues.append(Issue("truncated", f"the header promises {promised:,} bytes ({header.offset:,} header + "
                                                f"{header.data_bytes:,} voxel data: {'x'.join(map(str, header.dims))} "
                                                f"{header.dtype.name}); the file has {present:,}"))


def _xform(header: Header, nifti: Any, choice: str, tolerance: float) -> None:
    """qform and sform both set and disagreeing: an error, or the chosen one used with a warning."""
    qform, qcode = nifti.get_qform(coded=True)
    sform, scode = nifti.get_sform(coded=True)
    if qform is None or sform is None or not qcode or not scode:
        return
    gap = float(np.linalg.norm(corners(header.shape, qform) - corners(header.shape, sform), axis=1).max())
    if gap <= tolerance:
        return
    where = f"qform (code {int(qcode)}) and sform (code {int(scode)}) place the voxel corners up to {gap:.3g} mm apart"
    if choice == "error":
        header.issues.append(Issue("xform", f"{where}; readers disagree on which to use: set data.xform to sform or qform"))
        return
    header.affine = np.asarray(qform if choice == "qform" else sform, dtype=float)
    header.issues.append(Issue("xform", f"{where}; the {choice} is used (data.xform)", "warning"))


def _direction(header: Header) -> None:
    spacing = header.spacing
    if np.any(spacing <= 0) or not np.all(np.isfinite(header.affine)):
        header.issues.append(Issue("direction", f"degenerate voxel-to-world matrix {header.affine[:3, :3].round(4).tolist()}"))
        return
    d = header.affine[:3, :3] / spacing
    err = float(np.abs(d.T @ d - np.eye(3)).max())
    if err > 1e-3:
        header.issues.append(Issue("direction", f"direction matrix is not orthonormal (shear; max |D'D - I| = {err:.3g}): {d.round(4).tolist()}"))

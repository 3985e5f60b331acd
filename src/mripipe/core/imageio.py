"""Image I/O with SimpleITK: reading with clear errors, atomic writing, numpy conversion, a
scan's channels (3-D files or one 4-D file, MSD style), the one reader of a raw label map (onto
its image's voxel grid: :func:`read_label`) and the one reader of a preprocessed scan folder
(image, label, brain mask)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Generic, Literal, NamedTuple, TypeVar, overload

import numpy as np
import SimpleITK as sitk

from mripipe.core.errors import InputError
from mripipe.core.grid import AxisOrder, Grid, LabelGrid, match_grid
from mripipe.core.utils import atomic_path

log = logging.getLogger(__name__)


class ImageError(InputError):
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


def _volumes(img: sitk.Image, path: Path) -> list[sitk.Image]:
    """The 3-D float32 volumes of a 3-D, 4-D or vector image."""
    if img.GetNumberOfComponentsPerPixel() > 1:
        if img.GetDimension() != 3:
            raise ImageError(f"{path}: vector image must be 3-D, got {img.GetDimension()}-D")
        return [
            sitk.VectorIndexSelectionCast(img, k, sitk.sitkFloat32)
            for k in range(img.GetNumberOfComponentsPerPixel())
        ]
    if img.GetDimension() == 3:
        return [sitk.Cast(img, sitk.sitkFloat32)]
    size = list(img.GetSize())
    out = []
    for k in range(size[3]):
        vol = sitk.Extract(
            img, size[:3] + [0], [0, 0, 0, k], sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX
        )
        out.append(sitk.Cast(vol, sitk.sitkFloat32))
    return out


def load_channels(channels: dict[str, Path]) -> dict[str, sitk.Image]:
    """Read the channels of a scan as 3-D float32 images, in the order given.

    A 4-D (or vector) file holds several channels (MSD style): when the same file is named by
    ``n`` channels, the k-th of them takes volume k (``n`` must equal the number of volumes); a
    4-D file named by a single channel ``c`` yields ``c_0, c_1, ...``.

    Args:
        channels: channel name -> image path.

    Returns:
        channel name -> 3-D image.

    Raises:
        ImageError: unreadable file, or volumes and channel names that do not match.
    """
    by_path: dict[Path, list[str]] = {}
    for name, path in channels.items():
        by_path.setdefault(Path(path), []).append(name)
    loaded: dict[str, sitk.Image] = {}
    for path, names in by_path.items():
        vols = _volumes(read_image(path), path)
        if len(vols) == len(names):
            loaded.update(zip(names, vols, strict=True))
        elif len(names) == 1:
            loaded.update({f"{names[0]}_{k}": v for k, v in enumerate(vols)})
        else:
            raise ImageError(
                f"{path}: {len(vols)} volumes but named by {len(names)} channels {names}"
            )
    order = [n for name in channels for n in loaded if n == name or n.startswith(f"{name}_")]
    return {n: loaded[n] for n in dict.fromkeys(order)}


def _label_image(path: Path) -> sitk.Image:
    """A label map as read, checked to hold non-negative integers (as uint16)."""
    img = read_image(path)
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(f"{path}: a label map must be a 3-D scalar image")
    arr = sitk.GetArrayViewFromImage(img)
    if arr.size and (arr.min() < 0 or arr.max() > 65535 or not np.all(np.mod(arr, 1) == 0)):
        raise ImageError(f"{path}: label values must be integers in [0, 65535]")
    return sitk.Cast(img, sitk.sitkUInt16)


def reorder_axes(img: sitk.Image, order: AxisOrder) -> sitk.Image:
    """``img`` with its voxel axes permuted and flipped by ``order``, losslessly: the voxels are
    moved, not interpolated, and the direction and origin follow them, so every voxel keeps its
    physical point."""
    if order.identity:
        return img
    size = np.array(img.GetSize())
    spacing = np.array(img.GetSpacing())
    direction = np.array(img.GetDirection()).reshape(3, 3)
    start = np.zeros(3)  # the label index that becomes index (0, 0, 0)
    for s, f in zip(order.source, order.flip, strict=True):
        start[s] = size[s] - 1 if f else 0
    src = list(order.source)
    out = from_array(np.ascontiguousarray(order.apply(to_array(img))))
    out.SetSpacing(tuple(float(v) for v in spacing[src]))
    out.SetDirection(tuple(float(v) for v in (direction[:, src] * np.where(order.flip, -1.0, 1.0)).ravel()))
    out.SetOrigin(tuple(float(v) for v in np.array(img.GetOrigin()) + direction @ (spacing * start)))
    return out


def read_label(path: Path, reference: sitk.Image, label_grid: LabelGrid | None = None,
               reference_name: str = "its image") -> sitk.Image:
    """Read a label map onto its reference image's voxel grid: the one reader of raw labels.

    A label on the reference's grid in its voxel order comes back as read (uint16); one on the
    same grid with permuted or flipped axes (:func:`mripipe.core.grid.match_grid`) is reordered
    losslessly (:func:`reorder_axes`). A label on another grid is an :class:`ImageError`, or,
    with ``label_grid.resample`` (``data.resample_labels``), resampled onto the reference grid
    (nearest neighbour) with a warning.

    Args:
        path: the label file.
        reference: the image (or prediction) whose grid the label belongs to; 3-D or 4-D.
        label_grid: the tolerance and resampling policy (default: the schema's ``data`` defaults).
        reference_name: how messages name the reference (its file).

    Raises:
        ImageError: unreadable, not 3-D integer labels, or not on the reference grid (naming the
            label file, the reference and what differs).
    """
    policy = label_grid or LabelGrid.from_params()
    img = _label_image(path)
    ref = Grid.of(reference)
    match = match_grid(Grid.of(img), ref, policy.tolerance_mm)
    if match.order is not None:
        if not match.order.identity:
            log.info("%s: axes %s (flipped %s) of %s's order; reordered losslessly", path,
                     match.order.source, match.order.flip, reference_name)
        return reorder_axes(img, match.order)
    if not policy.resample:
        raise ImageError(f"{path}: not on the grid of {reference_name} ({match.detail}); "
                         "never resampled silently (data.resample_labels)")
    log.warning("%s: not on the grid of %s (%s); resampled (nearest neighbour, data.resample_labels)",
                path, reference_name, match.detail)
    target = sitk.Image([int(s) for s in ref.shape], sitk.sitkUInt16)
    target.SetSpacing(tuple(float(s) for s in ref.spacing))
    target.SetDirection(tuple(float(v) for v in (ref.affine[:3, :3] / ref.spacing).ravel()))
    target.SetOrigin(tuple(float(v) for v in ref.affine[:3, 3]))
    return sitk.Resample(img, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)


#: the label field: an array, or None when the label was not read
_Label = TypeVar("_Label", np.ndarray, None)


class PreprocessedScan(NamedTuple, Generic[_Label]):
    """One scan of ``results/preprocessed/{scan}/`` as arrays (see :func:`read_preprocessed`).

    Attributes:
        image: float32 ``(C, X, Y, Z)``.
        label: ``(X, Y, Z)`` lesion instance ids as stored (0 = background), or None when not read.
        brainmask: ``(X, Y, Z)`` as stored, non-zero inside the brain (never empty).
        reference: ``image.nii.gz`` as read (the template grid, for writing outputs on it).
    """

    image: np.ndarray
    label: _Label
    brainmask: np.ndarray
    reference: sitk.Image


@overload
def read_preprocessed(
    scan_dir: str | Path, label: Literal[True] = True
) -> PreprocessedScan[np.ndarray]: ...


@overload
def read_preprocessed(scan_dir: str | Path, label: Literal[False]) -> PreprocessedScan[None]: ...


def read_preprocessed(
    scan_dir: str | Path, label: bool = True
) -> PreprocessedScan[np.ndarray] | PreprocessedScan[None]:
    """Read ``image.nii.gz``, ``label.nii.gz`` and ``brainmask.nii.gz`` of a preprocessed scan.

    Args:
        scan_dir: ``results/preprocessed/{scan}`` (docs/contract.md).
        label: read ``label.nii.gz`` too (False: ``label`` is None and the file is not opened).

    Returns:
        The :class:`PreprocessedScan`.

    Raises:
        ImageError: a file is missing or unreadable, the label or brain mask is not on the
            image's grid shape, or the brain mask is empty (the message names the file).
    """
    folder = Path(scan_dir)
    reference = read_image(folder / "image.nii.gz")
    image = to_array(reference)
    if image.ndim == 3:
        image = image[None]
    lab = to_array(read_image(folder / "label.nii.gz")) if label else None
    mask = to_array(read_image(folder / "brainmask.nii.gz"))
    for name, arr in (("label.nii.gz", lab), ("brainmask.nii.gz", mask)):
        if arr is not None and arr.shape != image.shape[1:]:
            raise ImageError(
                f"{folder / name}: shape {arr.shape} differs from image.nii.gz {image.shape[1:]}"
            )
    if not mask.any():
        raise ImageError(f"{folder / 'brainmask.nii.gz'}: empty brain mask")
    image = image.astype(np.float32, copy=False)
    if lab is None:
        return PreprocessedScan(image, None, mask, reference)
    return PreprocessedScan(image, lab, mask, reference)

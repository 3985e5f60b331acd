"""Image grids, orientation codes and rigid/affine transforms as 4x4 matrices (ITK LPS space)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from mripipe.core.errors import InputError

#: Unit vector (ITK physical LPS coordinates) that an index axis points toward, per letter.
_AXIS_LETTERS: dict[str, tuple[float, float, float]] = {
    "L": (1.0, 0.0, 0.0),
    "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0),
    "I": (0.0, 0.0, -1.0),
}


def orientation_matrix(code: str) -> np.ndarray:
    """Direction matrix of an axis code: letter i is where index axis i increases toward.

    ``"LPS"`` is ITK's identity, ``"RAS"`` the ICBM152 template's own, ``"PIR"`` a sagittal
    acquisition (index axes permuted). Same convention as ``nibabel.aff2axcodes``.

    Args:
        code: three letters, one of L/R, one of P/A, one of S/I, in any order.

    Returns:
        (3, 3) direction matrix whose columns are the index axes' unit vectors.
    """
    code = code.upper()
    if len(code) != 3 or sorted({_pair_of(c) for c in code}) != ["AP", "IS", "LR"]:
        raise InputError(f"orientation code {code!r}: need one of L/R, P/A and S/I each")
    return np.array([_AXIS_LETTERS[c] for c in code], dtype=float).T


def _pair_of(letter: str) -> str:
    for pair in ("LR", "AP", "IS"):
        if letter in pair:
            return pair
    return "?"


@dataclass(frozen=True)
class Grid:
    """A voxel grid: index ``i`` (X, Y, Z order) sits at ``origin + direction @ (spacing * i)``.

    Attributes:
        origin: (3,) physical position of voxel (0, 0, 0) in mm.
        direction: (3, 3) orthonormal direction matrix (columns = index axes).
        spacing: (3,) voxel size in mm.
        shape: number of voxels along X, Y, Z.
    """

    origin: np.ndarray
    direction: np.ndarray
    spacing: np.ndarray
    shape: tuple[int, int, int]

    @classmethod
    def from_image(cls, img: sitk.Image) -> Grid:
        """The grid of a SimpleITK image."""
        size = img.GetSize()
        return cls(
            origin=np.array(img.GetOrigin(), dtype=float),
            direction=np.array(img.GetDirection(), dtype=float).reshape(3, 3),
            spacing=np.array(img.GetSpacing(), dtype=float),
            shape=(int(size[0]), int(size[1]), int(size[2])),
        )

    def index_to_physical(self) -> np.ndarray:
        """(4, 4) affine mapping homogeneous voxel indices to physical points."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def physical_to_index(self) -> np.ndarray:
        """(4, 4) affine mapping physical points to continuous voxel indices."""
        return np.linalg.inv(self.index_to_physical())

    def apply_to(self, img: sitk.Image) -> sitk.Image:
        """Set this grid's origin, spacing and direction on ``img`` (returned for chaining)."""
        img.SetOrigin(tuple(float(v) for v in self.origin))
        img.SetSpacing(tuple(float(v) for v in self.spacing))
        img.SetDirection(tuple(float(v) for v in self.direction.ravel()))
        return img

    def supersampled(self, factors: tuple[int, int, int]) -> Grid:
        """The grid whose ``factors`` sub-voxels per axis tile each voxel of this one."""
        f = np.asarray(factors, dtype=float)
        sub = self.spacing / f
        # the first sub-voxel's centre sits (1/f - 1)/2 voxels from the voxel centre
        origin = self.origin + self.direction @ (self.spacing * (1.0 / f - 1.0) / 2.0)
        shape = tuple(int(n * k) for n, k in zip(self.shape, factors, strict=True))
        return Grid(origin=origin, direction=self.direction, spacing=sub, shape=(shape[0], shape[1], shape[2]))


def rigid(rotation_deg: np.ndarray, translation_mm: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform ``x -> R (x - c) + c + t`` with Euler angles about X, Y, Z."""
    m = np.eye(4)
    rot = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    m[:3, :3] = rot
    m[:3, 3] = centre - rot @ centre + translation_mm
    return m


def scaling(factors: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(4, 4) anisotropic scaling about ``centre``: ``x -> S (x - c) + c``."""
    m = np.eye(4)
    m[:3, :3] = np.diag(factors)
    m[:3, 3] = centre - factors * centre
    return m


def to_sitk_affine(m: np.ndarray) -> sitk.AffineTransform:
    """A (4, 4) matrix as a SimpleITK AffineTransform (centre 0)."""
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(tuple(float(v) for v in m[:3, :3].ravel()))
    tx.SetTranslation(tuple(float(v) for v in m[:3, 3]))
    return tx


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) affine to points of shape (3, N); returns (3, N) in the points' dtype."""
    lin = m[:3, :3].astype(points.dtype)
    off = m[:3, 3].astype(points.dtype)[:, None]
    return lin @ points + off

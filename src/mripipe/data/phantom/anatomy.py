"""Subject anatomy: the ICBM152 template as contrast maps, its head shell, and random warps.

Everything here lives in template physical space (ITK LPS, mm). A subject is the template under
a smooth random displacement field plus a small global scaling; lesions are placed in template
space inside deep white matter, so one template-space description serves every session.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from mripipe.core.imageio import to_array
from mripipe.core.template import load_template
from mripipe.data.phantom.geometry import Grid

log = logging.getLogger(__name__)

#: Relative tissue intensities. T1w inside the brain is the template itself (WM ~0.87,
#: GM ~0.65, CSF ~0.31); FLAIR is synthesised from the tissue maps (CSF dark, WM darker than GM).
FLAIR_TISSUE = {"csf": 0.12, "gm": 0.80, "wm": 0.60}
#: Head shell outside the brain mask: (inner mm, outer mm, T1w, FLAIR) per layer.
HEAD_LAYERS = (("csf", 0.0, 2.0, 0.30, 0.10), ("skull", 2.0, 7.0, 0.06, 0.04), ("scalp", 7.0, 12.0, 0.80, 0.55))
#: Field grid spacing (mm) of the stored deformation (linearly interpolated, like ITK does).
DEFORMATION_GRID_MM = 4.0
#: Lesions keep this much white matter (mm) between their boundary and any other tissue.
WM_MARGIN_MM = 1.5


@dataclass(frozen=True)
class PreparedTemplate:
    """Template-space contrast maps, shared read-only by every subject.

    Attributes:
        grid: the template's 1 mm grid.
        t1: (X, Y, Z) float32 T1w intensity (template T1 + head shell), anti-aliased.
        flair: (X, Y, Z) float32 FLAIR intensity synthesised from GM/WM/CSF maps (+ shell).
        brain: (X, Y, Z) float32 brain mask (0/1).
        head_points: (N, 3) physical points sampling the head (brain + shell), for the FOV.
        centre: (3,) physical centre of the brain mask (mm).
        wm_points: (N, 3) physical centres of white-matter voxels at least 2 mm deep.
        wm_depth: (N,) distance (mm) from each of those voxels to the nearest non-WM voxel.
        support: (X/2, Y/2, Z/2) float32, every other voxel of the distance (mm) to where the
            contrast maps are non-zero (0 inside): points far from it are air and are skipped.
        support_reach: how far (mm) the maps' anti-aliasing smoothing reaches past the support.
    """

    grid: Grid
    t1: np.ndarray
    flair: np.ndarray
    brain: np.ndarray
    head_points: np.ndarray
    centre: np.ndarray
    wm_points: np.ndarray
    wm_depth: np.ndarray
    support: np.ndarray
    support_reach: np.ndarray

    _ARRAYS = ("t1", "flair", "brain", "head_points", "centre", "wm_points", "wm_depth", "support", "support_reach")

    @property
    def support_grid(self) -> Grid:
        """Grid of :attr:`support` (every other template voxel)."""
        g = self.grid
        shape = self.support.shape
        return Grid(origin=g.origin, direction=g.direction, spacing=g.spacing * 2, shape=(shape[0], shape[1], shape[2]))

    def may_be_nonzero(self, points: np.ndarray, max_displacement: float) -> np.ndarray:
        """Which template points (3, N), displaced by up to ``max_displacement`` mm, may see tissue.

        The distance map is 1-Lipschitz and sampled at the nearest point of a grid whose points
        lie within sqrt(3) mm of any location, so a point flagged False is surely air.

        Returns:
            (N,) bool.
        """
        to_idx = self.support_grid.physical_to_index()
        k = np.rint(to_idx[:3, :3].astype(np.float32) @ points + to_idx[:3, 3].astype(np.float32)[:, None]).astype(np.int32)
        shape = np.array(self.support.shape)[:, None]
        valid = ((k >= 0) & (k < shape)).all(axis=0)
        dist = np.full(points.shape[1], np.inf, dtype=np.float32)
        kv = k[:, valid]
        dist[valid] = self.support[kv[0], kv[1], kv[2]]
        return dist <= float(self.support_reach) + max_displacement + np.sqrt(3.0) * float(self.grid.spacing.max())

    def save(self, folder: Path) -> None:
        """Store as .npy files so worker processes can memory-map instead of recomputing."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in self._ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name))
        g = self.grid
        np.save(folder / "grid.npy", np.concatenate([g.origin, g.direction.ravel(), g.spacing, np.array(g.shape, dtype=float)]))


@functools.lru_cache(maxsize=2)
def load_prepared(folder: str) -> PreparedTemplate:
    """Memory-map a template saved by :meth:`PreparedTemplate.save` (cached per process)."""
    path = Path(folder)
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in PreparedTemplate._ARRAYS}
    g = np.load(path / "grid.npy")
    grid = Grid(origin=g[:3], direction=g[3:12].reshape(3, 3), spacing=g[12:15], shape=(int(g[15]), int(g[16]), int(g[17])))
    return PreparedTemplate(grid=grid, **arrays)


def antialias_sigma_mm(spacing: float) -> float:
    """Gaussian sigma (mm) that band-limits the 1 mm template for sampling at ``spacing`` mm."""
    return float(np.sqrt(max(spacing**2 - 1.0, 0.0)) / 2.355)


def _distance(mask: np.ndarray, grid: Grid, inside: bool) -> np.ndarray:
    """Euclidean distance (mm) to the mask's boundary, inside or outside it (Maurer, SimpleITK)."""
    img = sitk.GetImageFromArray(mask.astype(np.uint8).transpose(2, 1, 0))
    img.SetSpacing(tuple(float(s) for s in grid.spacing))
    f = sitk.SignedMaurerDistanceMapImageFilter()
    f.SetInsideIsPositive(inside)
    f.SetSquaredDistance(False)
    f.SetUseImageSpacing(True)
    f.SetBackgroundValue(0)
    dist = sitk.GetArrayFromImage(f.Execute(img)).transpose(2, 1, 0)
    return np.clip(dist, 0, None).astype(np.float32)


def prepare_template(head: bool, t1_sigma_mm: float, flair_sigma_mm: float) -> PreparedTemplate:
    """Contrast maps of the template (a few seconds; done once per cohort).

    Args:
        head: add a CSF/skull/scalp shell around the brain (otherwise brain only).
        t1_sigma_mm: anti-aliasing Gaussian sigma for the T1w map (mm, 1 mm voxels).
        flair_sigma_mm: the same for the FLAIR map.
    """
    tpl = load_template()
    grid = Grid.from_image(tpl.t1)
    brain = (to_array(tpl.brainmask) > 0).astype(np.float32)
    t1 = to_array(tpl.t1).astype(np.float32) * brain
    gm = np.clip(to_array(tpl.gm), 0, 1) * brain
    wm = np.clip(to_array(tpl.wm), 0, 1) * brain
    csf = np.clip(brain - gm - wm, 0, 1)
    flair = FLAIR_TISSUE["csf"] * csf + FLAIR_TISSUE["gm"] * gm + FLAIR_TISSUE["wm"] * wm
    outside = _distance(brain > 0, grid, inside=False)
    if head:
        outer_edge = HEAD_LAYERS[-1][2] + 3.0
        for _name, inner, outer, v_t1, v_fl in HEAD_LAYERS:
            w = _soft_band(outside, inner, outer) * ((brain == 0) & (outside <= outer_edge))
            t1 = t1 + v_t1 * w
            flair = flair + v_fl * w
        head_mask = outside <= HEAD_LAYERS[-1][2]
        support = np.clip(outside - outer_edge, 0, None)
    else:
        head_mask = brain > 0
        support = outside
    t1 = ndi.gaussian_filter(t1.astype(np.float32), t1_sigma_mm / grid.spacing, mode="constant")
    flair = ndi.gaussian_filter(flair.astype(np.float32), flair_sigma_mm / grid.spacing, mode="constant")
    to_phys = grid.index_to_physical()
    head_idx = np.argwhere(head_mask[::2, ::2, ::2]) * 2
    head_points = head_idx @ to_phys[:3, :3].T + to_phys[:3, 3]
    centre = np.argwhere(brain > 0).mean(0) @ to_phys[:3, :3].T + to_phys[:3, 3]
    depth = _distance(wm >= 0.5, grid, inside=True)
    deep = np.argwhere(depth >= 2.0)
    wm_points = deep @ to_phys[:3, :3].T + to_phys[:3, 3]
    log.debug("template prepared: %d deep WM voxels, max depth %.1f mm", len(deep), depth.max())
    return PreparedTemplate(
        grid=grid,
        t1=t1.astype(np.float32),
        flair=flair.astype(np.float32),
        brain=brain,
        head_points=head_points,
        centre=centre,
        wm_points=wm_points,
        wm_depth=depth[tuple(deep.T)].astype(float),
        support=np.ascontiguousarray(support[::2, ::2, ::2], dtype=np.float32),
        support_reach=np.array(3.0 * max(t1_sigma_mm, flair_sigma_mm) + 1.0),
    )


def _soft_band(dist: np.ndarray, inner: float, outer: float, width: float = 0.6) -> np.ndarray:
    """Smooth indicator of ``inner < dist <= outer`` (logistic edges of ``width`` mm)."""
    return (1.0 / (1.0 + np.exp(-(dist - inner) / width)) - 1.0 / (1.0 + np.exp(-(dist - outer) / width))).astype(np.float32)


@dataclass(frozen=True)
class Deformation:
    """A smooth displacement field in template space: a point ``y`` maps to ``y + u(y)``.

    Attributes:
        grid: the field's grid (template direction, ``DEFORMATION_GRID_MM`` spacing).
        field: (3, X, Y, Z) float32 displacement in physical (LPS) mm; zero at the borders.
    """

    grid: Grid
    field: np.ndarray

    def displace(self, points: np.ndarray) -> np.ndarray:
        """Map template points (3, N) through the field (linear interpolation, 0 outside).

        Identical to ``sitk.DisplacementFieldTransform`` on the stored field.
        """
        to_idx = self.grid.physical_to_index()
        idx = to_idx[:3, :3].astype(np.float32) @ points + to_idx[:3, 3].astype(np.float32)[:, None]
        disp = np.stack([ndi.map_coordinates(self.field[c], idx, order=1, mode="constant", cval=0.0) for c in range(3)])
        return points + disp

    @property
    def max_displacement(self) -> float:
        """Largest displacement length (mm) anywhere in the field."""
        return float(np.sqrt((self.field.astype(np.float64) ** 2).sum(axis=0)).max())


def random_deformation(rng: np.random.Generator, prep: PreparedTemplate, rms_mm: float, smoothness_mm: float) -> Deformation:
    """Smooth random displacement field whose RMS inside the brain is ``rms_mm``.

    Gaussian noise on a control grid of ``smoothness_mm`` spacing, cubic-spline upsampled to a
    4 mm field grid, tapered to zero within 16 mm of the grid border, and stripped of its affine
    component inside the brain (least squares), so it holds no hidden pose or scaling.

    Args:
        rng: the subject's generator.
        prep: the prepared template (grid and brain mask).
        rms_mm: root-mean-square displacement inside the brain (mm); 0 gives the identity.
        smoothness_mm: control-point spacing (mm); larger is smoother.
    """
    tg = prep.grid
    extent = tg.spacing * (np.array(tg.shape) - 1)
    shape = tuple(int(np.ceil(e / DEFORMATION_GRID_MM)) + 1 for e in extent)
    grid = Grid(origin=tg.origin, direction=tg.direction, spacing=np.full(3, DEFORMATION_GRID_MM), shape=(shape[0], shape[1], shape[2]))
    n_ctrl = [max(2, int(np.ceil(e / smoothness_mm)) + 1) for e in extent]
    noise = rng.standard_normal((3, *n_ctrl))
    zoom = [(s - 1) / (c - 1) for s, c in zip(shape, n_ctrl, strict=True)]
    field = np.stack([_zoom_to(noise[c], zoom, shape) for c in range(3)])
    taper = np.ones(shape)
    for axis, n in enumerate(shape):
        edge = np.minimum(np.arange(n), np.arange(n)[::-1]) * DEFORMATION_GRID_MM
        ramp = np.clip(edge / 16.0, 0, 1)
        ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
        taper = taper * ramp.reshape([-1 if a == axis else 1 for a in range(3)])
    field = field * taper
    brain_points = np.argwhere(prep.brain[::4, ::4, ::4] > 0) * 4 @ prep.grid.index_to_physical()[:3, :3].T
    brain_points = brain_points + prep.grid.origin
    to_field = grid.physical_to_index()
    k = np.rint(brain_points @ to_field[:3, :3].T + to_field[:3, 3]).astype(int)
    design = np.column_stack([brain_points, np.ones(len(brain_points))])
    field_points = np.indices(shape).reshape(3, -1).T @ grid.index_to_physical()[:3, :3].T + grid.origin
    field_design = np.column_stack([field_points, np.ones(len(field_points))])
    for _ in range(3):
        # remove the affine part inside the brain: pose and scaling are the registration's job,
        # the warp must be anatomy only (so to_template is exactly what registration can find)
        inside = field[:, k[:, 0], k[:, 1], k[:, 2]].T
        coef, *_ = np.linalg.lstsq(design, inside, rcond=None)
        field = (field - (field_design @ coef).T.reshape(3, *shape)) * taper
    inside = field[:, k[:, 0], k[:, 1], k[:, 2]]
    rms = float(np.sqrt((inside**2).sum(0).mean())) if inside.size else 0.0
    field = field * (rms_mm / rms if rms > 0 else 0.0)
    # on a 2**-10 mm lattice: exact in float32 and compresses well
    return Deformation(grid=grid, field=(np.round(field * 1024.0) / 1024.0).astype(np.float32))


def _zoom_to(arr: np.ndarray, zoom: list[float], shape: tuple[int, ...]) -> np.ndarray:
    out = ndi.zoom(arr, zoom, order=3, mode="reflect", grid_mode=False)
    pad = [(0, max(0, s - o)) for s, o in zip(shape, out.shape, strict=True)]
    out = np.pad(out, pad, mode="edge")
    return out[: shape[0], : shape[1], : shape[2]]

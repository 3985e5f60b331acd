"""White-matter lesions: placement in template space, change between sessions, rendering.

A lesion is an ellipsoid whose boundary is modulated by a few smooth harmonics (an irregular
blob when ``amp > 0``). Its centre lies in white matter deep enough that the whole lesion, plus
``WM_MARGIN_MM``, stays inside it; lesions never overlap (``GAP_MM`` apart at least).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial.transform import Rotation

from mripipe.core.errors import InputError
from mripipe.data.phantom.anatomy import WM_MARGIN_MM, PreparedTemplate

log = logging.getLogger(__name__)

GAP_MM = 2.0
#: Relative intensity ranges of lesion tissue (WM is ~0.87 on T1w and 0.60 on FLAIR).
LESION_T1 = (0.35, 0.55)
LESION_FLAIR = (1.05, 1.35)


@dataclass(frozen=True)
class Lesion:
    """One lesion in template physical space.

    Attributes:
        uid: identity within the subject (kept across sessions).
        centre: (3,) template physical position (mm).
        axes: (3,) semi-axes (mm) before modulation.
        rotation: (3, 3) orientation of the axes.
        amp: boundary modulation amplitude (0 = ellipsoid), relative.
        harm_dirs: (3, 3) unit vectors (rows) of the boundary harmonics.
        harm_freq: (3,) harmonic frequencies.
        harm_phase: (3,) harmonic phases.
        harm_weight: (3,) harmonic weights (sum of absolute values 1).
        t1: relative T1w intensity of lesion tissue.
        flair: relative FLAIR intensity of lesion tissue.
        depth: white-matter depth at the centre (mm).
        change: "" (first session), "stable", "grown", "shrunk" or "new".
    """

    uid: int
    centre: np.ndarray
    axes: np.ndarray
    rotation: np.ndarray
    amp: float
    harm_dirs: np.ndarray
    harm_freq: np.ndarray
    harm_phase: np.ndarray
    harm_weight: np.ndarray
    t1: float
    flair: float
    depth: float
    change: str = ""

    @property
    def extent(self) -> float:
        """Largest distance (mm) from the centre to any lesion point."""
        return float(self.axes.max() * (1.0 + self.amp))

    def describe(self) -> dict[str, object]:
        """JSON-ready summary (for truth.json)."""
        return {
            "uid": self.uid,
            "centre_template_mm": [round(float(v), 3) for v in self.centre],
            "semi_axes_mm": [round(float(v), 3) for v in self.axes],
            "irregularity": round(self.amp, 4),
            "change": self.change,
        }


def _new_lesion(rng: np.random.Generator, uid: int, radius: float, irregularity: float) -> Lesion:
    axes = radius * np.concatenate([[1.0], rng.uniform(0.6, 1.0, 2)])
    amp = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.3, 1.0) * irregularity)
    dirs = rng.standard_normal((3, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    weight = rng.uniform(0.2, 1.0, 3) * rng.choice([-1.0, 1.0], 3)
    return Lesion(
        uid=uid,
        centre=np.zeros(3),
        axes=axes,
        rotation=Rotation.random(random_state=rng).as_matrix(),
        amp=amp,
        harm_dirs=dirs,
        harm_freq=rng.integers(1, 4, 3).astype(float),
        harm_phase=rng.uniform(0, 2 * np.pi, 3),
        harm_weight=weight / np.abs(weight).sum(),
        t1=float(rng.uniform(*LESION_T1)),
        flair=float(rng.uniform(*LESION_FLAIR)),
        depth=0.0,
    )


def place_lesions(
    rng: np.random.Generator,
    prep: PreparedTemplate,
    n: int,
    radius_mm: tuple[float, float],
    irregularity: float,
    existing: list[Lesion] | None = None,
    change: str = "",
) -> list[Lesion]:
    """Place ``n`` new non-overlapping lesions in deep white matter.

    Radii are log-uniform in ``radius_mm``; a lesion that finds no room shrinks (never below
    the lower bound) until it fits.

    Args:
        rng: the subject's generator.
        prep: prepared template (deep-WM candidate points and their depths).
        n: number of lesions to add.
        radius_mm: (min, max) largest semi-axis (mm).
        irregularity: maximum boundary modulation amplitude.
        existing: lesions already there (kept clear of).
        change: label stored on the new lesions ("" or "new").

    Returns:
        ``existing`` plus the new lesions.

    Raises:
        ValueError: when white matter has no room left (too many or too large lesions).
    """
    out = list(existing or [])
    next_uid = max((les.uid for les in out), default=0) + 1
    for _ in range(n):
        radius = float(np.exp(rng.uniform(np.log(radius_mm[0]), np.log(radius_mm[1]))))
        les = _new_lesion(rng, next_uid, radius, irregularity)
        for _attempt in range(60):
            need = les.extent + WM_MARGIN_MM
            cand = np.flatnonzero(prep.wm_depth >= need)
            if cand.size == 0:
                les = _shrunk(les, radius_mm[0])
                continue
            pick = cand[rng.integers(cand.size)]
            centre = prep.wm_points[pick]
            if all(np.linalg.norm(centre - o.centre) >= les.extent + o.extent + GAP_MM for o in out):
                les = replace(les, centre=centre.astype(float), depth=float(prep.wm_depth[pick]), change=change)
                break
            if _attempt % 10 == 9:
                les = _shrunk(les, radius_mm[0])
        else:
            raise InputError(
                f"phantom params: no room in white matter for lesion {len(out) + 1} (radius {radius:.1f} mm); "
                "lower lesion_counts or lesion_radius_mm"
            )
        out.append(les)
        next_uid += 1
    return out


def _shrunk(les: Lesion, min_radius: float) -> Lesion:
    factor = max(0.85, min_radius / float(les.axes.max()))
    if factor >= 1.0:
        return replace(les, amp=les.amp * 0.8)
    return replace(les, axes=les.axes * factor)


def evolve_lesions(
    rng: np.random.Generator,
    prep: PreparedTemplate,
    lesions: list[Lesion],
    count_range: tuple[int, int],
    growth: tuple[float, float],
    radius_mm: tuple[float, float],
    irregularity: float,
) -> list[Lesion]:
    """The next session's lesions: each grows or shrinks, one may resolve, new ones may appear.

    Sizes stay within white matter and clear of neighbours; the count stays in ``count_range``.
    """
    # never below the smallest radius (which keeps every lesion visible at the voxel size)
    factors = [max(float(rng.uniform(*growth)), radius_mm[0] / float(les.axes.max())) for les in lesions]
    # white matter bounds growth; then any pair that would touch keeps at most its old sizes
    # (which were clear of each other), so the loop ends after at most len(lesions) passes
    factors = [min(g, (les.depth - WM_MARGIN_MM) / les.extent) for g, les in zip(factors, lesions, strict=True)]
    changed = True
    while changed:
        changed = False
        for i, a in enumerate(lesions):
            for j in range(i + 1, len(lesions)):
                b = lesions[j]
                dist = float(np.linalg.norm(a.centre - b.centre))
                if dist < a.extent * factors[i] + b.extent * factors[j] + GAP_MM and max(factors[i], factors[j]) > 1.0:
                    factors[i], factors[j] = min(factors[i], 1.0), min(factors[j], 1.0)
                    changed = True
    out: list[Lesion] = []
    for les, g in zip(lesions, factors, strict=True):
        label = "grown" if g > 1.05 else "shrunk" if g < 0.95 else "stable"
        out.append(replace(les, axes=les.axes * g, change=label))
    lo, hi = count_range
    if len(out) > lo and rng.random() < 0.25:
        out.pop(int(rng.integers(len(out))))
    n_new = min(int(rng.integers(0, 3)), hi - len(out))
    n_new = max(n_new, lo - len(out))
    if n_new > 0:
        out = place_lesions(rng, prep, n_new, radius_mm, irregularity, existing=out, change="new")
    return out


def render(lesions: list[Lesion], points: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate lesions at template points.

    Args:
        lesions: the scan's lesions.
        points: (3, N) float32 template physical points.
        voxel_mm: sampling distance (mm); sets the width of the soft (partial-volume) edge.

    Returns:
        ``(membership, which, inside)``: (N,) float32 soft membership in [0, 1]; (N,) int16
        index into ``lesions`` of the lesion at each point (-1 where none); (N,) bool, the point
        lies inside that lesion's boundary.
    """
    n = points.shape[1]
    membership = np.zeros(n, dtype=np.float32)
    which = np.full(n, -1, dtype=np.int16)
    inside = np.zeros(n, dtype=bool)
    for k, les in enumerate(lesions):
        reach = les.extent + voxel_mm
        c = les.centre.astype(np.float32)
        near = np.abs(points[0] - c[0]) <= reach
        near &= np.abs(points[1] - c[1]) <= reach
        near &= np.abs(points[2] - c[2]) <= reach
        sel = np.flatnonzero(near)
        if sel.size == 0:
            continue
        d = les.rotation.T @ (points[:, sel].astype(float) - les.centre[:, None])
        norm = np.linalg.norm(d, axis=0)
        rho = np.linalg.norm(d / les.axes[:, None], axis=0)
        u = d / np.maximum(norm, 1e-9)
        mod = np.cos(np.pi * les.harm_freq[:, None] * (les.harm_dirs @ u) + les.harm_phase[:, None])
        bound = 1.0 + les.amp * (les.harm_weight @ mod)
        r_mean = float(np.exp(np.log(les.axes).mean()))
        soft = np.clip(0.5 + (bound - rho) * r_mean / voxel_mm, 0.0, 1.0).astype(np.float32)
        take = soft > membership[sel]
        membership[sel[take]] = soft[take]
        which[sel[take]] = k
        inside[sel[take]] = rho[take] <= bound[take]
    return membership, which, inside

"""Phantom parameters: the ``phantom:`` config section, resolved against the schema's defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from mripipe.core.config import with_defaults
from mripipe.core.errors import InputError

CLASSES: tuple[str, ...] = ("none", "low", "high")



@dataclass(frozen=True)
class PhantomParams:
    """Resolved phantom parameters (see the schema for each key's meaning and default)."""

    n_subjects: int
    two_session_fraction: float
    snr: float
    t1w_spacing: tuple[float, float, float]
    flair_spacing: tuple[float, float, float]
    lesion_counts: dict[str, tuple[int, int]]
    lesion_radius_mm: tuple[float, float]
    lesion_irregularity: float
    lesion_growth: tuple[float, float]
    deformation_mm: float
    deformation_smoothness_mm: float
    global_scale: float
    pose_rotation_deg: float
    pose_translation_mm: float
    flair_rotation_deg: float
    flair_translation_mm: float
    bias_strength: float
    intensity_range: tuple[float, float]
    orientations: tuple[str, ...]
    fov_margin_mm: float
    head: bool

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> PhantomParams:
        """Build from a (possibly partial) ``phantom:`` section; raise ValueError on bad values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise InputError(f"phantom params: unknown key(s) {unknown}")
        p = with_defaults("phantom", params)
        counts_in = p["lesion_counts"]
        counts: dict[str, tuple[int, int]] = {}
        for name in CLASSES:
            lo, hi = (int(v) for v in counts_in[name])
            if not 0 <= lo <= hi:
                raise InputError(f"phantom params: lesion_counts.{name} must be [lo, hi] with 0 <= lo <= hi")
            counts[name] = (lo, hi)
        if counts["none"] != (0, 0):
            raise InputError("phantom params: lesion_counts.none must be [0, 0]")
        out = cls(
            n_subjects=int(p["n_subjects"]),
            two_session_fraction=float(p["two_session_fraction"]),
            snr=float(p["snr"]),
            t1w_spacing=_triple(p["t1w_spacing"], "t1w_spacing"),
            flair_spacing=_triple(p["flair_spacing"], "flair_spacing"),
            lesion_counts=counts,
            lesion_radius_mm=_pair(p["lesion_radius_mm"], "lesion_radius_mm"),
            lesion_irregularity=float(p["lesion_irregularity"]),
            lesion_growth=_pair(p["lesion_growth"], "lesion_growth"),
            deformation_mm=float(p["deformation_mm"]),
            deformation_smoothness_mm=float(p["deformation_smoothness_mm"]),
            global_scale=float(p["global_scale"]),
            pose_rotation_deg=float(p["pose_rotation_deg"]),
            pose_translation_mm=float(p["pose_translation_mm"]),
            flair_rotation_deg=float(p["flair_rotation_deg"]),
            flair_translation_mm=float(p["flair_translation_mm"]),
            bias_strength=float(p["bias_strength"]),
            intensity_range=_pair(p["intensity_range"], "intensity_range"),
            orientations=tuple(str(o) for o in p["orientations"]),
            fov_margin_mm=float(p["fov_margin_mm"]),
            head=bool(p["head"]),
        )
        if out.n_subjects < 1:
            raise InputError("phantom params: n_subjects must be >= 1")
        if out.snr <= 0:
            raise InputError("phantom params: snr must be > 0")
        if not 0 <= out.lesion_irregularity < 1:
            raise InputError("phantom params: lesion_irregularity must be in [0, 1)")
        if not 0 < out.intensity_range[0] <= out.intensity_range[1] <= 8000:
            raise InputError("phantom params: intensity_range must satisfy 0 < lo <= hi <= 8000 (int16 output)")
        return out


def _triple(value: Any, name: str) -> tuple[float, float, float]:
    vals = tuple(float(v) for v in value)
    if len(vals) != 3 or min(vals) <= 0:
        raise InputError(f"phantom params: {name} must be three positive numbers, got {value!r}")
    return vals[0], vals[1], vals[2]


def _pair(value: Any, name: str) -> tuple[float, float]:
    vals = tuple(float(v) for v in value)
    if len(vals) != 2 or vals[0] > vals[1] or vals[0] < 0:
        raise InputError(f"phantom params: {name} must be [lo, hi] with 0 <= lo <= hi, got {value!r}")
    return vals[0], vals[1]

"""One phantom subject: anatomy, lesions per session, and both contrasts of every scan."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mripipe.core.utils import derive_seed, write_json
from mripipe.data.phantom.acquisition import Acquired, acquire, native_grid
from mripipe.data.phantom.anatomy import (
    Deformation,
    PreparedTemplate,
    antialias_sigma_mm,
    load_prepared,
    prepare_template,
    random_deformation,
)
from mripipe.data.phantom.bids_writer import ScanPaths, relative, write_transform, write_volume
from mripipe.data.phantom.geometry import rigid, scaling
from mripipe.data.phantom.lesions import Lesion, evolve_lesions, place_lesions
from mripipe.data.phantom.params import PhantomParams

log = logging.getLogger(__name__)

CHANNELS = ("T1w", "FLAIR")


@dataclass(frozen=True)
class SubjectPlan:
    """What the cohort plan fixes for a subject before its own generator takes over."""

    subject: str
    klass: str
    n_sessions: int
    age: int
    sex: str


def lesion_radius_range(params: PhantomParams) -> tuple[float, float]:
    """Configured lesion radii, raised to the largest T1w voxel size so every lesion is visible."""
    floor = max(params.t1w_spacing)
    lo, hi = params.lesion_radius_mm
    return max(lo, floor), max(hi, floor)


def template_for(params: PhantomParams) -> PreparedTemplate:
    """The prepared template these parameters need (head shell, anti-aliasing per spacing)."""
    return prepare_template(
        params.head,
        round(antialias_sigma_mm(min(params.t1w_spacing)), 3),
        round(antialias_sigma_mm(min(params.flair_spacing)), 3),
    )


def generate_subject(
    root: str | Path, plan: SubjectPlan, seed: int, params: PhantomParams, template_dir: str | None = None
) -> list[dict[str, Any]]:
    """Generate and write every scan of one subject under the BIDS ``root``.

    All randomness comes from ``derive_seed(seed, "phantom", subject)``, split into independent
    streams (anatomy, lesions, one per session), so the files depend only on (seed, subject,
    params) and never on the worker that runs them.

    Args:
        root: BIDS root being built.
        plan: the subject's plan (id, class, sessions).
        seed: master seed.
        params: resolved phantom parameters.
        template_dir: folder of a saved :class:`PreparedTemplate` (memory-mapped); None
            prepares it here (a few seconds).

    Returns:
        One summary dict per scan (scan, n_lesions, lesion volumes, noise sigmas).
    """
    root = Path(root)
    streams = np.random.SeedSequence(derive_seed(seed, "phantom", plan.subject)).spawn(2 + plan.n_sessions)
    anat_rng, lesion_rng = np.random.default_rng(streams[0]), np.random.default_rng(streams[1])
    prep = load_prepared(template_dir) if template_dir else template_for(params)
    deformation = random_deformation(anat_rng, prep, params.deformation_mm, params.deformation_smoothness_mm)
    write_volume(deformation.field, deformation.grid, ScanPaths(root, plan.subject, "ses-01").deformation())
    scale = 1.0 + anat_rng.uniform(-params.global_scale, params.global_scale) + anat_rng.uniform(-0.01, 0.01, 3)
    subject_to_template = scaling(scale, prep.centre)
    radius = lesion_radius_range(params)
    counts = params.lesion_counts[plan.klass]
    lesions: list[Lesion] = []
    summaries = []
    for s in range(plan.n_sessions):
        if s == 0:
            n = int(lesion_rng.integers(counts[0], counts[1] + 1))
            lesions = place_lesions(lesion_rng, prep, n, radius, params.lesion_irregularity)
        else:
            lesions = evolve_lesions(lesion_rng, prep, lesions, counts, params.lesion_growth, radius, params.lesion_irregularity)
        paths = ScanPaths(root, plan.subject, f"ses-{s + 1:02d}")
        ses_rng = np.random.default_rng(streams[2 + s])
        summaries.append(_write_scan(paths, plan, prep, deformation, subject_to_template, scale, lesions, params, ses_rng))
    return summaries


def _pose(rng: np.random.Generator, rot_deg: float, trans_mm: float) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(-rot_deg, rot_deg, 3), rng.uniform(-trans_mm, trans_mm, 3)


def _write_scan(
    paths: ScanPaths,
    plan: SubjectPlan,
    prep: PreparedTemplate,
    deformation: Deformation,
    subject_to_template: np.ndarray,
    scale: np.ndarray,
    lesions: list[Lesion],
    params: PhantomParams,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Simulate and write both contrasts, the lesion mask and truth.json of one scan."""
    rot, trans = _pose(rng, params.pose_rotation_deg, params.pose_translation_mm)
    pose = rigid(rot, trans, prep.centre)  # scanner -> subject
    f_rot, f_trans = _pose(rng, params.flair_rotation_deg, params.flair_translation_mm)
    motion = rigid(f_rot, f_trans, prep.centre)  # FLAIR scanner -> T1w scanner (motion between sequences)
    spacing = {"T1w": params.t1w_spacing, "FLAIR": params.flair_spacing}
    margin = params.fov_margin_mm + 2.0 * params.deformation_mm
    channels: dict[str, Any] = {}
    labels: np.ndarray | None = None
    t1_grid = None
    for ch in CHANNELS:
        ch_rng = np.random.default_rng(rng.integers(2**32))
        to_tpl = subject_to_template @ pose @ (motion if ch == "FLAIR" else np.eye(4))
        orientation = str(ch_rng.choice(list(params.orientations)))
        gain = float(np.exp(ch_rng.uniform(*np.log(params.intensity_range))))
        grid = native_grid(prep, to_tpl, orientation, spacing[ch], margin)
        acq: Acquired = acquire(
            prep, deformation, lesions, grid, to_tpl, ch, gain, params.bias_strength, params.snr, ch_rng, with_labels=ch == "T1w"
        )
        if ch == "T1w":
            labels, t1_grid = acq.labels, grid
        write_volume(acq.image, grid, paths.image(ch))
        write_volume(acq.clean, grid, paths.clean(ch))
        write_volume(acq.bias, grid, paths.bias(ch))
        write_transform(np.linalg.inv(to_tpl), paths.to_template(ch))
        entry: dict[str, Any] = {
            "clean": relative(paths.clean(ch), paths.truth_dir),
            "bias": relative(paths.bias(ch), paths.truth_dir),
            "noise_sigma": round(acq.noise_sigma, 6),
            "to_template": relative(paths.to_template(ch), paths.truth_dir),
            "pose": {"rotation_deg": rot.round(4).tolist(), "translation_mm": trans.round(4).tolist(), "centre_mm": prep.centre.round(4).tolist()},
            "native_to_template_matrix": to_tpl.round(8).tolist(),
            "orientation": orientation,
            "spacing_mm": list(spacing[ch]),
            "intensity_scale": round(gain, 4),
            "snr": params.snr,
        }
        if ch == "FLAIR":
            entry["motion_from_T1w"] = {"rotation_deg": f_rot.round(4).tolist(), "translation_mm": f_trans.round(4).tolist()}
        channels[ch] = entry
    if labels is None or t1_grid is None:
        raise RuntimeError(f"{paths.scan}: the T1w lesion mask was not produced")
    write_volume(labels, t1_grid, paths.lesions())
    voxel_mm3 = float(np.prod(t1_grid.spacing))
    counts = np.bincount(labels.ravel(), minlength=len(lesions) + 1)[1:]
    volumes = [round(float(c) * voxel_mm3, 3) for c in counts]
    if (counts == 0).any():
        log.warning("%s: %d lesion(s) cover no T1w voxel", paths.scan, int((counts == 0).sum()))
    described = [{"id": k + 1, **les.describe(), "volume_mm3": v} for k, (les, v) in enumerate(zip(lesions, volumes, strict=True))]
    truth = {
        "subject": plan.subject,
        "session": paths.session,
        "class": plan.klass,
        "channels": channels,
        "n_lesions": int((counts > 0).sum()),
        "lesion_volumes_mm3": volumes,
        "lesions": described,
        "global_scale": scale.round(6).tolist(),
        "deformation": relative(paths.deformation(), paths.truth_dir),
        "deformation_rms_mm": params.deformation_mm,
    }
    write_json(paths.truth_json(), truth)
    return {
        "scan": paths.scan,
        "class": plan.klass,
        "n_lesions": truth["n_lesions"],
        "lesion_volumes_mm3": volumes,
        "noise_sigma": {ch: channels[ch]["noise_sigma"] for ch in CHANNELS},
    }

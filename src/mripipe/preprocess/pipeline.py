"""Per-scan preprocessing chain into template space, with timings and truth-based QC.

Steps (each switchable in ``preprocess:``): reorient to RAS -> N4 bias correction -> denoising ->
rigid co-registration of the other channels onto the reference (first) channel -> rigid + affine
registration of the reference to the ICBM152 template -> resampling of every channel (B-spline)
and of the label (nearest neighbour) onto ``reference_grid(target_spacing)`` -> skull strip with
the template brain mask -> z-score inside the mask -> QC (qc.json, qc.png).

With ``register: false`` and ``skull_strip: false`` a scan stays in its own space instead
(:mod:`mripipe.preprocess.native`): its reoriented grid, cropped to the foreground and resampled to
the target spacing; ``transform.tfm`` is the identity and qc.json records the crop box.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mripipe.core.config import with_defaults
from mripipe.core.errors import InputError
from mripipe.core.grid import LabelGrid
from mripipe.core.imageio import from_array, load_channels, read_label, to_array, write_image
from mripipe.core.template import reference_grid, template_brainmask
from mripipe.core.utils import atomic_path, derive_seed, write_json
from mripipe.preprocess import intensity, registration
from mripipe.preprocess import native as native_space
from mripipe.preprocess.montage import save_montage
from mripipe.preprocess.qc import NativeChannel, truth_metrics

log = logging.getLogger(__name__)

#: Fallbacks mirroring the schema's defaults of ``preprocess:`` (the CLI always gets the full
#: section; unit tests may pass a partial dict).
_INTERPOLATORS = {
    "bspline": sitk.sitkBSpline,
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
}


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Record the wall time of a block under ``timings[step]`` (seconds)."""
    t0 = time.perf_counter()
    timings[step] = timings.pop(step, 0.0)  # the last key is the running step
    yield
    timings[step] = round(timings[step] + time.perf_counter() - t0, 3)


def preprocess_scan(
    channels: dict[str, Path],
    label: Path | None,
    out_dir: Path,
    params: dict[str, Any],
    target_spacing: tuple[float, float, float] | list[float],
    truth: Path | None = None,
    seed: int = 0,
    label_grid: LabelGrid | None = None,
) -> dict[str, Any]:
    """Preprocess one scan into template space and write its outputs (docs/contract.md).

    Args:
        channels: channel name -> native image path; the first is the reference channel.
        label: label map on the reference channel's grid (its axes possibly permuted or flipped:
            read by :func:`~mripipe.core.imageio.read_label`), or None.
        out_dir: ``results/preprocessed/{scan}``; receives image.nii.gz (C channels),
            label.nii.gz, brainmask.nii.gz, transform.tfm, qc.json, qc.png.
        params: the ``preprocess:`` config section (missing keys take the schema's defaults).
        target_spacing: output spacing in mm (x, y, z).
        truth: the phantom's truth.json for this scan, or None.
        seed: master seed; the registration sampling seed is derived from (seed, scan).
        label_grid: how the label must lie on the reference grid (``data.grid_tolerance_mm``,
            ``data.resample_labels``); default the schema's.

    Returns:
        The QC dictionary written to qc.json.

    Raises:
        ImageError: an unreadable or unsuitable input (the message starts with its path).
        ValueError: a step failed on this scan (the message starts with the reference image).
    """
    timings: dict[str, float] = {}
    try:
        return _preprocess(
            channels,
            label,
            Path(out_dir),
            with_defaults("preprocess", params),
            target_spacing,
            truth,
            seed,
            timings,
            label_grid,
        )
    except RuntimeError as exc:
        step = next(reversed(timings), "start")
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        raise InputError(
            f"{next(iter(channels.values()))}: preprocessing failed in step {step!r} ({lines[-1] if lines else exc})"
        ) from None


def _preprocess(
    channels: dict[str, Path],
    label: Path | None,
    out_dir: Path,
    p: dict[str, Any],
    target_spacing: tuple[float, float, float] | list[float],
    truth: Path | None,
    seed: int,
    timings: dict[str, float],
    label_grid: LabelGrid | None = None,
) -> dict[str, Any]:
    """The body of :func:`preprocess_scan` (``p`` complete; ``timings`` filled as steps run)."""
    scan = out_dir.name
    rseed = derive_seed(seed, "preprocess", scan)
    spacing = _check_params(out_dir, p, target_spacing)
    t_start = time.perf_counter()

    with _timed(timings, "load"):
        imgs = load_channels(channels)
        names = list(imgs)
        ref_path = next(iter(channels.values()))
        lab = read_label(Path(label), imgs[names[0]], label_grid, str(ref_path)) if label else None
    ref = names[0]
    native_info = {n: _native_info(im) for n, im in imgs.items()}
    if p["reorient"]:
        with _timed(timings, "reorient"):
            imgs = {n: sitk.DICOMOrient(im, "RAS") for n, im in imgs.items()}
    native = _correct_intensities(imgs, p, timings)
    work = {n: ch.denoised if ch.denoised is not None else ch.corrected for n, ch in native.items()}
    with _timed(timings, "coregister"):
        coreg = _coregister(work, native[ref].mask, names, p, rseed)
    with _timed(timings, "register"):
        to_template = _register(work[ref], p, rseed) if p["register"] else None
    tx_ref: sitk.Transform = to_template if to_template is not None else sitk.AffineTransform(3)

    with _timed(timings, "resample"):
        grid, brain, crop = _target(imgs[ref], spacing, p)
        resampled = _resample_channels(work, names, coreg, tx_ref, grid, p)
        lab_arr = _resample_label(lab, grid, tx_ref, brain.shape)
    with _timed(timings, "normalise"):
        stack = native_space.normalise(np.stack(resampled).astype(np.float32), brain, p, crop is not None)
    with _timed(timings, "write"):
        _write_outputs(out_dir, stack, lab_arr, brain, grid, tx_ref)
    with _timed(timings, "qc_png"):
        save_montage(
            stack, names, brain, lab_arr if lab is not None else None, out_dir / "qc.png", scan
        )

    qc = _qc_summary(scan, names, spacing, grid, native_info, p, brain, lab_arr)
    qc["space"] = "template" if crop is None else "native"
    if crop is not None:
        qc["crop"] = crop.as_dict()
    if truth:
        with _timed(timings, "truth"):
            qc["truth"] = truth_metrics(
                Path(truth), native, ref, to_template, coreg if p["coregister"] else {}
            )
    timings["total"] = round(time.perf_counter() - t_start, 3)
    return _write_qc(out_dir / "qc.json", qc, timings)


def _check_params(
    out_dir: Path, p: dict[str, Any], target_spacing: tuple[float, float, float] | list[float]
) -> tuple[float, float, float]:
    """The target spacing as three floats; bad spacing or denoise method is an InputError."""
    spacing = [float(s) for s in target_spacing]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(
            f"{out_dir}: target spacing must be three positive numbers, got {target_spacing!r}"
        )
    if p["denoise"] not in intensity.DENOISE_METHODS:
        raise InputError(f"{out_dir}: unknown denoise method {p['denoise']!r}")
    if p["normalise"] not in native_space.NORMALISE_MODES or p["crop"] not in ("nonzero", "none"):
        raise InputError(f"{out_dir}: unknown normalise {p['normalise']!r} or crop {p['crop']!r}")
    low, high = (float(v) for v in p["ct_window"])
    if not low < high:
        raise InputError(f"{out_dir}: ct_window must be [low, high] with low < high, got {p['ct_window']!r}")
    return spacing[0], spacing[1], spacing[2]


def _native_info(im: sitk.Image) -> dict[str, Any]:
    """Size, spacing and orientation code of a native image (for qc.json)."""
    return {
        "size": list(im.GetSize()),
        "spacing": [round(s, 4) for s in im.GetSpacing()],
        "orientation": sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
            im.GetDirection()
        ),
    }


def _correct_intensities(
    imgs: dict[str, sitk.Image], p: dict[str, Any], timings: dict[str, float]
) -> dict[str, NativeChannel]:
    """N4 bias correction (or a plain head mask), then denoising, of every native channel."""
    native: dict[str, NativeChannel] = {}
    with _timed(timings, "n4"):
        for n, im in imgs.items():
            if p["n4"]:
                res = intensity.n4_correct(im, p)
                native[n] = NativeChannel(
                    bias=res.bias, mask=res.mask, corrected=res.corrected, denoised=None
                )
            else:
                native[n] = NativeChannel(
                    bias=None, mask=intensity.head_mask(im), corrected=im, denoised=None
                )
    with _timed(timings, "denoise"):
        for n, ch in native.items():
            if p["denoise"] != "none":
                den = intensity.denoise(ch.corrected, p["denoise"], p)
                native[n] = NativeChannel(
                    bias=ch.bias, mask=ch.mask, corrected=ch.corrected, denoised=den
                )
    return native


def _coregister(
    work: dict[str, sitk.Image],
    ref_mask: sitk.Image,
    names: list[str],
    p: dict[str, Any],
    rseed: int,
) -> dict[str, sitk.Transform]:
    """Rigid transforms of the channels after the first onto the reference channel (identity
    when ``coregister`` is off)."""
    ref = names[0]
    coreg: dict[str, sitk.Transform] = {}
    if p["coregister"] and len(names) > 1:
        fixed = registration.downsample(work[ref], float(p["coreg_spacing"]))
        fmask = sitk.Resample(
            ref_mask,
            fixed,
            sitk.Transform(),
            sitk.sitkNearestNeighbor,
            0,
            sitk.sitkUInt8,
        )
    for k, n in enumerate(names[1:]):
        if p["coregister"]:
            moving = registration.downsample(work[n], float(p["coreg_spacing"]))
            coreg[n] = registration.rigid_register(
                fixed, moving, p, rseed + 1 + k, fmask, "coreg", p["coreg_init"]
            )
        else:
            coreg[n] = sitk.Euler3DTransform()
    return coreg


def _register(reference: sitk.Image, p: dict[str, Any], rseed: int) -> sitk.Transform:
    """Rigid + affine registration of the reference channel to the template (template -> native)."""
    tfixed, tmask = registration.template_fixed(
        float(p["template_spacing"]), float(p["template_mask_dilation_mm"])
    )
    moving = registration.downsample(reference, float(p["template_spacing"]))
    return registration.register_to_template(tfixed, moving, p, rseed, tmask)


def _resample_channels(
    work: dict[str, sitk.Image],
    names: list[str],
    coreg: dict[str, sitk.Transform],
    tx_ref: sitk.Transform,
    grid: sitk.Image,
    p: dict[str, Any],
) -> list[np.ndarray]:
    """Every channel resampled onto ``grid`` through its chain of transforms, as float32 arrays."""
    interp = _INTERPOLATORS[p["interpolation"]]
    resampled = []
    for n in names:
        tx = tx_ref if n == names[0] else registration.chain(tx_ref, coreg[n])
        resampled.append(to_array(sitk.Resample(work[n], grid, tx, interp, 0.0, sitk.sitkFloat32)))
    return resampled


def _resample_label(
    lab: sitk.Image | None, grid: sitk.Image, tx_ref: sitk.Transform, shape: tuple[int, ...]
) -> np.ndarray:
    """The label on ``grid`` (nearest neighbour, uint16); zeros of ``shape`` without a label."""
    if lab is None:
        return np.zeros(shape, np.uint16)
    return to_array(sitk.Resample(lab, grid, tx_ref, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16))


def _target(
    ref: sitk.Image, spacing: tuple[float, float, float], p: dict[str, Any]
) -> tuple[sitk.Image, np.ndarray, native_space.Crop | None]:
    """The output grid, its mask (template brain, or the scan's foreground) and the crop box
    (None on the template path). ``ref``: the reference channel as loaded (and reoriented)."""
    if not native_space.is_native(p):
        return reference_grid(spacing), to_array(template_brainmask(spacing)) > 0, None
    fg = native_space.foreground(ref, float(p["foreground_threshold"]))
    box = native_space.crop_box(fg, str(p["crop"]))
    grid = native_space.output_grid(ref, box, spacing)
    return grid, native_space.mask_on_grid(fg, ref, grid), box


def _write_outputs(
    out_dir: Path,
    stack: np.ndarray,
    lab_arr: np.ndarray,
    brain: np.ndarray,
    grid: sitk.Image,
    tx_ref: sitk.Transform,
) -> None:
    """image.nii.gz, label.nii.gz, brainmask.nii.gz and transform.tfm of one scan."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_image(from_array(stack, grid), out_dir / "image.nii.gz")
    write_image(from_array(lab_arr.astype(np.uint16), grid), out_dir / "label.nii.gz")
    write_image(from_array(brain.astype(np.uint8), grid), out_dir / "brainmask.nii.gz")
    _write_transform(tx_ref, out_dir / "transform.tfm")


def _qc_summary(
    scan: str,
    names: list[str],
    spacing: tuple[float, float, float],
    grid: sitk.Image,
    native_info: dict[str, dict[str, Any]],
    p: dict[str, Any],
    brain: np.ndarray,
    lab_arr: np.ndarray,
) -> dict[str, Any]:
    """The qc.json entries known once the outputs are written (truth and timings come later)."""
    steps = ("reorient", "n4", "denoise", "coregister", "register", "skull_strip", "normalise")
    method = ("template_init", "template_bounded_step")
    return {
        "scan": scan,
        "channels": names,
        "reference": names[0],
        "target_spacing": list(spacing),
        "grid_size": list(grid.GetSize()),
        "native": native_info,
        "steps": {k: p[k] for k in steps},
        "registration": {k: p[k] for k in method} if p["register"] else {},
        "brain_voxels": int(brain.sum()),
        "label_voxels": int((lab_arr > 0).sum()),
        "label_ids": sorted(int(v) for v in np.unique(lab_arr) if v > 0),
    }


def _write_qc(path: Path, qc: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    """Add the step timings to ``qc``, write it as qc.json and log them; return ``qc``."""
    qc["timings_s"] = timings
    write_json(path, qc)
    log.info(
        "%s preprocessed in %.1f s (%s)",
        qc["scan"],
        timings["total"],
        ", ".join(f"{k} {v:.2f}" for k, v in timings.items()),
    )
    return qc


def _write_transform(tx: sitk.Transform, path: Path) -> None:
    """Write an ITK transform file atomically."""
    with atomic_path(path) as tmp:
        sitk.WriteTransform(tx, str(tmp))

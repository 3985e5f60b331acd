"""Dataset fingerprint: native voxel spacings and the target spacing of preprocessing.

With ``spacing: auto`` the target follows nnU-Net's rule on the reference (first) channel: the
median spacing per axis; when the coarsest axis is more than 3x the finest other axis, that axis
takes the 10th percentile of its spacings instead (kept at least as large as the other axes).
Spacings are read from the headers only and expressed in RAS axis order (x: R-L, y: A-P, z: S-I),
the order of the template grid the scans are resampled to.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mripipe.core.errors import InputError
from mripipe.core.utils import write_json
from mripipe.data.manifest import channel_columns, read_manifest

log = logging.getLogger(__name__)

#: nnU-Net's anisotropy threshold.
ANISOTROPY_THRESHOLD = 3.0


def ras_spacing(path: Path) -> list[float]:
    """Voxel spacing of an image along the RAS axes, from its header only.

    Args:
        path: image file (3-D or 4-D; the 4th axis is ignored).

    Returns:
        ``[sx, sy, sz]`` in mm, where axis 0 is the voxel axis closest to R-L, 1 to A-P, 2 to S-I.

    Raises:
        ValueError: the file cannot be read.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"{path}: cannot read the image header") from None
    dim = reader.GetDimension()
    direction = np.array(reader.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    spacing = np.array(reader.GetSpacing(), dtype=float)[:3]
    out = [0.0, 0.0, 0.0]
    for voxel_axis in range(3):
        physical_axis = int(np.argmax(np.abs(direction[:, voxel_axis])))
        out[physical_axis] = float(spacing[voxel_axis])
    if min(out) <= 0:
        raise InputError(f"{path}: oblique or degenerate orientation, cannot map axes to RAS")
    return out


def nnunet_target_spacing(spacings: np.ndarray) -> tuple[list[float], int | None]:
    """nnU-Net's target spacing for a set of case spacings.

    Args:
        spacings: (N, 3) spacings in mm.

    Returns:
        The target spacing ``[x, y, z]`` and the index of the anisotropic axis (None if none).

    Worked example: spacings (1, 1, 5), (1, 1, 5), (1, 1, 3) -> median (1, 1, 5); 5 > 3 * 1, so
    z takes the 10th percentile of (5, 5, 3) = 3.4 -> (1, 1, 3.4).
    """
    spacings = np.asarray(spacings, dtype=float)
    if spacings.ndim != 2 or spacings.shape[1] != 3 or len(spacings) == 0:
        raise InputError(f"need an (N, 3) array of spacings, got shape {spacings.shape}")
    target = np.percentile(spacings, 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    if target[worst] > ANISOTROPY_THRESHOLD * max(target[i] for i in others):
        low = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(low, max(target[i] for i in others))
        return [float(v) for v in target], worst
    return [float(v) for v in target], None


def compute_fingerprint(manifest: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Spacings of every scan and the target spacing (configured, or ``auto``).

    Args:
        manifest: results/manifest.tsv (channel columns: :func:`mripipe.data.manifest.channel_columns`,
            in order; the first is the reference channel).
        params: the ``preprocess:`` section; ``spacing`` is ``[x, y, z]`` or ``"auto"``.

    Returns:
        ``{"target_spacing", "source": "config"|"auto", "reference_channel", "spacings":
        {scan: {channel: [x, y, z]}}, "median_spacing", "anisotropic_axis", "n_scans"}``.
    """
    table = read_manifest(manifest)
    channels = channel_columns(table)
    if not channels or table.empty:
        raise InputError(f"{manifest}: no scans or no channel column")
    spacings: dict[str, dict[str, list[float]]] = {}
    unreadable: list[str] = []
    for _, row in table.iterrows():
        spacings[row["scan"]] = {}
        for c in channels:
            if not row[c]:
                continue
            try:
                spacings[row["scan"]][c] = ras_spacing(Path(row[c]))
            except ValueError as exc:
                # One bad scan must not stop the others: it fails in its own preprocess job,
                # with the same message; the fingerprint is taken over the readable scans.
                log.warning("%s (left out of the fingerprint)", exc)
                unreadable.append(str(row[c]))
    ref = channels[0]
    ref_sp = np.array([s[ref] for s in spacings.values() if ref in s])
    if len(ref_sp) == 0:
        raise InputError(f"{manifest}: no image in the reference channel {ref!r}")
    auto, aniso = nnunet_target_spacing(ref_sp)
    setting = params.get("spacing", [2.0, 2.0, 2.0])
    if setting == "auto":
        target, source = auto, "auto"
    else:
        target = [float(v) for v in setting]
        if len(target) != 3 or min(target) <= 0:
            raise InputError(
                f"preprocess.spacing must be three positive numbers or 'auto', got {setting!r}"
            )
        source = "config"
    log.info(
        "target spacing %s (%s); nnU-Net rule would give %s",
        target,
        source,
        [round(v, 3) for v in auto],
    )
    return {
        "target_spacing": target,
        "source": source,
        "reference_channel": ref,
        "median_spacing": [float(v) for v in np.median(ref_sp, axis=0)],
        "auto_spacing": auto,
        "anisotropic_axis": aniso,
        "n_scans": len(spacings),
        "unreadable": unreadable,
        "spacings": spacings,
    }


def write_fingerprint(manifest: Path, params: dict[str, Any], out: Path) -> dict[str, Any]:
    """``mripipe fingerprint``: :func:`compute_fingerprint`, written to ``out``
    (``results/fingerprint.json``)."""
    fingerprint = compute_fingerprint(manifest, params)
    write_json(out, fingerprint)
    return fingerprint

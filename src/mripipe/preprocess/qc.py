"""Quality control of preprocessing: metrics against the phantom's truth and the QC table (the
per-scan qc.png is drawn by :mod:`mripipe.preprocess.montage`).

Definitions (also in docs/contract.md):

- registration error: mean over template brain voxels ``x`` (2 mm grid) of
  ``||T_est(x) - T_true(x)||`` in mm, both mapping template points to native points. For the
  co-registration of channel ``c`` onto the reference ``r``: ``T_est = C_c o T_true_r`` against
  ``T_true_c``, so only the co-registration error is measured.
- bias correlation: Pearson correlation of the estimated and the true multiplicative bias field
  over the head mask (native grid).
- PSNR: ``10 log10(peak^2 / MSE)`` over the head mask, against the noise-free version of the
  N4-corrected image (``clean * bias_true / bias_est``), ``peak`` its maximum in the mask; for
  the noisy (corrected, not denoised) and the denoised image.
- registration NCC relative to the dataset: the robust z-score ``(ncc - median) / sd`` of a
  scan's ``registration_ncc`` among the dataset's, ``sd = 1.4826 MAD`` (the standard deviation
  of normal values) floored at ``preprocess.registration_ncc_min_sd``. The ``ready`` step
  excludes scans below ``-preprocess.registration_ncc_max_z``; the QC table records both figures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mripipe.core.config import param
from mripipe.core.errors import InputError
from mripipe.core.imageio import read_image, to_array
from mripipe.core.template import reference_grid, template_brainmask
from mripipe.core.utils import atomic_path, read_json
from mripipe.preprocess.registration import chain, displacement

log = logging.getLogger(__name__)

#: Spacing (mm) of the template grid on which registration errors are averaged.
ERROR_GRID_MM = 2.0
#: 1.4826 x the median absolute deviation estimates the standard deviation of normal values.
MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class NativeChannel:
    """What preprocessing produced for one channel in its native (reoriented) space.

    Attributes:
        bias: estimated multiplicative bias field (None when N4 is off).
        mask: head mask, uint8.
        corrected: bias-corrected image before denoising.
        denoised: image after denoising (None when denoising is off).
    """

    bias: sitk.Image | None
    mask: sitk.Image
    corrected: sitk.Image
    denoised: sitk.Image | None


def mapping_error_mm(
    estimated: sitk.Transform, true: sitk.Transform, grid: sitk.Image, mask: np.ndarray
) -> float:
    """Mean distance ``||T_est(x) - T_true(x)||`` over the masked voxels of ``grid`` (mm).

    Args:
        estimated: estimated transform.
        true: true transform (same direction of mapping).
        grid: image defining the points (e.g. the template at 2 mm).
        mask: boolean array of shape (X, Y, Z) on ``grid``.

    Returns:
        The mean Euclidean distance in mm.
    """
    diff = displacement(estimated, grid) - displacement(true, grid)
    dist = np.linalg.norm(diff, axis=-1)
    return float(dist[mask.astype(bool)].mean())


def bias_correlation(estimated: np.ndarray, true: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two bias fields inside a mask.

    Args:
        estimated: (X, Y, Z) estimated field.
        true: (X, Y, Z) true field.
        mask: (X, Y, Z) boolean mask.

    Returns:
        The correlation in [-1, 1] (NaN when a field is constant in the mask).
    """
    m = mask.astype(bool)
    a, b = estimated[m].astype(np.float64), true[m].astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def psnr(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of ``image`` against ``reference`` inside ``mask``.

    ``peak`` is the maximum of ``reference`` in the mask; identical images give ``inf``.

    Args:
        image: (X, Y, Z) array.
        reference: (X, Y, Z) array.
        mask: (X, Y, Z) boolean mask.
    """
    m = mask.astype(bool)
    ref = reference[m].astype(np.float64)
    mse = float(np.mean((image[m].astype(np.float64) - ref) ** 2))
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(float(ref.max()) ** 2 / mse))


def _truth_image(path: Path, like: sitk.Image) -> np.ndarray:
    """A truth image reoriented like ``like`` (RAS), as (X, Y, Z) float array on its grid."""
    img = sitk.DICOMOrient(sitk.Cast(read_image(path), sitk.sitkFloat32), "RAS")
    if img.GetSize() != like.GetSize() or not np.allclose(
        img.GetOrigin(), like.GetOrigin(), atol=1e-3
    ):
        img = sitk.Resample(img, like, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return to_array(img)


def truth_metrics(
    truth_path: Path,
    native: dict[str, NativeChannel],
    reference: str,
    to_template: sitk.Transform | None,
    coreg: dict[str, sitk.Transform],
) -> dict[str, Any]:
    """Compare a scan's preprocessing with the phantom's ground truth (``truth.json``).

    Args:
        truth_path: the scan's truth.json (contract: per-channel ``clean``, ``bias``,
            ``noise_sigma``, ``to_template``; paths relative to the JSON's folder).
        native: per channel, what preprocessing produced in native space.
        reference: name of the reference channel.
        to_template: estimated template -> reference transform (None when not registered).
        coreg: estimated reference -> channel transforms of the other channels.

    Returns:
        ``{"template_error_mm": float, "coreg_error_mm": {ch: float}, "bias_corr": {ch: float},
        "psnr_noisy": {ch: float}, "psnr_denoised": {ch: float}, "psnr_gain_db": {ch: float}}``
        (keys present only where the step ran).
    """
    truth = read_json(truth_path)
    chans = truth.get("channels")
    if not isinstance(chans, dict) or reference not in chans:
        raise InputError(f"{truth_path}: no 'channels' entry for {reference!r}")
    base = truth_path.parent
    true_tx = {
        name: sitk.ReadTransform(str(base / spec["to_template"]))
        for name, spec in chans.items()
        if name in native and spec.get("to_template")
    }
    out: dict[str, Any] = {}
    grid = reference_grid((ERROR_GRID_MM,) * 3)
    brain = to_array(template_brainmask((ERROR_GRID_MM,) * 3)) > 0
    if to_template is not None and reference in true_tx:
        out["template_error_mm"] = mapping_error_mm(to_template, true_tx[reference], grid, brain)
    if coreg and reference in true_tx:
        out["coreg_error_mm"] = {
            name: mapping_error_mm(chain(true_tx[reference], tx), true_tx[name], grid, brain)
            for name, tx in coreg.items()
            if name in true_tx
        }
    for name, ch in native.items():
        spec = chans.get(name)
        if not spec:
            continue
        mask = to_array(ch.mask) > 0
        true_bias = _truth_image(base / spec["bias"], ch.corrected) if spec.get("bias") else None
        est_bias = to_array(ch.bias) if ch.bias is not None else np.ones(mask.shape, np.float32)
        if ch.bias is not None and true_bias is not None:
            out.setdefault("bias_corr", {})[name] = bias_correlation(est_bias, true_bias, mask)
        if spec.get("clean") and ch.denoised is not None:
            clean = _truth_image(base / spec["clean"], ch.corrected)
            ref = clean * (true_bias if true_bias is not None else 1.0) / est_bias
            noisy = psnr(to_array(ch.corrected), ref, mask)
            den = psnr(to_array(ch.denoised), ref, mask)
            out.setdefault("psnr_noisy", {})[name] = noisy
            out.setdefault("psnr_denoised", {})[name] = den
            out.setdefault("psnr_gain_db", {})[name] = den - noisy
    return out


@dataclass(frozen=True)
class RobustZ:
    """Where each value stands in its dataset, robustly.

    Attributes:
        median: median of the values.
        sd: ``1.4826 x`` their median absolute deviation, at least the floor asked for.
        z: per key, ``(value - median) / sd``.
    """

    median: float
    sd: float
    z: dict[str, float]


def robust_z(values: Mapping[str, float], min_sd: float) -> RobustZ:
    """Robust z-scores (median and scaled MAD) of ``values``, insensitive to a few outliers.

    Args:
        values: key (scan) -> value; at least one.
        min_sd: floor of the spread, so identical or nearly identical values do not turn a
            negligible difference into a large z.

    Raises:
        ValueError: no values, or a floor that is not positive while every value is equal.
    """
    if not values:
        raise ValueError("robust_z: no values")
    arr = np.array(list(values.values()), dtype=np.float64)
    median = float(np.median(arr))
    sd = max(MAD_TO_SD * float(np.median(np.abs(arr - median))), float(min_sd))
    if sd <= 0:
        raise ValueError("robust_z: the values do not spread and min_sd is 0")
    return RobustZ(median, sd, {k: (float(v) - median) / sd for k, v in values.items()})


def _ncc_columns(table: Any, min_sd: float) -> Any:
    """``registration_ncc_median`` and ``registration_ncc_z`` over the table's scans (in place)."""
    import pandas as pd

    if "registration_ncc" not in table or "scan" not in table:
        return table
    values = pd.to_numeric(table["registration_ncc"], errors="coerce")
    known = values.notna()
    if not known.any():
        return table
    rz = robust_z(dict(zip(table["scan"][known], values[known], strict=True)), min_sd)
    table["registration_ncc_median"] = round(rz.median, 4)
    table["registration_ncc_z"] = [round(rz.z[s], 2) if s in rz.z else None for s in table["scan"]]
    return table


def qc_table(
    qc_files: Sequence[Path], out_tsv: Path, out_plot: Path, params: dict[str, Any] | None = None
) -> Any:
    """Gather per-scan qc.json files into one table and a summary plot.

    Nested keys are flattened with dots (``timings_s.n4``, ``bias_corr.T1w``). With registered
    scans, ``registration_ncc_median`` and ``registration_ncc_z`` place each scan's correlation
    with the template among the table's (:func:`robust_z`).

    Args:
        qc_files: the qc.json files.
        out_tsv: table to write (one row per scan).
        out_plot: PNG with the step timings and, where truth exists, the quality metrics.
        params: the ``preprocess`` section (``registration_ncc_min_sd``: floor of the NCC spread).

    Returns:
        The table as a pandas DataFrame.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    rows = [read_json(p) for p in qc_files]
    table = pd.json_normalize(rows, sep=".")
    if "scan" in table:
        table = table.sort_values("scan").reset_index(drop=True)
    min_sd = float(param("preprocess", params or {}, "registration_ncc_min_sd"))
    table = _ncc_columns(table, min_sd)
    with atomic_path(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    groups = [
        ("timings_s.", "step time (s)"),
        ("truth.template_error_mm", "template reg. error (mm)"),
        ("truth.coreg_error_mm.", "co-reg. error (mm)"),
        ("truth.bias_corr.", "N4 bias correlation"),
        ("truth.psnr_gain_db.", "denoise PSNR gain (dB)"),
        ("registration_ncc", "NCC with the template"),
    ]
    # a key ending with a dot names a family of columns, any other key one column
    panels = [
        (t, [c for c in table.columns if (c.startswith(p) if p.endswith(".") else c == p)])
        for p, t in groups
    ]
    panels = [(t, cols) for t, cols in panels if cols]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.4), squeeze=False)
    for ax, (title, cols) in zip(axes[0], panels, strict=True):
        data = [pd.to_numeric(table[c], errors="coerce").dropna().to_numpy() for c in cols]
        ax.boxplot(data)
        ax.set_xticks(
            range(1, len(cols) + 1), [c.rsplit(".", 1)[-1] for c in cols], rotation=45, fontsize=7
        )
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"preprocessing QC, {len(table)} scans", fontsize=10)
    fig.tight_layout()
    with atomic_path(out_plot) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    log.info("QC table of %d scans -> %s", len(table), out_tsv)
    return table

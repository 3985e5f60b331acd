"""Evaluation plots (matplotlib, Agg backend, PNG): FROC with CI band, confusion heatmap, ROC
curves, Dice strip/box plot, prediction-vs-truth overlays."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mripipe.core.imageio import read_image, read_preprocessed, to_array  # noqa: E402
from mripipe.core.utils import atomic_path, rng  # noqa: E402

log = logging.getLogger(__name__)


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def froc_plot(froc: pd.DataFrame, grid: np.ndarray, band: np.ndarray, path: Path) -> None:
    """FROC curve (step, reachable operating points) with the bootstrap 95 % band.

    Args:
        froc: ``froc.tsv`` table (``fp_per_scan``, ``sensitivity``).
        grid: FP-per-scan values of the band, shape (G,).
        band: low/high sensitivity at each grid value, shape (G, 2) (NaN = no band).
        path: output PNG.
    """
    fig, ax = plt.subplots(figsize=(5, 4))
    lo, hi = 0.1, 10.0
    # Operating points at 0 FP/scan sit at the left edge; the best reachable sensitivity holds
    # for every larger FP budget, so the curve runs on to the right edge.
    fps = np.append(np.clip(froc["fp_per_scan"].to_numpy(dtype=float), lo, None), hi)
    sens = froc["sensitivity"].to_numpy(dtype=float)
    sens = np.append(sens, sens[-1] if len(sens) else 0.0)
    ax.step(fps, sens, where="post", label="FROC")
    if np.isfinite(band).any():
        ax.fill_between(grid, band[:, 0], band[:, 1], alpha=0.25, step="post", label="95 % CI")
    for k in (0.125, 0.25, 0.5, 1, 2, 4, 8):
        ax.axvline(k, color="0.85", lw=0.6, zorder=0)
    ax.set(xscale="log", xlim=(lo, hi), ylim=(0, 1.02), xlabel="mean false positives per scan",
           ylabel="lesion sensitivity", title="FROC")
    ax.legend(loc="lower right")
    _save(fig, path)


def confusion_plot(confusion: pd.DataFrame, path: Path, title: str) -> None:
    """Heatmap of a confusion matrix (rows true, columns predicted) with counts."""
    cm = confusion.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(cm) + 2, 1.1 * len(cm) + 1.5))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(cm.max(), 1))
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{int(v)}", ha="center", va="center",
                color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(cm)), list(confusion.columns))
    ax.set_yticks(range(len(cm)), list(confusion.index))
    ax.set(xlabel="predicted", ylabel="true", title=title)
    _save(fig, path)


def roc_plot(roc: pd.DataFrame, metrics: dict[str, Any], path: Path) -> None:
    """ROC curves of ``roc.tsv`` (one per ``curve``), AUROC in the legend."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, part in roc.groupby("curve", sort=False):
        auc = metrics.get(f"auroc_{name}", metrics.get("auroc"))
        label = f"{name} (AUROC {auc:.3f})" if isinstance(auc, float) and np.isfinite(auc) else str(name)
        ax.plot(part["fpr"], part["tpr"], label=label)
    ax.plot([0, 1], [0, 1], color="0.7", ls="--", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate",
           title="ROC")
    if len(roc):
        ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def dice_plot(per_case: pd.DataFrame, path: Path) -> None:
    """Per-scan Dice: box plot and jittered points, scans with and without lesions apart."""
    groups = [("with lesions", per_case.loc[per_case["n_lesions"] > 0, "dice"]),
              ("no lesion", per_case.loc[per_case["n_lesions"] == 0, "dice"])]
    groups = [(n, g.dropna().to_numpy(dtype=float)) for n, g in groups if len(g)]
    fig, ax = plt.subplots(figsize=(4, 4))
    if groups:
        ax.boxplot([g for _, g in groups], showfliers=False)
        jitter = rng(0, "plots", "dice-jitter")  # cosmetic; fixed so plots are identical
        for i, (_, g) in enumerate(groups, start=1):
            ax.scatter(i + jitter.uniform(-0.12, 0.12, len(g)), g, s=14, alpha=0.7, zorder=3)
        ax.set_xticks(range(1, len(groups) + 1), [f"{n}\n(n={len(g)})" for n, g in groups])
    ax.set(ylim=(-0.02, 1.02), ylabel="Dice", title="Dice per scan")
    _save(fig, path)


def overlay_plot(scan_dir: Path, prob_path: Path, threshold: float, path: Path) -> None:
    """Axial slice through the largest lesion (or the centre): image, truth and prediction contours.

    Args:
        scan_dir: ``results/preprocessed/{scan}`` (``image.nii.gz`` (C, X, Y, Z), ``label.nii.gz``).
        prob_path: ``{scan}_prob.nii.gz`` (X, Y, Z), or K+1 channels (C, X, Y, Z) of a
            multi-class model (the prediction is then the argmax's foreground).
        threshold: prediction threshold (single-class maps).
        path: output PNG.
    """
    scan = read_preprocessed(scan_dir)
    image = scan.image[-1]  # last channel (FLAIR in the default config)
    label = scan.label > 0
    prob = to_array(read_image(prob_path))
    pred = prob.argmax(axis=0) > 0 if prob.ndim == 4 else prob >= threshold
    per_slice = label.sum(axis=(0, 1))
    z = int(np.argmax(per_slice)) if per_slice.any() else label.shape[2] // 2
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(image[:, :, z].T, cmap="gray", origin="lower")
    if label[:, :, z].any():
        ax.contour(label[:, :, z].T.astype(float), levels=[0.5], colors="lime", linewidths=1)
    if pred[:, :, z].any():
        ax.contour(pred[:, :, z].T.astype(float), levels=[0.5], colors="red", linewidths=1)
    ax.set_title(f"{scan_dir.name} z={z}: truth (green), prediction (red)", fontsize=8)
    ax.axis("off")
    _save(fig, path)

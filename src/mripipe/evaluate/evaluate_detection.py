"""The standalone ``mripipe evaluate-detection``: lesion-level FROC/AP of any folders of maps.

Candidates and matching are :mod:`mripipe.core.matching`'s, aggregation :mod:`mripipe.core.froc`'s
(the definitions ``mripipe evaluate`` and validation use too).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mripipe.core.errors import InputError
from mripipe.core.froc import detection_metrics, froc_table
from mripipe.core.imageio import read_image, to_array
from mripipe.core.matching import detect_scan
from mripipe.core.utils import atomic_path, json_safe, write_json

log = logging.getLogger(__name__)

_SUFFIXES = (".nii.gz", ".nii", ".mha")


def _by_stem(folder: Path) -> dict[str, Path]:
    """Image files of a folder keyed by their name without the image suffix."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        suffix = next((s for s in _SUFFIXES if path.name.endswith(s)), None)
        if suffix is None or not path.is_file():
            continue
        stem = path.name[: -len(suffix)]
        if stem in files:
            raise InputError(f"{path}: same name as {files[stem]} (one image per name)")
        files[stem] = path
    return files


def pair_files(predictions: Path, labels: Path) -> list[tuple[str, Path, Path]]:
    """Pair prediction and label images by name (NIfTI ``.nii``/``.nii.gz`` and ``.mha``).

    Raises:
        ValueError: a folder holds no image, or a name has no partner (all such names listed).
    """
    preds, labs = _by_stem(Path(predictions)), _by_stem(Path(labels))
    if not labs:
        raise InputError(f"{labels}: no .nii, .nii.gz or .mha label images")
    only_pred, only_lab = sorted(set(preds) - set(labs)), sorted(set(labs) - set(preds))
    if only_pred:
        raise InputError(f"{predictions}: no label in {labels} for {', '.join(only_pred)}")
    if only_lab:
        raise InputError(f"{labels}: no prediction in {predictions} for {', '.join(only_lab)}")
    return [(stem, preds[stem], labs[stem]) for stem in sorted(labs)]


def evaluate_detection(predictions: Path, labels: Path, out_dir: Path, min_iou: float = 0.1,
                       threshold: float | None = None) -> dict[str, object]:
    """Evaluate a folder of detection/probability maps against a folder of label maps.

    Writes ``metrics.json`` (``froc_score``, ``sensitivity_at_fp``, ``ap``, ``auroc``,
    ``n_lesions``, ``n_scans``, plus the settings) and ``froc.tsv`` into ``out_dir``.

    Args:
        predictions: folder of maps, shape (X, Y, Z) each, paired by name with ``labels``.
        labels: folder of binary or instance label maps (lesions = connected components).
        out_dir: output folder (created).
        min_iou: minimum IoU for a candidate to match a lesion.
        threshold: candidate threshold; None = connected components of non-zero voxels.

    Returns:
        The metrics written to ``metrics.json``.
    """
    results = []
    for stem, pred_path, label_path in pair_files(Path(predictions), Path(labels)):
        prob = to_array(read_image(pred_path))
        label = to_array(read_image(label_path))
        if prob.shape != label.shape:
            raise InputError(
                f"{pred_path}: shape {prob.shape} differs from {label_path} shape {label.shape}")
        if prob.ndim != 3:
            raise InputError(f"{pred_path}: expected a scalar 3-D map, got shape {prob.shape}")
        results.append(detect_scan(stem, prob, label, threshold=threshold, min_overlap=min_iou))
        log.info("%s: %d lesions, %d TP, %d FP", stem, results[-1].n_lesions,
                 len(results[-1].tp_scores), len(results[-1].fp_scores))
    metrics = detection_metrics(results)
    metrics.update({"min_iou": min_iou, "threshold": threshold, "interpolate": False})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", json_safe(metrics))
    with atomic_path(out / "froc.tsv") as tmp:
        froc_table(results).to_csv(tmp, sep="\t", index=False)
    log.info("FROC score %s, AP %s, AUROC %s over %d scans (%d lesions) -> %s",
             metrics["froc_score"], metrics["ap"], metrics["auroc"], metrics["n_scans"],
             metrics["n_lesions"], out_dir)
    return metrics

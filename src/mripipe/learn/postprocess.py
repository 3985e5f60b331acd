"""Post-processing of the selected segmentation model, chosen on validation only.

The selected trial's lesion probabilities on its validation scans (sliding window, template space)
are pooled, and the probability threshold and minimum lesion volume that maximise the pooled
lesion Dice ``2 sum(TP) / (2 sum(TP) + sum(FP) + sum(FN))`` over every validation voxel are chosen
(false positives in lesion-free scans count). A connected component (26-connectivity) of the
thresholded map smaller than the minimum volume is removed. Ties go to the threshold nearest 0.5,
then the smaller minimum volume (:func:`mripipe.core.components.remove_small` applies it).

The lesion candidate threshold (the components behind FROC, AP and the case AUROC) is chosen on
the same predictions: the value in :data:`CANDIDATE_THRESHOLDS` (at most the chosen mask
threshold) with the highest validation FROC score, with the evaluation's own matching
(:mod:`mripipe.core.matching`, ``evaluate.min_overlap`` / ``overlap_measure`` /
``interpolate``); ties go to the value nearest 0.3. The test split is never read: ``select`` calls
this with the validation subjects of the trials' fold.

Multi-class models (K >= 2 foreground classes, :func:`choose_multiclass_postprocess`): the masks
are the argmax of the K + 1 probabilities, with no threshold or minimum volume to choose
(``{"method": "argmax"}``); the validation argmax Dice of each class is recorded. The candidate
threshold is ``evaluate.candidate_threshold`` when set, else chosen as above (capped at 0.5) on
the probability of the first of ``evaluate.detection_classes`` (a class, or a region of
``evaluate.regions``: the sum of its classes' probabilities), or of all foreground (1 - background)
when none is named.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from mripipe.core.components import components
from mripipe.core.config import with_defaults
from mripipe.core.errors import InputError
from mripipe.core.froc import detection_metrics
from mripipe.core.labels import label_spec
from mripipe.core.matching import detect_scan
from mripipe.learn.monitor import ValScan
from mripipe.learn.networks import segment_probability, segment_softmax

log = logging.getLogger(__name__)

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.2, 0.91, 0.05))
MIN_VOLUMES_MM3 = (0.0, 10.0, 20.0, 40.0, 80.0, 160.0)
CANDIDATE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)


def component_table(prob: np.ndarray, truth: np.ndarray, threshold: float) -> np.ndarray:
    """Size and lesion overlap (voxels) of each 26-connected component of ``prob >= threshold``.

    Returns:
        int64 ``(K, 2)``: ``[size, voxels inside truth]`` per component.
    """
    labels, k = components(prob >= threshold)
    if k == 0:
        return np.zeros((0, 2), dtype=np.int64)
    size = np.bincount(labels.ravel(), minlength=k + 1)[1:]
    hits = np.bincount(labels[truth].ravel(), minlength=k + 1)[1:]
    return np.stack([size, hits], axis=1).astype(np.int64)


def dice_grid(
    probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], voxel_mm3: float,
    thresholds: Sequence[float] = THRESHOLDS, min_volumes_mm3: Sequence[float] = MIN_VOLUMES_MM3,
) -> list[dict[str, float]]:
    """Pooled lesion Dice of every (threshold, minimum volume) pair.

    Args:
        probs: lesion probabilities per scan, ``(X, Y, Z)`` each.
        truths: boolean lesion masks on the same grids.
        voxel_mm3: the volume of one voxel.
        thresholds: probability thresholds to try.
        min_volumes_mm3: minimum lesion volumes to try (0 keeps every component).

    Returns:
        ``[{"threshold", "min_lesion_mm3", "dice"}, ...]``, thresholds outer.
    """
    n_truth = float(sum(int(t.sum()) for t in truths))
    rows = []
    for thr in thresholds:
        tables = [component_table(p, t, thr) for p, t in zip(probs, truths, strict=True)]
        comps = np.concatenate(tables) if tables else np.zeros((0, 2), np.int64)
        for vol in min_volumes_mm3:
            kept = comps[comps[:, 0] * voxel_mm3 >= vol]
            tp, pred = float(kept[:, 1].sum()), float(kept[:, 0].sum())
            dice = 2 * tp / (pred + n_truth) if pred + n_truth > 0 else 1.0
            rows.append({"threshold": float(thr), "min_lesion_mm3": float(vol), "dice": dice})
    return rows


def best_setting(grid: Sequence[dict[str, float]]) -> dict[str, float]:
    """The row of :func:`dice_grid` with the highest Dice; ties: threshold nearest 0.5, then the
    smaller minimum volume."""
    return min(grid, key=lambda r: (-round(r["dice"], 12), abs(r["threshold"] - 0.5),
                                    r["min_lesion_mm3"]))


def choose_candidate_threshold(
    probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], mask_threshold: float,
    detection: Mapping[str, Any] | None = None, names: Sequence[str] | None = None,
) -> tuple[float, list[dict[str, float]]]:
    """The lesion candidate threshold with the best validation FROC score.

    Args:
        probs: lesion probabilities per validation scan.
        truths: boolean lesion masks (lesions = their 26-connected components).
        mask_threshold: the chosen mask threshold; candidates never start above it.
        detection: ``min_overlap``, ``overlap_measure``, ``interpolate`` (the ``evaluate`` section).
        names: scan ids (for the log).

    Returns:
        ``(threshold, rows)``: the choice, and ``{"candidate_threshold", "froc_score",
        "sensitivity_at_1"}`` per value tried.
    """
    det = dict(detection or {})
    names = list(names) if names is not None else [f"val-{i}" for i in range(len(probs))]
    rows = []
    for c in (c for c in CANDIDATE_THRESHOLDS if c <= mask_threshold + 1e-9):
        found = [detect_scan(n, p, t, threshold=c, min_overlap=float(det.get("min_overlap", 0.1)),
                             measure=str(det.get("overlap_measure", "iou")))
                 for n, p, t in zip(names, probs, truths, strict=True)]
        m = detection_metrics(found, bool(det.get("interpolate", False)))
        at_fp = cast(dict[str, float], m["sensitivity_at_fp"])
        rows.append({"candidate_threshold": c, "froc_score": float(cast(float, m["froc_score"])),
                     "sensitivity_at_1": float(at_fp["1"])})
    if not rows:
        return float(mask_threshold), rows
    best = min(rows, key=lambda r: (-round(r["froc_score"], 12), abs(r["candidate_threshold"] - 0.3)))
    return best["candidate_threshold"], rows


def choose_postprocess(
    model: nn.Module | Sequence[nn.Module], scans: Sequence[ValScan], roi_size: Sequence[int], voxel_mm3: float,
    sw_batch_size: int = 2, overlap: float = 0.5, detection: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Choose the threshold, minimum lesion volume and candidate threshold on the validation scans.

    Args:
        model: the selected segmentation network (eval mode), or one network per scan (a fold
            ensemble's out-of-fold predictions: each member on its own fold's validation scans).
        scans: the validation scans (:func:`mripipe.learn.monitor.load_val_scans`).
        roi_size: sliding-window size (the training patch size).
        voxel_mm3: template-grid voxel volume.
        sw_batch_size: windows per forward pass.
        overlap: sliding-window overlap (that of ``predict``).
        detection: the evaluation's matching settings (see :func:`choose_candidate_threshold`).

    Returns:
        ``{"threshold", "min_lesion_mm3", "val_dice_pooled", "val_dice_pooled_at_0.5",
        "candidate_threshold", "val_froc_score", "n_val_scans", "criterion", "grid",
        "candidate_grid"}`` (the grids as rows, for selected.json).
    """
    probs, truths = [], []
    models = [model] * len(scans) if isinstance(model, nn.Module) else list(model)
    with torch.no_grad():
        for m, s in zip(models, scans, strict=True):
            probs.append(segment_probability(m, s.image, roi_size, sw_batch_size, overlap).numpy())
            truths.append(s.label[0].numpy() > 0)
    grid = dice_grid(probs, truths, voxel_mm3)
    best = best_setting(grid)
    plain = next(r["dice"] for r in grid if r["threshold"] == 0.5 and r["min_lesion_mm3"] == 0.0)
    cand, cand_grid = choose_candidate_threshold(probs, truths, best["threshold"], detection,
                                                 [s.scan for s in scans])
    froc = next((r["froc_score"] for r in cand_grid if r["candidate_threshold"] == cand), float("nan"))
    log.info("post-processing on %d validation scans: threshold %.2f, min lesion %.0f mm3 "
             "(pooled Dice %.4f; %.4f at 0.5 without a minimum)", len(scans), best["threshold"],
             best["min_lesion_mm3"], best["dice"], plain)
    log.info("candidate threshold %.2f (validation FROC score %.4f)", cand, froc)
    return {"threshold": best["threshold"], "min_lesion_mm3": best["min_lesion_mm3"],
            "val_dice_pooled": best["dice"], "val_dice_pooled_at_0.5": plain,
            "candidate_threshold": cand, "val_froc_score": froc,
            "n_val_scans": len(scans), "criterion": "pooled validation Dice; candidates: validation FROC score",
            "grid": grid, "candidate_grid": cand_grid}


def detection_target(names: Sequence[str] | Mapping[str, int], detection: Mapping[str, Any] | None
                     ) -> tuple[str, list[int]]:
    """The name and class indices (1..K) whose summed probability gives the candidates of the
    first detection class (a class or a region of ``detection["regions"]``, resolved as evaluation
    does: :func:`mripipe.core.labels.label_spec`); all foreground when ``detection_classes`` is
    empty. ``names``: the label map, or the K class names (their values taken as 1..K)."""
    det = dict(detection or {})
    labels = dict(names) if isinstance(names, Mapping) else {n: k for k, n in enumerate(names, start=1)}
    spec = label_spec(labels, {"regions": det.get("regions") or {},
                               "detection_classes": det.get("detection_classes") or []})
    if not spec.detection:
        return "foreground", list(range(1, spec.n_classes + 1))
    name, values = next(iter(spec.detection.items()))
    return name, spec.channels(values)


def choose_multiclass_postprocess(
    model: nn.Module | Sequence[nn.Module], scans: Sequence[ValScan], roi_size: Sequence[int],
    names: Sequence[str] | Mapping[str, int],
    sw_batch_size: int = 2, overlap: float = 0.5, detection: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Argmax post-processing of a K >= 2 class model, recorded with its validation Dice.

    Args:
        model: the selected network (K + 1 outputs, eval mode), or one network per scan (a fold
            ensemble's members, each on its own fold's validation scans).
        scans: the validation scans, labels holding the class indices 0..K.
        roi_size: sliding-window size.
        names: the label map, or the K foreground class names (output channels 1..K).
        sw_batch_size: windows per forward pass.
        overlap: sliding-window overlap (that of ``predict``).
        detection: the ``evaluate`` matching settings, ``detection_classes``, ``regions`` and
            ``candidate_threshold`` (a number skips the choice).

    Returns:
        ``{"method": "argmax", "val_dice_pooled", "val_dice_pooled_<name>", "candidate_threshold",
        "candidate_class", "val_froc_score", "n_val_scans", "criterion", "candidate_grid"}``.
    """
    det = dict(detection or {})
    target, members = detection_target(names, det)
    tp, total = np.zeros(len(names)), np.zeros(len(names))
    probs, truths = [], []
    models = [model] * len(scans) if isinstance(model, nn.Module) else list(model)
    with torch.no_grad():
        for m, s in zip(models, scans, strict=True):
            prob = segment_softmax(m, s.image, roi_size, sw_batch_size, overlap).numpy()
            pred, truth = prob.argmax(0), s.label[0].numpy().astype(np.int64)
            for c in range(1, len(names) + 1):
                tp[c - 1] += float(((pred == c) & (truth == c)).sum())
                total[c - 1] += float((pred == c).sum() + (truth == c).sum())
            probs.append(prob[members].sum(0))
            truths.append(np.isin(truth, members))
    dice = [2 * t / n if n > 0 else 1.0 for t, n in zip(tp, total, strict=True)]
    fixed = det.get("candidate_threshold")
    if fixed is not None:
        cand, cand_grid = float(fixed), list[dict[str, float]]()
    else:
        cand, cand_grid = choose_candidate_threshold(probs, truths, 0.5, det, [s.scan for s in scans])
    froc = next((r["froc_score"] for r in cand_grid if r["candidate_threshold"] == cand), float("nan"))
    log.info("post-processing of %d classes on %d validation scans: argmax (pooled Dice %s); "
             "candidate threshold %.2f on %s", len(names), len(scans),
             ", ".join(f"{n} {d:.4f}" for n, d in zip(names, dice, strict=True)), cand, target)
    return {"method": "argmax", "val_dice_pooled": float(np.mean(dice)),
            **{f"val_dice_pooled_{n}": float(d) for n, d in zip(names, dice, strict=True)},
            "candidate_threshold": cand, "candidate_class": target, "val_froc_score": froc,
            "n_val_scans": len(scans),
            "criterion": "argmax; candidates: " + ("evaluate.candidate_threshold" if fixed is not None
                                                   else f"validation FROC score of {target}"),
            "candidate_grid": cand_grid}


def validation_postprocess(trial_dir: str | Path, inputs: Mapping[str, Any], fold: int,
                           settings: Mapping[str, Any],
                           members: Mapping[int, str | Path] | None = None) -> dict[str, Any]:
    """The post-processing of the selected trial: chosen on its fold's validation scans, unless
    ``predict.threshold`` / ``predict.min_lesion_mm3`` set it explicitly (an override).

    Args:
        trial_dir: the selected trial folder (``checkpoint.pt``).
        inputs: ``manifest``, ``splits`` (paths) and ``preprocessed`` (folder) of ``select``.
        fold: the fold the trials trained on.
        settings: the package settings (``predict`` section, ``target_spacing``).
        members: a fold ensemble, ``{fold: folder}`` (:func:`mripipe.learn.folds.fold_members`):
            chosen on the pooled out-of-fold predictions, each member on its fold's validation
            scans (default: the selected trial alone on ``fold``).

    Returns:
        :func:`choose_postprocess`'s result, with ``threshold`` and ``min_lesion_mm3`` replaced
        by any override and ``override`` naming the replaced keys.
    """
    from mripipe.core.split_guard import load_splits
    from mripipe.learn.monitor import load_val_scans
    from mripipe.learn.networks import load_trained

    predict = with_defaults("predict", settings.get("predict"))  # the schema's defaults, one place
    folds = load_splits(inputs["splits"], "select")["folds"]
    models: list[nn.Module] = []
    scans: list[ValScan] = []
    for f, member in sorted(dict(members or {fold: trial_dir}).items()):
        model, ckpt = load_trained(member, "cpu")
        info = ckpt.meta
        labels = info.labels if info.n_classes > 2 else None
        if info.n_classes > 2 and labels is None:
            raise InputError(f"{member}: a checkpoint of {info.n_classes} outputs without its label map")
        scans += load_val_scans(inputs["manifest"], inputs["preprocessed"], list(folds[f]["val"]),
                                labels=labels)
        models += [model] * (len(scans) - len(models))
    if labels is not None:  # multi-class: argmax, nothing to threshold
        return choose_multiclass_postprocess(
            models, scans, predict.get("roi_size") or info.roi_size, dict(labels),
            int(predict["sw_batch_size"]), float(predict["sw_overlap"]),
            settings.get("evaluate")) | {"override": []}
    voxel_mm3 = float(np.prod([float(s) for s in settings["target_spacing"]]))
    chosen = choose_postprocess(models, scans, predict.get("roi_size") or info.roi_size, voxel_mm3,
                                int(predict["sw_batch_size"]),
                                float(predict["sw_overlap"]), settings.get("evaluate"))
    override = {k: float(predict[k]) for k in ("threshold", "min_lesion_mm3")
                if predict.get(k) is not None}
    return chosen | override | {"override": sorted(override)}

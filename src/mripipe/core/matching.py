"""Lesion candidates and one-to-one matching: the definitions evaluation and validation share.

Definitions (DESIGN.md, "Definitions the evaluation must follow"; aggregation in
:mod:`mripipe.core.froc`):

- Candidates are the 26-connected components of the thresholded probability map (``prob >=
  threshold``; without a threshold, ``prob > 0``), each scored by its maximum probability.
- A candidate and a true lesion may match when their overlap (IoU by default, Dice as an option)
  is at least ``min_overlap``; with ``rule="centre"`` they may match when the candidate's centre
  of mass lies inside the lesion (the CAMELYON/MONAI rule), ties then going to the higher score.
- Matching is one-to-one and maximises first the number of pairs, then their total overlap
  (``scipy.optimize.linear_sum_assignment``). Matched candidate = TP at its score; unmatched lesion
  = miss; unmatched candidate = FP unless it could have matched some lesion, then it is ignored.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from mripipe.core.components import components
from mripipe.core.errors import InputError
from mripipe.core.froc import ScanDetections

log = logging.getLogger(__name__)

_EPS = 1e-12  # an overlap "exactly at" the minimum must not fail through rounding


def find_candidates(prob: np.ndarray, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Lesion candidates of a probability (or detection) map.

    Args:
        prob: probability map, shape (X, Y, Z).
        threshold: keep voxels with ``prob >= threshold``; ``None`` keeps non-zero voxels, so a
            map of blobs carrying constant scores is evaluated as given.

    Returns:
        ``(labels, scores)``: candidate labels (X, Y, Z), 0 = background, and the maximum
        probability of each candidate 1..n, shape (n,).
    """
    prob = np.asarray(prob, dtype=np.float64)
    mask = prob > 0 if threshold is None else prob >= threshold
    labels, n = components(mask)
    if n == 0:
        return labels, np.zeros(0)
    scores = np.asarray(ndimage.maximum(prob, labels, index=np.arange(1, n + 1)), dtype=np.float64)
    return labels, scores


def lesion_labels(label: np.ndarray, instances: bool = False) -> tuple[np.ndarray, int]:
    """True lesions of a label map (non-zero = lesion).

    Args:
        label: binary or instance label map, shape (X, Y, Z).
        instances: when True and the map holds more than one non-zero id, each id is one lesion
            (instance ids preserved by preprocessing); otherwise lesions are the 26-connected
            components of the non-zero voxels.

    Returns:
        ``(labels, n)``: lesions numbered 1..n (X, Y, Z) and their count.
    """
    label = np.asarray(label)
    if instances:
        ids = np.unique(label[label != 0])
        if len(ids) > 1:
            relabelled = np.zeros(label.shape, dtype=np.int32)
            relabelled[label != 0] = np.searchsorted(ids, label[label != 0]) + 1
            return relabelled, len(ids)
    return components(label != 0)


def overlap_matrix(cand: np.ndarray, n_cand: int, les: np.ndarray, n_les: int,
                   measure: str = "iou") -> np.ndarray:
    """Pairwise overlap of candidates and lesions.

    Args:
        cand: candidate labels 0..n_cand, shape (X, Y, Z).
        n_cand: number of candidates.
        les: lesion labels 0..n_les, same shape.
        n_les: number of lesions.
        measure: ``"iou"`` (|A∩B| / |A∪B|) or ``"dice"`` (2|A∩B| / (|A|+|B|)).

    Returns:
        Overlaps, shape (n_cand, n_les).
    """
    if measure not in ("iou", "dice"):
        raise InputError(f"unknown overlap measure {measure!r} (iou or dice)")
    size_c = np.bincount(cand.ravel(), minlength=n_cand + 1)[1:].astype(np.float64)
    size_l = np.bincount(les.ravel(), minlength=n_les + 1)[1:].astype(np.float64)
    both = (cand > 0) & (les > 0)
    pair = (cand[both].astype(np.int64) - 1) * n_les + (les[both].astype(np.int64) - 1)
    inter = np.bincount(pair, minlength=n_cand * n_les).astype(np.float64).reshape(n_cand, n_les)
    sums = size_c[:, None] + size_l[None, :]
    if measure == "iou":
        return inter / np.maximum(sums - inter, 1.0)
    return 2.0 * inter / np.maximum(sums, 1.0)


def match(eligible: np.ndarray, weight: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one matching: most pairs first, then the largest total weight.

    Args:
        eligible: which (candidate, lesion) pairs may match, boolean, shape (M, N).
        weight: tie-break weight of each pair in [0, 1] (the overlap), shape (M, N).

    Returns:
        Matched ``(candidate index, lesion index)`` pairs (0-based).
    """
    m, n = eligible.shape
    if m == 0 or n == 0 or not eligible.any():
        return []
    # A pair is worth more than any possible total of tie-break weights (each <= 1), so the
    # assignment maximises the count first and the total weight second.
    big = float(min(m, n) + 1)
    gain = np.where(eligible, big + np.clip(weight, 0.0, 1.0), 0.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if eligible[r, c]]


def detect_scan(scan: str, prob: np.ndarray, label: np.ndarray, threshold: float | None = 0.5,
                min_overlap: float = 0.1, measure: str = "iou", rule: str = "overlap",
                instances: bool = False) -> ScanDetections:
    """Candidates of one scan matched to its true lesions.

    Args:
        scan: scan id (kept in the result).
        prob: probability map, shape (X, Y, Z).
        label: binary or instance label map, shape (X, Y, Z).
        threshold: candidate threshold (see :func:`find_candidates`).
        min_overlap: minimum overlap for a pair to be eligible (``rule="overlap"``).
        measure: ``"iou"`` or ``"dice"``.
        rule: ``"overlap"`` (DESIGN.md) or ``"centre"`` (candidate centre of mass inside the
            lesion, the CAMELYON/MONAI rule; the higher score wins among eligible candidates).
        instances: see :func:`lesion_labels`.

    Returns:
        The scan's :class:`ScanDetections`.
    """
    if prob.shape != label.shape:
        raise InputError(f"{scan}: probability map {prob.shape} and label {label.shape} differ")
    cand, scores = find_candidates(prob, threshold)
    les, n_les = lesion_labels(label, instances=instances)
    n_cand = len(scores)
    if rule == "overlap":
        weight = overlap_matrix(cand, n_cand, les, n_les, measure)
        eligible = weight >= min_overlap - _EPS
    elif rule == "centre":
        eligible = np.zeros((n_cand, n_les), dtype=bool)
        if n_cand:
            centres = ndimage.center_of_mass(np.ones(cand.shape), cand, np.arange(1, n_cand + 1))
            for i, c in enumerate(centres):
                hit = les[tuple(int(round(v)) for v in c)]
                if hit:
                    eligible[i, hit - 1] = True
        weight = np.repeat(scores[:, None], n_les, axis=1) if n_cand else np.zeros((0, n_les))
    else:
        raise InputError(f"unknown matching rule {rule!r} (overlap or centre)")
    pairs = match(eligible, weight)
    tp = np.zeros(n_cand, dtype=bool)
    lesion_scores = np.zeros(n_les)
    for c, lesion in pairs:
        tp[c] = True
        lesion_scores[lesion] = scores[c]
    ignored = ~tp & eligible.any(axis=1)
    fp = ~tp & ~ignored
    return ScanDetections(
        scan=scan, tp_scores=scores[tp], fp_scores=scores[fp], n_ignored=int(ignored.sum()),
        n_lesions=n_les, case_score=float(scores.max()) if n_cand else 0.0,
        lesion_scores=lesion_scores,
    )



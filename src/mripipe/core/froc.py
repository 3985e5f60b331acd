"""Lesion-level aggregation over scans: FROC curve, sensitivity at k FP, FROC score, AP, AUROC.

Definitions as in DESIGN.md (see :mod:`mripipe.core.matching` for candidates and matching): FROC =
sensitivity against mean FP per scan over every score threshold; sensitivity at k FP per scan =
best reachable operating point with FP <= k (linear interpolation as an option); FROC score = mean
at 1/8 ... 8 FP per scan; AP = scikit-learn's step integral with recall over all lesions (a miss is never
reached, precision 0); case AUROC from each scan's highest candidate score.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mripipe.core.roc import average_precision, roc_auc

log = logging.getLogger(__name__)

FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
_EPS = 1e-12


@dataclass(frozen=True)
class ScanDetections:
    """The matching outcome of one scan.

    Attributes:
        scan: scan id.
        tp_scores: scores of the matched candidates, shape (n_tp,).
        fp_scores: scores of the false-positive candidates, shape (n_fp,).
        n_ignored: candidates neither TP nor FP (they could match a lesion already taken).
        n_lesions: true lesions in the scan (n_tp + misses).
        case_score: highest candidate score, 0 without candidates.
        lesion_scores: per true lesion the score of its matched candidate, 0 when missed,
            shape (n_lesions,).
    """

    scan: str
    tp_scores: np.ndarray
    fp_scores: np.ndarray
    n_ignored: int
    n_lesions: int
    case_score: float
    lesion_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_missed(self) -> int:
        """True lesions without a matched candidate."""
        return self.n_lesions - len(self.tp_scores)



def froc_curve(results: Sequence[ScanDetections]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FROC operating points over every score threshold, strictest first.

    Args:
        results: per-scan detections (a scan may appear several times, e.g. in a bootstrap).

    Returns:
        ``(thresholds, fp_per_scan, sensitivity)``, each of shape (T + 1,): the first point is
        ``(inf, 0, 0)`` (nothing kept), then one point per distinct TP/FP score, descending.
        Sensitivity is NaN when the set holds no lesion.
    """
    tp = np.concatenate([r.tp_scores for r in results]) if results else np.zeros(0)
    fp = np.concatenate([r.fp_scores for r in results]) if results else np.zeros(0)
    n_lesions = sum(r.n_lesions for r in results)
    n_scans = max(len(results), 1)
    thresholds = np.unique(np.concatenate([tp, fp]))[::-1]
    n_tp = np.searchsorted(np.sort(-tp), -thresholds, side="right")  # count of tp >= t
    n_fp = np.searchsorted(np.sort(-fp), -thresholds, side="right")
    sens = n_tp / n_lesions if n_lesions else np.full(len(thresholds), np.nan)
    return (np.concatenate([[np.inf], thresholds]),
            np.concatenate([[0.0], n_fp / n_scans]),
            np.concatenate([[0.0 if n_lesions else np.nan], sens]))


def sensitivity_at(fp_per_scan: np.ndarray, sensitivity: np.ndarray,
                   rates: Sequence[float] = FP_RATES, interpolate: bool = False) -> np.ndarray:
    """Sensitivity at given mean FP per scan.

    Args:
        fp_per_scan: operating points' mean FP per scan, shape (T,), as from :func:`froc_curve`.
        sensitivity: their sensitivities, shape (T,).
        rates: FP-per-scan values k.
        interpolate: False: the best reachable operating point with FP <= k. True: linear
            interpolation between operating points (as MONAI and LUNA16), never below the
            reachable value.

    Returns:
        Sensitivities, shape (len(rates),).
    """
    rates_a = np.asarray(rates, dtype=np.float64)
    if len(sensitivity) == 0 or np.isnan(sensitivity).all():
        return np.full(len(rates_a), np.nan)
    reach = np.array([sensitivity[fp_per_scan <= k + _EPS].max() for k in rates_a])
    if not interpolate:
        return reach
    order = np.lexsort((sensitivity, fp_per_scan))  # FP ascending, then sensitivity ascending
    return np.maximum(np.interp(rates_a, fp_per_scan[order], sensitivity[order]), reach)


def froc_score(fp_per_scan: np.ndarray, sensitivity: np.ndarray,
               rates: Sequence[float] = FP_RATES, interpolate: bool = False) -> float:
    """Mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 FP per scan (NaN without lesions)."""
    return float(np.mean(sensitivity_at(fp_per_scan, sensitivity, rates, interpolate)))


def lesion_ap(results: Sequence[ScanDetections]) -> float:
    """Lesion-level average precision: the step integral of precision over recall.

    ``AP = sum_k (R_k - R_{k-1}) * P_k`` over the candidates' score thresholds, as scikit-learn
    computes it, with recall normalised by *all* true lesions. A missed lesion is a positive that
    no threshold reaches (it enters below every candidate, at precision 0), so the recall it
    leaves out adds nothing and every miss lowers AP. This equals scikit-learn's AP over the
    candidates times the share of lesions that were matched.

    DESIGN.md's literal "missed lesions as positives with score 0" would instead give the missed
    lesions' recall the precision of the lowest threshold: a detector that finds nothing and
    raises no false positive would score AP = 1. The definition here keeps DESIGN's intent
    ("missing lesions lowers AP") and is the one detection benchmarks use (VOC, COCO).

    Returns:
        AP in [0, 1], NaN when the set holds no lesion.
    """
    tp = np.concatenate([np.asarray(r.tp_scores, dtype=float) for r in results] or [np.zeros(0)])
    fp = np.concatenate([np.asarray(r.fp_scores, dtype=float) for r in results] or [np.zeros(0)])
    n_lesions = len(tp) + sum(r.n_missed for r in results)
    if n_lesions == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    y = np.concatenate([np.ones(len(tp)), np.zeros(len(fp))])
    ap_found = average_precision(y, np.concatenate([tp, fp]))
    return float(ap_found * len(tp) / n_lesions)


def case_auroc(results: Sequence[ScanDetections]) -> float:
    """AUROC of the scans' highest candidate score against "scan has a lesion" (NaN if one class)."""
    y = np.array([r.n_lesions > 0 for r in results], dtype=int)
    if len(np.unique(y)) < 2:
        return float("nan")
    return roc_auc(y, [r.case_score for r in results])


def detection_metrics(results: Sequence[ScanDetections], interpolate: bool = False,
                      rates: Sequence[float] = FP_RATES) -> dict[str, object]:
    """Headline detection metrics of a set of scans.

    Returns:
        ``{"froc_score", "sensitivity_at_fp": {k: s}, "ap", "auroc", "n_lesions", "n_scans"}``.
    """
    _, fps, sens = froc_curve(results)
    at = sensitivity_at(fps, sens, rates, interpolate)
    return {
        "froc_score": float(np.mean(at)),
        "sensitivity_at_fp": {_rate_key(k): float(s) for k, s in zip(rates, at, strict=True)},
        "ap": lesion_ap(results),
        "auroc": case_auroc(results),
        "n_lesions": int(sum(r.n_lesions for r in results)),
        "n_scans": len(results),
    }


def _rate_key(k: float) -> str:
    """JSON key of an FP rate: ``0.125``, ``1``, ``8``."""
    return f"{k:g}"


def froc_table(results: Sequence[ScanDetections]) -> pd.DataFrame:
    """The FROC curve as a table: ``threshold``, ``fp_per_scan``, ``sensitivity``, ``n_tp``, ``n_fp``."""
    thr, fps, sens = froc_curve(results)
    n_scans = max(len(results), 1)
    n_lesions = sum(r.n_lesions for r in results)
    return pd.DataFrame({
        "threshold": thr,
        "fp_per_scan": fps,
        "sensitivity": sens,
        "n_tp": np.rint(np.nan_to_num(sens) * n_lesions).astype(int),
        "n_fp": np.rint(fps * n_scans).astype(int),
    })



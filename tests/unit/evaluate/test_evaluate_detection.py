"""Lesion detection: crafted scans with hand-worked answers, MONAI FROC agreement, the CLI.

Crafted cohort (10^3 voxels per scan, threshold 0.5, min IoU 0.1). Boxes are written
``[x0:x1, y0:y1, z0:z1]`` (numpy slices); every candidate/lesion is a separate 26-component.

| scan | lesions (voxels)                          | candidates (voxels, score)                    | expected                                  |
|------|-------------------------------------------|-----------------------------------------------|-------------------------------------------|
| A    | L1 [1:3,1:3,1:3] (8); L2 [6:8,6:8,6:8] (8)| C [1:3,1:3,1:3] 0.6 with one voxel 0.9; a     | hit: TP 0.9 (IoU 1); L2 missed; the 0.4   |
|      |                                           | voxel 0.4 elsewhere (below threshold)         | voxel is no candidate                     |
| B    | L [1:5,1:3,1:3] (16)                      | C1 [1:3,1:3,1:3] (8) 0.8, IoU 8/16 = 0.5;     | two candidates on one lesion: C1 TP 0.8   |
|      |                                           | C2 [4:5,1:3,1:3] (4) 0.95, IoU 4/16 = 0.25    | (larger overlap), C2 ignored              |
| C    | L1 [1:3,1:3,1:3] (8); L2 [4:6,1:3,1:3] (8)| C [1:6,1:3,1:3] (20) 0.85, IoU 0.4 with each  | candidate touching two lesions: 1 TP 0.85,|
|      |                                           |                                               | 1 miss                                    |
| D    | L1 [1:3,1:3,1:6] (20); L2 [4:8,1:3,1:3]   | C1 [1:5,1:3,1:3] (16) 0.6: IoU(L1) = 8/28,    | assignment beats greedy: C1-L2, C2-L1,    |
|      | (16)                                      | IoU(L2) = 4/28; C2 [1:3,1:3,5:6] (4) 0.7:     | 2 TP (greedy by IoU: C1-L1, 1 TP only)    |
|      |                                           | IoU(L1) = 4/20                                |                                           |
| E    | none                                      | C [2:4,2:4,2:4] 0.78                          | empty scan with a false positive: FP 0.78 |
| F    | L [1:6,1:3,1:2] (10); L' [1:6,5:7,1:2] +  | C1 voxel (1,1,1) 0.65: IoU 1/10 = 0.1;        | IoU exactly at the minimum: TP 0.65;      |
|      | voxel (6,5,1) (11)                        | C2 voxel (1,5,1) 0.75: IoU 1/11 < 0.1         | just below: FP 0.75 and L' missed         |
| G    | none                                      | none                                          | case score 0                              |

Totals: 7 scans, 9 lesions, TP scores {0.9, 0.85, 0.8, 0.7, 0.65, 0.6}, FP {0.78, 0.75}, 3 missed.
FROC points (threshold: FP/scan, sensitivity): inf: 0, 0 | 0.9: 0, 1/9 | 0.85: 0, 2/9 |
0.8: 0, 3/9 | 0.78: 1/7, 3/9 | 0.75: 2/7, 3/9 | 0.7: 2/7, 4/9 | 0.65: 2/7, 5/9 | 0.6: 2/7, 6/9.
Sensitivity at k (reachable): 1/8 -> 3/9 (1/7 > 1/8), 1/4 -> 3/9 (2/7 > 1/4), 1/2..8 -> 6/9.
FROC score = (3 + 3 + 5 * 6) / 9 / 7 = 36/63 = 4/7.
AP (descending: T T T F F T T T; the 3 missed lesions are never reached): precision at each
recall step of 1/9 is 1, 1, 1, 4/6, 5/7, 6/8, and 0 for the last 3/9 of recall:
AP = (3 + 4/6 + 5/7 + 6/8) / 9. (DESIGN.md's literal "score 0" would credit the misses with
precision 9/11; see froc.lesion_ap for why that is not used.)
Case scores: positives A 0.9, B 0.95 (the ignored C2 counts), C 0.85, D 0.7, F 0.75; negatives
E 0.78, G 0. Pairs won: vs E 3/5, vs G 5/5 -> AUROC = 8/10.
No lesion at all in the set: sensitivity, FROC score, AP and AUROC are NaN.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from monai.metrics import compute_fp_tp_probs_nd, compute_froc_curve_data, compute_froc_score
from scipy import ndimage

from mripipe.core.froc import FP_RATES, case_auroc, froc_curve, lesion_ap, sensitivity_at
from mripipe.core.imageio import from_array, write_image
from mripipe.core.matching import detect_scan, find_candidates, match
from mripipe.evaluate.evaluate_detection import evaluate_detection, pair_files

SHAPE = (10, 10, 10)


def _scan(lesions: list[tuple[slice, ...]], cands: list[tuple[tuple[slice, ...], float]]
          ) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros(SHAPE, dtype=np.uint16)
    prob = np.zeros(SHAPE, dtype=np.float32)
    for i, box in enumerate(lesions, start=1):
        label[box] = i
    for box, score in cands:
        prob[box] = score
    return prob, label


def _cohort() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    s = np.s_
    a = _scan([s[1:3, 1:3, 1:3], s[6:8, 6:8, 6:8]], [(s[1:3, 1:3, 1:3], 0.6)])
    a[0][1, 1, 1] = 0.9
    a[0][8, 1, 8] = 0.4
    b = _scan([s[1:5, 1:3, 1:3]], [(s[1:3, 1:3, 1:3], 0.8), (s[4:5, 1:3, 1:3], 0.95)])
    c = _scan([s[1:3, 1:3, 1:3], s[4:6, 1:3, 1:3]], [(s[1:6, 1:3, 1:3], 0.85)])
    d = _scan([s[1:3, 1:3, 1:6], s[4:8, 1:3, 1:3]],
              [(s[1:5, 1:3, 1:3], 0.6), (s[1:3, 1:3, 5:6], 0.7)])
    e = _scan([], [(s[2:4, 2:4, 2:4], 0.78)])
    f = _scan([s[1:6, 1:3, 1:2], s[1:6, 5:7, 1:2]],
              [(s[1:2, 1:2, 1:2], 0.65), (s[1:2, 5:6, 1:2], 0.75)])
    f[1][6, 5, 1] = 2
    g = _scan([], [])
    return {"A": a, "B": b, "C": c, "D": d, "E": e, "F": f, "G": g}


# scan: (n_lesions, TP scores, FP scores, ignored, case score)
EXPECTED = {
    "A": (2, [0.9], [], 0, 0.9),
    "B": (1, [0.8], [], 1, 0.95),
    "C": (2, [0.85], [], 0, 0.85),
    "D": (2, [0.6, 0.7], [], 0, 0.7),
    "E": (0, [], [0.78], 0, 0.78),
    "F": (2, [0.65], [0.75], 0, 0.75),
    "G": (0, [], [], 0, 0.0),
}


@pytest.fixture(scope="module")
def results() -> list:
    return [detect_scan(k, p, lab, threshold=0.5, min_overlap=0.1)
            for k, (p, lab) in _cohort().items()]


def test_per_scan_outcomes(results: list) -> None:
    for r in results:
        n_les, tp, fp, ignored, case = EXPECTED[r.scan]
        assert r.n_lesions == n_les, r.scan
        np.testing.assert_allclose(sorted(r.tp_scores), tp, rtol=1e-6, err_msg=r.scan)
        np.testing.assert_allclose(sorted(r.fp_scores), fp, rtol=1e-6, err_msg=r.scan)
        assert r.n_ignored == ignored, r.scan
        assert r.case_score == pytest.approx(case, rel=1e-6), r.scan


def test_froc_curve_and_score(results: list) -> None:
    _, fps, sens = froc_curve(results)
    np.testing.assert_allclose(fps, [0, 0, 0, 0, 1 / 7, 2 / 7, 2 / 7, 2 / 7, 2 / 7])
    np.testing.assert_allclose(sens, np.array([0, 1, 2, 3, 3, 3, 4, 5, 6]) / 9)
    at = sensitivity_at(fps, sens)
    np.testing.assert_allclose(at, np.array([3, 3, 6, 6, 6, 6, 6]) / 9)
    assert float(np.mean(at)) == pytest.approx(4 / 7, abs=1e-12)


def test_ap_and_case_auroc(results: list) -> None:
    ap = (3 + Fraction(4, 6) + Fraction(5, 7) + Fraction(6, 8)) / 9
    assert lesion_ap(results) == pytest.approx(float(ap), abs=1e-12)
    assert case_auroc(results) == pytest.approx(0.8, abs=1e-12)


def test_no_lesions_in_the_set(results: list) -> None:
    empty = [r for r in results if r.n_lesions == 0]
    _, fps, sens = froc_curve(empty)
    assert np.isnan(sensitivity_at(fps, sens)).all()
    assert np.isnan(lesion_ap(empty)) and np.isnan(case_auroc(empty))


def test_dice_option_changes_eligibility() -> None:
    # F's 1-of-11 candidate: IoU 1/11 < 0.1 but Dice 2/12 = 0.167 >= 0.1 -> TP under Dice.
    prob, label = _cohort()["F"]
    r = detect_scan("F", prob, label, min_overlap=0.1, measure="dice")
    assert sorted(r.tp_scores) == pytest.approx([0.65, 0.75]) and len(r.fp_scores) == 0


def test_ap_punishes_misses_without_false_positives() -> None:
    # 2 lesions, one found at 0.9, one missed, no FP: precision 1 up to recall 1/2, then nothing.
    hit = np.zeros((6, 6, 6), np.float32)
    lab = np.zeros((6, 6, 6), np.uint16)
    lab[0:2, 0:2, 0:2] = 1
    lab[4:6, 4:6, 4:6] = 2
    hit[0:2, 0:2, 0:2] = 0.9
    r = detect_scan("X", hit, lab, threshold=0.5, min_overlap=0.1)
    assert lesion_ap([r]) == pytest.approx(0.5)
    nothing = detect_scan("Y", np.zeros_like(hit), lab, threshold=0.5, min_overlap=0.1)
    assert lesion_ap([nothing]) == 0.0


def test_matching_counts_first_then_overlap() -> None:
    # 2 candidates x 2 lesions: the diagonal pairs 2 (overlap 0.2 + 0.2) beat 1 pair of 0.9.
    eligible = np.array([[True, True], [True, False]])
    weight = np.array([[0.9, 0.2], [0.2, 0.0]])
    assert sorted(match(eligible, weight)) == [(0, 1), (1, 0)]
    # equal counts: the larger total overlap wins
    assert match(np.ones((1, 2), bool), np.array([[0.3, 0.6]])) == [(0, 1)]


def test_interpolation_option() -> None:
    # points (0, 0) and (0.5, 1): at 0.25 reachable = 0, interpolated = 0.5
    fps, sens = np.array([0.0, 0.5]), np.array([0.0, 1.0])
    assert sensitivity_at(fps, sens, [0.25])[0] == 0.0
    assert sensitivity_at(fps, sens, [0.25], interpolate=True)[0] == pytest.approx(0.5)


def _random_cohort(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """7 scans of 4^3 slots (4 voxels each): miss, hit, hit + extra candidate, FP or empty."""
    rng = np.random.default_rng(seed)
    scans = []
    for _ in range(7):
        prob = np.zeros((16, 16, 16), dtype=np.float64)
        label = np.zeros((16, 16, 16), dtype=np.uint16)
        n = 0
        for x, y, z in np.ndindex(4, 4, 4):
            kind = rng.choice(["empty", "miss", "hit", "two", "fp"], p=[0.75, 0.05, 0.1, 0.04, 0.06])
            o = (4 * x, 4 * y, 4 * z)
            if kind in ("miss", "hit", "two"):
                n += 1
                label[o[0]:o[0] + 3, o[1]:o[1] + 3, o[2]:o[2] + 3] = n
            if kind in ("hit", "two", "fp"):
                prob[o[0]:o[0] + 2, o[1]:o[1] + 2, o[2]:o[2] + 1] = rng.uniform(0.3, 1.0)
            if kind == "two":
                prob[o[0]:o[0] + 2, o[1]:o[1] + 2, o[2] + 2] = rng.uniform(0.3, 1.0)
        scans.append((prob, label))
    return scans


def test_froc_score_agrees_with_monai() -> None:
    scans = _random_cohort(7)
    ours = [detect_scan(str(i), p, lab, threshold=0.2, rule="centre", instances=True)
            for i, (p, lab) in enumerate(scans)]
    fp_all, tp_all, n_targets = [], [], 0
    for p, lab in scans:
        cand, scores = find_candidates(p, 0.2)
        centres = ndimage.center_of_mass(np.ones(cand.shape), cand, np.arange(1, len(scores) + 1))
        coords = np.rint(np.array(centres)).astype(int).reshape(-1, 3)
        fp, tp, n = compute_fp_tp_probs_nd(scores, coords, lab.astype(int))
        fp_all.append(fp)
        tp_all.append(tp)
        n_targets += n
    fps, sens = compute_froc_curve_data(np.concatenate(fp_all), np.concatenate(tp_all),
                                        n_targets, len(scans))
    expected = compute_froc_score(fps, sens, eval_thresholds=FP_RATES)
    _, our_fps, our_sens = froc_curve(ours)
    assert sum(r.n_missed for r in ours) > 0  # MONAI drops its lowest threshold (a miss's 0)
    assert float(np.mean(sensitivity_at(our_fps, our_sens, interpolate=True))) == pytest.approx(
        float(expected), abs=1e-6)


def _write(arr: np.ndarray, path: Path) -> None:
    write_image(from_array(arr), path)


def test_evaluate_detection_folders(tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    (tmp_path / "lab").mkdir()
    for k, (p, lab) in _cohort().items():
        _write(p, tmp_path / "pred" / f"{k}.nii.gz")
        _write(lab, tmp_path / "lab" / (f"{k}.mha" if k in "AB" else f"{k}.nii"))
    metrics = evaluate_detection(tmp_path / "pred", tmp_path / "lab", tmp_path / "out",
                                 min_iou=0.1, threshold=0.5)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["froc_score"] == pytest.approx(4 / 7)
    assert saved["auroc"] == pytest.approx(0.8)
    assert saved["n_lesions"] == 9 and saved["n_scans"] == 7
    assert list(saved["sensitivity_at_fp"]) == ["0.125", "0.25", "0.5", "1", "2", "4", "8"]
    assert metrics["ap"] == pytest.approx(saved["ap"])
    assert (tmp_path / "out" / "froc.tsv").read_text().startswith("threshold\tfp_per_scan")
    # without --threshold, the 0.4 voxel of scan A becomes an FP of its own: FROC unchanged
    # (its point lies beyond 2/7 FP/scan at the same sensitivity); it scores below every TP, so
    # AP is unchanged too
    loose = evaluate_detection(tmp_path / "pred", tmp_path / "lab", tmp_path / "out2")
    assert loose["froc_score"] == pytest.approx(4 / 7)
    ap = (3 + Fraction(4, 6) + Fraction(5, 7) + Fraction(6, 8)) / 9
    assert loose["ap"] == pytest.approx(float(ap), abs=1e-12)


def test_clear_errors(tmp_path: Path) -> None:
    for d in ("pred", "lab"):
        (tmp_path / d).mkdir()
    _write(np.zeros((4, 4, 4), np.float32), tmp_path / "pred" / "a.nii.gz")
    _write(np.zeros((4, 4, 4), np.uint8), tmp_path / "lab" / "b.nii.gz")
    with pytest.raises(ValueError, match=r"pred: no label in .* for a"):
        pair_files(tmp_path / "pred", tmp_path / "lab")
    (tmp_path / "lab" / "b.nii.gz").rename(tmp_path / "lab" / "a.nii.gz")
    _write(np.zeros((4, 4, 5), np.float32), tmp_path / "pred" / "a.nii.gz")
    with pytest.raises(ValueError, match=r"a\.nii\.gz: shape .* differs from .*a\.nii\.gz"):
        evaluate_detection(tmp_path / "pred", tmp_path / "lab", tmp_path / "out")

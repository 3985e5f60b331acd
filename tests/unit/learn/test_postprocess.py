"""Tests of mripipe.learn.postprocess: threshold and minimum lesion volume chosen on validation."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mripipe.learn.monitor import ValScan
from mripipe.learn.postprocess import (
    best_setting,
    choose_candidate_threshold,
    choose_postprocess,
    component_table,
    dice_grid,
)


def crafted() -> tuple[np.ndarray, np.ndarray]:
    """One 10^3 scan: a 2x2x2 lesion (8 voxels) predicted at 0.7 with a 1-voxel rim at 0.4 on one
    side (4 voxels), and a lone false-positive voxel at 0.9 far away."""
    prob = np.zeros((10, 10, 10), np.float32)
    truth = np.zeros((10, 10, 10), bool)
    truth[2:4, 2:4, 2:4] = True
    prob[2:4, 2:4, 2:4] = 0.7
    prob[4, 2:4, 2:4] = 0.4
    prob[8, 8, 8] = 0.9
    return prob, truth


def test_component_table_and_dice_grid() -> None:
    prob, truth = crafted()
    # At 0.3: the lesion with its rim (12 voxels, 8 in truth) and the lone voxel.
    assert sorted(component_table(prob, truth, 0.3).tolist()) == [[1, 0], [12, 8]]
    grid = {(r["threshold"], r["min_lesion_mm3"]): r["dice"]
            for r in dice_grid([prob], [truth], 1.0, thresholds=[0.3, 0.5], min_volumes_mm3=[0, 2])}
    # 0.3, no minimum: 2*8 / (13 + 8) = 16/21; min 2 mm3 drops the lone voxel: 16/20.
    # 0.5, no minimum: 2*8 / (9 + 8) = 16/17;  min 2: 16/16 = 1.
    assert np.isclose(grid[(0.3, 0.0)], 16 / 21) and np.isclose(grid[(0.3, 2.0)], 16 / 20)
    assert np.isclose(grid[(0.5, 0.0)], 16 / 17) and grid[(0.5, 2.0)] == 1.0
    # Voxels of 8 mm3: the lone voxel is 8 mm3, kept by a 2 mm3 minimum.
    big = {(r["threshold"], r["min_lesion_mm3"]): r["dice"]
           for r in dice_grid([prob], [truth], 8.0, thresholds=[0.5], min_volumes_mm3=[2])}
    assert np.isclose(big[(0.5, 2.0)], 16 / 17)


def test_best_setting_breaks_ties_towards_half_then_small_minimum() -> None:
    rows = [{"threshold": 0.3, "min_lesion_mm3": 0.0, "dice": 0.8},
            {"threshold": 0.6, "min_lesion_mm3": 10.0, "dice": 0.8},
            {"threshold": 0.6, "min_lesion_mm3": 0.0, "dice": 0.8},
            {"threshold": 0.9, "min_lesion_mm3": 0.0, "dice": 0.7}]
    assert best_setting(rows) == rows[2]


class Fixed(nn.Module):
    """A 'network' whose lesion logit is a fixed map (logits: background 0, lesion logit(p))."""

    def __init__(self, prob: np.ndarray) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        p = torch.from_numpy(np.clip(prob, 1e-4, 1 - 1e-4))
        self.logit = torch.log(p / (1 - p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lesion = self.logit.expand(x.shape[0], 1, *self.logit.shape)
        return torch.cat([torch.zeros_like(lesion), lesion], 1) + self.weight


def test_choose_postprocess_picks_the_validation_optimum() -> None:
    prob, truth = crafted()
    scan = ValScan("v", torch.zeros(1, 10, 10, 10), torch.from_numpy(truth[None].astype(np.float32)))
    chosen = choose_postprocess(Fixed(prob).eval(), [scan], (10, 10, 10), 2.0, overlap=0.0)
    # Voxels of 2 mm3: the lesion is 16 mm3, the lone voxel 2 mm3. Any threshold in (0.4, 0.7]
    # drops the rim, a minimum in (2, 16] mm3 the lone voxel: Dice 1; the tie goes to 0.5 and
    # then the smallest such minimum on the grid (10 mm3).
    assert chosen["threshold"] == 0.5 and chosen["min_lesion_mm3"] == 10.0
    assert chosen["val_dice_pooled"] == 1.0 and np.isclose(chosen["val_dice_pooled_at_0.5"], 16 / 17)


def test_candidate_threshold_is_chosen_on_validation_froc() -> None:
    """Lesion A is predicted at 0.7, lesion B only at 0.25, a background blob at 0.15. Candidates
    from 0.3 up miss B (sensitivity 1/2); 0.2 and 0.1 find both (the 0.1-only blob scores below
    both hits, so FROC is equal) and the tie goes to the value nearest 0.3: 0.2."""
    prob = np.zeros((12, 12, 12), np.float32)
    truth = np.zeros((12, 12, 12), bool)
    truth[1:3, 1:3, 1:3] = truth[8:10, 8:10, 8:10] = True
    prob[1:3, 1:3, 1:3] = 0.7
    prob[8:10, 8:10, 8:10] = 0.25
    prob[1:3, 8:10, 1:3] = 0.15
    chosen, rows = choose_candidate_threshold([prob], [truth], 0.5)
    assert chosen == 0.2
    froc = {r["candidate_threshold"]: r["froc_score"] for r in rows}
    assert froc[0.1] == froc[0.2] == 1.0 and froc[0.3] == froc[0.4] == froc[0.5] == 0.5
    # never above the mask threshold
    assert choose_candidate_threshold([prob], [truth], 0.15)[0] == 0.1
    # through choose_postprocess, recorded with its grid
    scan = ValScan("v", torch.zeros(1, 12, 12, 12), torch.from_numpy(truth[None].astype(np.float32)))
    full = choose_postprocess(Fixed(prob).eval(), [scan], (12, 12, 12), 1.0, overlap=0.0)
    assert full["candidate_threshold"] <= full["threshold"] and full["candidate_grid"]

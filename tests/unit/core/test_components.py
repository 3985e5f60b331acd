"""Tests of mripipe.core.components."""

from __future__ import annotations

import numpy as np

from mripipe.core.components import components, remove_small


def test_components_are_26_connected_and_small_ones_go() -> None:
    mask = np.zeros((8, 8, 8), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # diagonal neighbours: one 26-connected component of 2
    mask[4:7, 4:7, 4:7] = True  # 27 voxels
    labels, k = components(mask)
    assert k == 2 and labels[0, 0, 0] == labels[1, 1, 1] != labels[5, 5, 5]
    kept = remove_small(mask, 3)
    assert kept.sum() == 27 and not kept[0, 0, 0]
    assert remove_small(mask, 2).sum() == 29 and remove_small(mask, 0).sum() == 29
    assert remove_small(mask, 28).sum() == 0

"""Tests of mripipe.learn.sampling: online patch draws with foreground oversampling."""

from __future__ import annotations

import numpy as np
import pytest

from mripipe.learn.sampling import crop, draw, foreground, is_positive


def test_foreground_groups_voxels_by_instance() -> None:
    label = np.zeros((4, 4, 4), np.uint16)
    label[0, 0, 0] = 2
    label[3, 3, 3] = 1
    label[1, 1, 1] = 2
    fg = foreground(label)
    # Instance 1: flat index 63; instance 2: flat 0 and 21 (1*16 + 1*4 + 1).
    assert fg.n_instances == 2
    assert fg.voxels.tolist() == [63, 0, 21] and fg.starts.tolist() == [0, 1, 3]
    assert foreground(np.zeros((2, 2, 2), np.uint8)).n_instances == 0


@pytest.mark.parametrize(("p", "n", "expected"), [(0.5, 4, 2), (1 / 3, 9, 3), (0.0, 5, 0),
                                                  (1.0, 5, 5), (0.4, 10, 4)])
def test_positive_share_is_exact(p: float, n: int, expected: int) -> None:
    assert sum(is_positive(i, p) for i in range(n)) == expected


def test_crop_pads_at_borders() -> None:
    # A 4x4x4 volume of ones; a 4^3 window starting at (-2, -2, -2) covers indices -2..1: only the
    # 2x2x2 corner inside the volume is 1, the rest is padding (0).
    vol = np.ones((1, 4, 4, 4), np.float32)
    patch = crop(vol, (-2, -2, -2), (4, 4, 4))
    assert patch.shape == (1, 4, 4, 4) and patch.sum() == 8 and patch[0, 2:, 2:, 2:].all()
    assert crop(vol, (0, 0, 0), (4, 4, 4)).sum() == 64
    assert crop(vol, (5, 0, 0), (4, 4, 4)).sum() == 0  # entirely outside: all padding


def test_draws_are_seeded_and_foreground_samples_hold_a_lesion() -> None:
    shapes = [(20, 20, 20), (20, 20, 20)]
    label = np.zeros((20, 20, 20), np.uint16)
    label[2, 3, 4] = 1  # a one-voxel lesion near a corner: still inside every positive patch
    label[12:16, 12:16, 12:16] = 2
    fgs = [foreground(np.zeros_like(label)), foreground(label)]
    size = (8, 8, 8)
    draws = [draw(i, 5, 1, shapes, fgs, size, 0.5) for i in range(200)]
    again = [draw(i, 5, 1, shapes, fgs, size, 0.5) for i in reversed(range(200))][::-1]
    assert all(a.scan == b.scan and np.array_equal(a.start, b.start)
               for a, b in zip(draws, again, strict=True))
    other = [draw(i, 5, 2, shapes, fgs, size, 0.5) for i in range(200)]
    assert any(not np.array_equal(a.start, b.start) for a, b in zip(draws, other, strict=True))
    positives = [d for d in draws if d.positive]
    assert len(positives) == 100 and all(d.scan == 1 for d in positives)
    hits = [bool(crop(label[None], d.start, size).any()) for d in positives]
    assert all(hits)
    # Lesion instances are drawn uniformly: the one-voxel lesion about as often as the big one.
    small = sum(bool(crop(label[None], d.start, size)[0].max() == 1 and
                     not (crop(label[None], d.start, size) == 2).any()) for d in positives)
    assert 30 <= small <= 70
    # Uniform samples come from both scans.
    assert {d.scan for d in draws if not d.positive} == {0, 1}

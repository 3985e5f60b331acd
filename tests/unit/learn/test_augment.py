"""Augmenter against the MONAI recipe it replays: equal outputs and random streams, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mripipe.core.errors import InputError
from mripipe.learn.augment import Augmenter, augmentation, seeded_reference

torch.set_num_threads(1)


def monai_run(augment: float, item: dict[str, torch.Tensor], seed: int, label: bool,
              size: list[int] | None) -> tuple[dict[str, torch.Tensor], float]:
    """The MONAI Compose on a seeded shared stream; also the stream's next draw."""
    state = np.random.RandomState(seed)
    out = seeded_reference(augment, "label" if label else None, size, state)(
        {k: v.clone() for k, v in item.items()})
    return out, state.rand()


def ours_run(augmenter: Augmenter, item: dict[str, torch.Tensor], seed: int
             ) -> tuple[dict[str, torch.Tensor], float]:
    state = np.random.RandomState(seed)
    out = augmenter(item, state)
    return out, state.rand()


def make_item(shape: tuple[int, ...], seed: int, classes: int | None) -> dict[str, torch.Tensor]:
    gen = np.random.default_rng(seed)
    item = {"image": torch.from_numpy(gen.normal(size=(2, *shape)).astype(np.float32))}
    if classes is not None:
        item["label"] = torch.from_numpy(gen.integers(0, classes + 1, (1, *shape)).astype(np.float32))
    return item


@pytest.mark.parametrize("augment", [1.0, 0.8, 0.55, 0.3])
def test_patches_equal_monai_bit_for_bit(augment: float) -> None:
    """Patches with a binary label: images, labels and the stream after, over 40 seeds."""
    augmenter = Augmenter(augment, "label")
    changed = 0
    for seed in range(40):
        item = make_item((16, 16, 16), seed, classes=1)
        before = {k: v.clone() for k, v in item.items()}
        ref, ref_next = monai_run(augment, item, seed, True, [16, 16, 16])
        out, out_next = ours_run(augmenter, item, seed)
        for key in ("image", "label"):
            assert out[key].dtype == torch.float32
            assert torch.equal(out[key], ref[key]), (augment, seed, key)
            assert torch.equal(item[key], before[key])  # the input is left alone
        assert out_next == ref_next, (augment, seed)
        changed += not torch.equal(out["image"], item["image"])
    assert changed > 20  # the recipe did augment most items


def test_multiclass_label_and_odd_shape_equal_monai() -> None:
    """Class-index labels move by nearest interpolation, on a non-cubic patch."""
    augmenter = Augmenter(1.0, "label")
    for seed in range(30):
        item = make_item((12, 10, 14), seed, classes=3)
        ref, ref_next = monai_run(1.0, item, seed, True, [12, 10, 14])
        out, out_next = ours_run(augmenter, item, seed)
        assert torch.equal(out["image"], ref["image"]), seed
        assert torch.equal(out["label"], ref["label"]), seed
        assert set(out["label"].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
        assert out_next == ref_next


def test_volumes_without_label_equal_monai() -> None:
    """Classification volumes: no label key, grid built for the volume's own shape."""
    augmenter = Augmenter(0.6)
    for seed in range(30):
        item = make_item((9, 11, 8), seed, classes=None)
        ref, ref_next = monai_run(0.6, item, seed, False, None)
        out, out_next = ours_run(augmenter, item, seed)
        assert list(out) == ["image"]
        assert torch.equal(out["image"], ref["image"]), seed
        assert out_next == ref_next


def test_strength_zero_is_identity_and_range_checked() -> None:
    item = make_item((6, 6, 6), 0, classes=1)
    state = np.random.RandomState(0)
    out = Augmenter(0.0, "label")(item, state)
    assert all(torch.equal(out[k], item[k]) for k in item)
    assert state.rand() == np.random.RandomState(0).rand()  # no draw made
    with pytest.raises(InputError, match="augment must be in"):
        Augmenter(1.5)
    with pytest.raises(InputError, match="augment must be in"):
        augmentation(-0.1, ["image"])

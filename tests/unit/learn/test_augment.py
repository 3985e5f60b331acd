"""The augmentation recipe as the loaders call it: seeded per item, label moved with the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mripipe.core.errors import InputError
from mripipe.learn.augment import SeededAugmentation, augmentation

torch.set_num_threads(1)


def make_item(shape: tuple[int, ...], seed: int, classes: int | None) -> dict[str, torch.Tensor]:
    gen = np.random.default_rng(seed)
    item = {"image": torch.from_numpy(gen.normal(size=(2, *shape)).astype(np.float32))}
    if classes is not None:
        item["label"] = torch.from_numpy(gen.integers(0, classes + 1, (1, *shape)).astype(np.float32))
    return item


def run(aug: SeededAugmentation, item: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    state = np.random.RandomState(0)
    aug(make_item((4, 4, 4), 99, 1), state)  # the stream is shared and re-seeded, as in the loader
    state.seed(seed)
    return aug(item, state)


@pytest.mark.parametrize("augment", [1.0, 0.55, 0.3])
def test_an_item_depends_only_on_its_seed(augment: float) -> None:
    """The same seed gives the same tensors (whatever came before on the stream); other seeds
    give other augmentations; the input is left alone."""
    aug = SeededAugmentation(augment, "label")
    changed, distinct = 0, set()
    for seed in range(30):
        item = make_item((16, 16, 16), seed, classes=1)
        before = {k: v.clone() for k, v in item.items()}
        first = run(aug, item, seed)
        again = run(SeededAugmentation(augment, "label"), item, seed)
        for key in ("image", "label"):
            assert first[key].dtype == torch.float32 and type(first[key]) is torch.Tensor
            assert torch.equal(first[key], again[key]), (augment, seed, key)
            assert torch.equal(item[key], before[key])
        changed += not torch.equal(first["image"], item["image"])
        distinct.add(round(float(run(aug, make_item((16, 16, 16), 0, 1), seed)["image"].sum()), 4))
    assert changed >= 30 * (1 - (1 - 0.5 * augment) ** 7) * 0.6  # each of 7 transforms fires w.p. p
    assert len(distinct) > 5  # one item under different seeds: different augmentations


def test_label_moves_with_the_image_by_nearest_interpolation() -> None:
    """A label map follows the spatial transforms of its image and keeps its class values."""
    aug = SeededAugmentation(1.0, "label")
    moved = 0
    for seed in range(20):
        label = torch.zeros(1, 16, 16, 16)
        label[:, 3:9, 4:12, 6:14] = 1.0
        label[:, 10:14, 2:6, 2:6] = 2.0
        item = {"image": torch.cat([label, label]) * 10.0, "label": label}
        out = run(aug, item, seed)
        assert set(out["label"].unique().tolist()) <= {0.0, 1.0, 2.0}
        inside = out["label"] > 0
        agree = ((out["image"][0] > 5.0) == inside[0]).float().mean()
        assert agree > 0.95, (seed, float(agree))
        moved += not torch.equal(out["label"], label)
    assert moved > 10


def test_volumes_without_label() -> None:
    """Classification volumes: the image key only, any shape."""
    aug = SeededAugmentation(0.6)
    out = run(aug, make_item((9, 11, 8), 3, classes=None), 3)
    assert list(out) == ["image"] and out["image"].shape == (2, 9, 11, 8)


def test_strength_zero_is_identity_and_range_checked() -> None:
    item = make_item((6, 6, 6), 0, classes=1)
    state = np.random.RandomState(0)
    out = SeededAugmentation(0.0, "label")(item, state)
    assert all(torch.equal(out[k], item[k]) for k in item)
    assert state.rand() == np.random.RandomState(0).rand()  # no draw made
    with pytest.raises(InputError, match="augment must be in"):
        SeededAugmentation(1.5)
    with pytest.raises(InputError, match="augment must be in"):
        augmentation(-0.1, ["image"])

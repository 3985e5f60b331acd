"""On-the-fly training augmentation: the recipe, as MONAI dictionary transforms.

:func:`augmentation` builds the recipe: random flips on every axis, a small affine (rotation up
to ~0.1 rad, scaling up to 10 %), intensity shift and scale, and Gaussian noise, with
probabilities and magnitudes linear in the strength (:class:`Recipe`). :class:`SeededAugmentation`
is what the loaders call: the recipe with every transform drawing from one ``RandomState`` that the
loader re-seeds per item, on plain tensors (no MetaTensor tracking), so an item's augmentation
depends only on its seed.

A lean re-implementation of the same transforms (``Augmenter``, draw for draw and bit for bit)
was removed: it saved 0.6 ms a patch at the searched strengths (bench_augment, this machine),
about 7 s of CPU in the ~11,500 augmented patches of the default run (< 1 % of its wall time),
and a MONAI upgrade could break it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import set_track_meta
from monai.transforms import (
    Compose,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    Randomizable,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from mripipe.core.errors import InputError

Item = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    """The recipe's probability and magnitudes at one strength (both implementations read it)."""

    p: float  # probability of each transform
    rotate: float  # rotation range (rad), each axis
    scale: float  # scaling range, each axis
    offset: float  # intensity shift range
    factor: float  # intensity scale range
    std: float  # noise standard deviation, upper bound

    @classmethod
    def at(cls, augment: float) -> Recipe:
        if not 0.0 <= augment <= 1.0:
            raise InputError(f"augment must be in [0, 1], got {augment}")
        return cls(p=0.5 * augment, rotate=0.1 * augment, scale=0.1 * augment,
                   offset=0.1 * augment, factor=0.1 * augment, std=0.05 * augment)


def augmentation(
    augment: float, keys: Sequence[str], label_key: str | None = None,
    spatial_size: Sequence[int] | None = None,
) -> Compose:
    """The augmentation recipe as MONAI dictionary transforms .

    Random flips on every axis, a small affine (rotation up to ~0.1 rad, scaling up to 10 %),
    intensity shift and scale, and Gaussian noise. Probabilities and magnitudes scale linearly
    with ``augment``. Spatial transforms also move ``label_key`` (nearest interpolation); the
    intensity transforms touch the image keys only.

    Args:
        augment: strength in [0, 1]; 0 gives an empty (identity) pipeline.
        keys: image keys of the item dict, arrays ``(C, X, Y, Z)``.
        label_key: label key moved with the image, ``(1, X, Y, Z)``; ``None`` for none.
        spatial_size: the items' fixed spatial size, if known: the affine's sampling grid is
            then built once (MONAI ``cache_grid``), not per item.

    Returns:
        A MONAI ``Compose`` of dictionary transforms (call ``set_random_state`` to seed it).
    """
    r = Recipe.at(augment)
    if augment == 0.0:
        return Compose([])
    image_keys = list(keys)
    spatial_keys = image_keys + ([label_key] if label_key else [])
    modes = ["bilinear"] * len(image_keys) + (["nearest"] if label_key else [])
    return Compose(
        [
            *(RandFlipd(keys=spatial_keys, prob=r.p, spatial_axis=axis) for axis in range(3)),
            RandAffined(
                keys=spatial_keys,
                prob=r.p,
                rotate_range=(r.rotate,) * 3,
                scale_range=(r.scale,) * 3,
                mode=modes,
                padding_mode="zeros",
                spatial_size=tuple(spatial_size) if spatial_size else None,
                cache_grid=spatial_size is not None,
            ),
            RandShiftIntensityd(keys=image_keys, offsets=r.offset, prob=r.p),
            RandScaleIntensityd(keys=image_keys, factors=r.factor, prob=r.p),
            RandGaussianNoised(keys=image_keys, prob=r.p, mean=0.0, std=r.std, dtype=np.float32),
        ]
    )


class SeededAugmentation:
    """The recipe on image key ``"image"`` (and ``label_key``), every transform drawing from one
    ``RandomState`` passed per call; plain tensors in and out, the input left alone.

    Args:
        augment: strength in [0, 1]; 0 returns items unchanged and draws nothing.
        label_key: the label moved with the image (nearest interpolation); ``None`` for none.
        spatial_size: the items' fixed spatial size, if known (see :func:`augmentation`).
    """

    def __init__(self, augment: float, label_key: str | None = None,
                 spatial_size: Sequence[int] | None = None) -> None:
        self.augment = float(augment)
        self.compose = augmentation(augment, ["image"], label_key, spatial_size)
        self._state: np.random.RandomState | None = None

    def __call__(self, item: Item, state: np.random.RandomState) -> Item:
        if self.augment == 0.0:
            return dict(item)
        if state is not self._state:  # one shared stream: the loader re-seeds it per item
            for t in self.compose.transforms:
                if isinstance(t, Randomizable):
                    t.set_random_state(state=state)
            self._state = state
        set_track_meta(False)
        try:
            out = self.compose(dict(item))
        finally:
            set_track_meta(True)
        return {k: torch.as_tensor(v).as_subclass(torch.Tensor) for k, v in out.items()}

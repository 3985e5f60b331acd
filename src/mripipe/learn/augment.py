"""On-the-fly training augmentation: the MONAI recipe, and a lean replay of it for the loaders.

:func:`augmentation` is the recipe, written with MONAI dictionary transforms: random flips on
every axis, a small affine (rotation up to ~0.1 rad, scaling up to 10 %), intensity shift and
scale, and Gaussian noise, with probabilities and magnitudes linear in the strength. It is the
reference, and the benchmark baseline runs it.

:class:`Augmenter` computes **the same outputs, bit for bit, from the same random stream**, for
the configuration :func:`augmentation` builds (both read their magnitudes from :class:`Recipe`).
It calls the same torch operations on the same dtypes in the same order (the affine from MONAI's
``create_rotate`` and ``create_scale``, the grid in float32, MONAI's ``Resample`` in float64 with
``grid_sample(align_corners=False)``, the noise drawn by ``RandomState.normal`` in float64 and
cast to float32), and consumes the random stream draw for draw as the MONAI transforms do,
including the draws MONAI makes and discards (``RandAffined`` re-draws its parameters when it
builds the grid, and once more per key). What it skips is MONAI's per-call bookkeeping:
type conversions, metadata and inverse tracking, and recomputing the resampling grid per key.
That bookkeeping was ~60 % of a patch's loading time (cProfile: 7.0 ms a patch at strength 1.0,
of which 4.5 ms in the transforms' wrappers).

``tests/unit/learn/test_augment.py`` compares both with ``torch.equal`` on many seeds and
strengths, with and without a label, for patches and whole volumes. A MONAI upgrade that
changes its transforms' draws or arithmetic fails that test rather than silently changing the
training data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from monai.transforms.utils import create_grid, create_rotate, create_scale

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
    """The augmentation recipe as MONAI dictionary transforms (the reference of :class:`Augmenter`).

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


def seeded_reference(
    augment: float, label_key: str | None, spatial_size: Sequence[int] | None,
    state: np.random.RandomState,
) -> Callable[[Item], Item]:
    """:func:`augmentation` on image key ``"image"``, every transform drawing from ``state``, on
    plain tensors (no MetaTensor tracking): what :class:`Augmenter` must equal."""
    compose = augmentation(augment, ["image"], label_key, spatial_size)
    for t in compose.transforms:
        if isinstance(t, Randomizable):
            t.set_random_state(state=state)

    def run(item: Item) -> Item:
        set_track_meta(False)
        try:
            out = compose(dict(item))
        finally:
            set_track_meta(True)
        return {k: torch.as_tensor(v).as_subclass(torch.Tensor) for k, v in out.items()}

    return run


class Augmenter:
    """The :func:`augmentation` recipe, replayed without MONAI's per-call bookkeeping.

    Call it with an item ``{"image": float32 (C, X, Y, Z)[, label_key: float32 (1, X, Y, Z)]}``
    and the ``RandomState`` the MONAI transforms would share (``set_random_state(state=...)``):
    the result equals the MONAI ``Compose``'s, bit for bit, and leaves the stream where MONAI
    leaves it. Inputs are not modified.
    """

    def __init__(self, augment: float, label_key: str | None = None) -> None:
        self.r = Recipe.at(augment)
        self.augment = augment
        self.label_key = label_key
        self._grids: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, item: Item, state: np.random.RandomState) -> Item:
        if self.augment == 0.0:
            return dict(item)
        keys = ["image"] + ([self.label_key] if self.label_key else [])
        d = dict(item)
        for axis in range(3):  # RandFlipd: one draw each
            if state.rand() < self.r.p:
                for key in keys:
                    d[key] = torch.flip(d[key], [axis + 1])
        self._affine(d, keys, state)
        image = d["image"]
        r = self.r
        if state.rand() < r.p:  # RandShiftIntensityd: its draw, the shifter's, the offset
            state.rand()
            image = image + state.uniform(low=-r.offset, high=r.offset)
        if state.rand() < r.p:  # RandScaleIntensityd
            state.rand()
            image = image * (1 + state.uniform(low=-r.factor, high=r.factor))
        if state.rand() < r.p:  # RandGaussianNoised: draws, std, then the noise itself
            state.rand()
            std = state.uniform(0, r.std)
            noise = state.normal(0.0, std, size=tuple(image.shape)).astype(np.float32)
            image = image + torch.from_numpy(noise)
        d["image"] = image
        return d

    def _params(self, state: np.random.RandomState) -> tuple[list[float], list[float]]:
        """RandAffineGrid.randomize: three rotations, then three scales (1 + uniform)."""
        rotate = [state.uniform(-self.r.rotate, self.r.rotate) for _ in range(3)]
        scale = [state.uniform(-self.r.scale, self.r.scale) + 1.0 for _ in range(3)]
        return rotate, scale

    def _affine(self, d: Item, keys: list[str], state: np.random.RandomState) -> None:
        """RandAffined: same draws (used and discarded), same grid, same float64 resampling."""
        do = state.rand() < self.r.p
        state.rand()  # RandAffine's own coin (prob 1.0)
        self._params(state)  # drawn and discarded by RandAffine.randomize
        if not do:
            return
        rotate, scale = self._params(state)  # re-drawn when the grid is built: these are used
        shape = tuple(int(s) for s in d["image"].shape[1:])
        grid = self._grids.get(shape)
        if grid is None:
            # MONAI builds the identity grid in float64 and AffineGrid casts it to float32.
            grid = torch.as_tensor(create_grid(spatial_size=shape, backend="torch"),
                                   dtype=torch.float32)
            self._grids[shape] = grid
        affine = torch.eye(4)  # AffineGrid's composition, with MONAI's own builders
        affine @= torch.as_tensor(create_rotate(3, rotate, backend="torch"))
        affine @= torch.as_tensor(create_scale(3, scale, backend="torch"))
        grid = (affine @ grid.view((grid.shape[0], -1))).view([-1, *shape])
        # Resample (torch backend, norm_coords): (x, y, z) reversed for grid_sample, in float64.
        grid_t = torch.movedim(grid[[2, 1, 0]], 0, -1).to(torch.float64).unsqueeze(0)
        for i, dim in enumerate(shape[::-1]):
            grid_t[0, ..., i] *= 2.0 / max(2, dim)
        for key in keys:
            state.rand()  # per key, RandAffine.randomize runs again: its coin and 6 parameters
            self._params(state)
            mode = "nearest" if key == self.label_key else "bilinear"
            out = torch.nn.functional.grid_sample(
                d[key].to(torch.float64).unsqueeze(0), grid_t, mode=mode, padding_mode="zeros",
                align_corners=False,
            )[0]
            d[key] = out.to(torch.float32)

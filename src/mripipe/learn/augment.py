"""On-the-fly training augmentation: the MONAI recipe, and a lean replay of it for the loaders.

:func:`augmentation` is the recipe, written with MONAI dictionary transforms: random flips on
every axis, a small affine (rotation up to ~0.1 rad, scaling up to 10 %), intensity shift and
scale, and Gaussian noise, with probabilities and magnitudes linear in the strength. It is the
reference, and the benchmark baseline runs it.

:class:`Augmenter` computes **the same outputs, bit for bit, from the same random stream**, for
the fixed configuration :func:`augmentation` builds. It calls the same torch operations on the
same dtypes in the same order (the affine grid in float32, MONAI's ``Resample`` in float64 with
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

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.transforms.utils import create_grid

from mripipe.core.errors import InputError

Item = dict[str, torch.Tensor]


def _check(augment: float) -> None:
    if not 0.0 <= augment <= 1.0:
        raise InputError(f"augment must be in [0, 1], got {augment}")


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
    _check(augment)
    if augment == 0.0:
        return Compose([])
    image_keys = list(keys)
    spatial_keys = image_keys + ([label_key] if label_key else [])
    modes = ["bilinear"] * len(image_keys) + (["nearest"] if label_key else [])
    p = 0.5 * augment
    rot = 0.1 * augment
    return Compose(
        [
            *(RandFlipd(keys=spatial_keys, prob=p, spatial_axis=axis) for axis in range(3)),
            RandAffined(
                keys=spatial_keys,
                prob=p,
                rotate_range=(rot, rot, rot),
                scale_range=(0.1 * augment,) * 3,
                mode=modes,
                padding_mode="zeros",
                spatial_size=tuple(spatial_size) if spatial_size else None,
                cache_grid=spatial_size is not None,
            ),
            RandShiftIntensityd(keys=image_keys, offsets=0.1 * augment, prob=p),
            RandScaleIntensityd(keys=image_keys, factors=0.1 * augment, prob=p),
            RandGaussianNoised(keys=image_keys, prob=p, mean=0.0, std=0.05 * augment,
                               dtype=np.float32),
        ]
    )


def _rotation(radians: Sequence[float]) -> torch.Tensor:
    """MONAI ``create_rotate(3, radians, backend="torch")``, intrinsic "XYZ", op for op."""
    affine = torch.eye(4)
    for axis, radian in enumerate(radians):
        sin_ = torch.sin(torch.as_tensor(radian, dtype=torch.float32))
        cos_ = torch.cos(torch.as_tensor(radian, dtype=torch.float32))
        r = torch.eye(4)
        if axis == 0:
            r[1, 1], r[1, 2] = cos_, -sin_
            r[2, 1], r[2, 2] = sin_, cos_
        elif axis == 1:
            r[0, 0], r[0, 2] = cos_, sin_
            r[2, 0], r[2, 2] = -sin_, cos_
        else:
            r[0, 0], r[0, 1] = cos_, -sin_
            r[1, 0], r[1, 1] = sin_, cos_
        affine = affine @ r
    return affine


class Augmenter:
    """The :func:`augmentation` recipe, replayed without MONAI's per-call bookkeeping.

    Call it with an item ``{"image": float32 (C, X, Y, Z)[, label_key: float32 (1, X, Y, Z)]}``
    and the ``RandomState`` the MONAI transforms would share (``set_random_state(state=...)``):
    the result equals the MONAI ``Compose``'s, bit for bit, and leaves the stream where MONAI
    leaves it. Inputs are not modified.
    """

    def __init__(self, augment: float, label_key: str | None = None) -> None:
        _check(augment)
        self.augment = augment
        self.label_key = label_key
        self.p = 0.5 * augment
        self.rot = 0.1 * augment
        self.scale = 0.1 * augment
        self.offset = 0.1 * augment
        self.factor = 0.1 * augment
        self.std = 0.05 * augment
        self._grids: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, item: Item, state: np.random.RandomState) -> Item:
        if self.augment == 0.0:
            return dict(item)
        keys = ["image"] + ([self.label_key] if self.label_key else [])
        d = dict(item)
        for axis in range(3):  # RandFlipd: one draw each
            if state.rand() < self.p:
                for key in keys:
                    d[key] = torch.flip(d[key], [axis + 1])
        self._affine(d, keys, state)
        image = d["image"]
        if state.rand() < self.p:  # RandShiftIntensityd: its draw, the shifter's, the offset
            state.rand()
            image = image + state.uniform(low=-self.offset, high=self.offset)
        if state.rand() < self.p:  # RandScaleIntensityd
            state.rand()
            image = image * (1 + state.uniform(low=-self.factor, high=self.factor))
        if state.rand() < self.p:  # RandGaussianNoised: draws, std, then the noise itself
            state.rand()
            std = state.uniform(0, self.std)
            noise = state.normal(0.0, std, size=tuple(image.shape)).astype(np.float32)
            image = image + torch.from_numpy(noise)
        d["image"] = image
        return d

    def _params(self, state: np.random.RandomState) -> tuple[list[float], list[float]]:
        """RandAffineGrid.randomize: three rotations, then three scales (1 + uniform)."""
        rotate = [state.uniform(-self.rot, self.rot) for _ in range(3)]
        scale = [state.uniform(-self.scale, self.scale) + 1.0 for _ in range(3)]
        return rotate, scale

    def _affine(self, d: Item, keys: list[str], state: np.random.RandomState) -> None:
        """RandAffined: same draws (used and discarded), same grid, same float64 resampling."""
        do = state.rand() < self.p
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
        affine = torch.eye(4)
        affine @= _rotation(rotate)
        affine @= torch.diag(torch.as_tensor((*scale, 1.0)))
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

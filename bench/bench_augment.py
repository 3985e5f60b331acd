"""Augmentation per patch: mripipe's ``Augmenter`` against the MONAI ``Compose`` it replays.

Both run the same recipe on the same items, seeded the same way (one ``RandomState`` re-seeded
per item), in one process with one thread, interleaved to even out the machine's drift. The
outputs are checked equal (``torch.equal``) before timing. Printed per strength: milliseconds
per patch for each and the ratio MONAI / mripipe, measured in the same run.

Usage::

    .venv/bin/python bench/bench_augment.py [--items 200] [--size 32 32 32]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
from monai.data import set_track_meta
from monai.transforms import Compose, Randomizable

from mripipe.learn.augment import Augmenter, augmentation

log = logging.getLogger("bench_augment")


def items(n: int, size: list[int], seed: int) -> list[dict[str, torch.Tensor]]:
    """``n`` patches: 2-channel noise images, binary labels (a third foreground)."""
    gen = np.random.default_rng(seed)
    return [{"image": torch.from_numpy(gen.normal(size=(2, *size)).astype(np.float32)),
             "label": torch.from_numpy((gen.random((1, *size)) < 0.33).astype(np.float32))}
            for _ in range(n)]


def monai_pass(compose: Compose, state: np.random.RandomState,
               batch: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    set_track_meta(False)
    try:
        out = []
        for i, item in enumerate(batch):
            state.seed(i)
            out.append(compose(item))
        return out
    finally:
        set_track_meta(True)


def ours_pass(augmenter: Augmenter, state: np.random.RandomState,
              batch: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    out = []
    for i, item in enumerate(batch):
        state.seed(i)
        out.append(augmenter(item, state))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--size", type=int, nargs=3, default=[32, 32, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    batch = items(args.items, args.size, seed=0)
    for strength in (1.0, 0.55, 0.3):
        compose = augmentation(strength, ["image"], "label", args.size)
        state = np.random.RandomState(0)
        for t in compose.transforms:
            if isinstance(t, Randomizable):
                t.set_random_state(state=state)
        augmenter = Augmenter(strength, "label")
        pairs = zip(monai_pass(compose, state, batch[:20]), ours_pass(augmenter, state, batch[:20]),
                    strict=True)
        for a, b in pairs:
            if not all(torch.equal(torch.as_tensor(a[k]), b[k]) for k in ("image", "label")):
                raise SystemExit(f"strength {strength}: Augmenter differs from the MONAI recipe")
        times: dict[str, list[float]] = {"monai": [], "ours": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            monai_pass(compose, state, batch)
            times["monai"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours_pass(augmenter, state, batch)
            times["ours"].append(time.perf_counter() - t0)
        monai_ms = min(times["monai"]) / len(batch) * 1e3
        ours_ms = min(times["ours"]) / len(batch) * 1e3
        log.info("strength %.2f: MONAI Compose %.2f ms/patch, mripipe Augmenter %.2f ms/patch, "
                 "ratio %.1fx (outputs equal)", strength, monai_ms, ours_ms, monai_ms / ours_ms)


if __name__ == "__main__":
    main()

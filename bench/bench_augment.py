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
from collections.abc import Callable

import numpy as np
import torch

from mripipe.learn.augment import Augmenter, Item, seeded_reference

log = logging.getLogger("bench_augment")


def items(n: int, size: list[int], seed: int) -> list[Item]:
    """``n`` patches: 2-channel noise images, binary labels (a third foreground)."""
    gen = np.random.default_rng(seed)
    return [{"image": torch.from_numpy(gen.normal(size=(2, *size)).astype(np.float32)),
             "label": torch.from_numpy((gen.random((1, *size)) < 0.33).astype(np.float32))}
            for _ in range(n)]


def augment_all(apply: Callable[[Item], Item], state: np.random.RandomState,
                batch: list[Item]) -> list[Item]:
    """``apply`` to every item, the stream re-seeded from the item's index first."""
    out = []
    for i, item in enumerate(batch):
        state.seed(i)
        out.append(apply(item))
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
        state = np.random.RandomState(0)
        augmenter = Augmenter(strength, "label")
        runs = {"monai": seeded_reference(strength, "label", args.size, state),
                "ours": lambda item, a=augmenter, s=state: a(item, s)}
        ref, ours = (augment_all(runs[k], state, batch[:20]) for k in ("monai", "ours"))
        for a, b in zip(ref, ours, strict=True):
            if not all(torch.equal(a[k], b[k]) for k in ("image", "label")):
                raise SystemExit(f"strength {strength}: Augmenter differs from the MONAI recipe")
        times: dict[str, list[float]] = {"monai": [], "ours": []}
        for _ in range(args.repeats):
            for name, apply in runs.items():
                t0 = time.perf_counter()
                augment_all(apply, state, batch)
                times[name].append(time.perf_counter() - t0)
        monai_ms, ours_ms = (min(times[k]) / len(batch) * 1e3 for k in ("monai", "ours"))
        log.info("strength %.2f: MONAI Compose %.2f ms/patch, mripipe Augmenter %.2f ms/patch, "
                 "ratio %.1fx (outputs equal)", strength, monai_ms, ours_ms, monai_ms / ours_ms)


if __name__ == "__main__":
    main()

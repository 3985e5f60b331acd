"""Training throughput (samples/s) and the input-pipeline overhead of a training step.

Full step: the real ``segmentation_loader`` (augmentation, workers, pinned memory), transfer to
the device and ``mripipe.learn.loop.train_step`` (forward, loss, backward, optimiser; AMP on CUDA).
Model-only step: ``train_step`` on one batch already on the device. The ratio
full / model-only is printed last (target <= 1.10 on CUDA, where the loader must hide behind the
GPU; on a CPU both share the same cores, so the ratio only shows the loader's share).

Usage::

    .venv/bin/python bench/bench_train.py [--patches results/patches] [--network unet]
        [--steps 30] [--workers N] [--batch-size 4]

Without ``--patches`` it writes a few preprocessed-like scans and their patches (32^3) into a
temporary folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mripipe.core.imageio import from_array, write_image
from mripipe.learn.loader import segmentation_loader
from mripipe.learn.loop import make_optimizer, train_step
from mripipe.learn.losses import make_loss
from mripipe.learn.networks import build_model
from mripipe.learn.patches import extract_patches
from mripipe.learn.search import resolve_params

SHAPE = (64, 72, 64)


def synth_patches(root: Path, n_scans: int = 6) -> tuple[Path, list[str]]:
    """Preprocessed-like scans (2 channels, cubic lesions) -> ``root/patches`` (32^3, 16/scan)."""
    gen = np.random.default_rng(0)
    grid = np.indices(SHAPE, dtype=np.float32)
    centre = (np.array(SHAPE, np.float32) - 1)[:, None, None, None] / 2
    brain = (((grid - centre) / np.array([28, 32, 28], np.float32)[:, None, None, None]) ** 2).sum(0) <= 1
    rows = []
    for i in range(n_scans):
        scan = f"sub-{i:03d}_ses-01"
        image = (gen.normal(size=(2, *SHAPE)) * brain).astype(np.float32)
        label = np.zeros(SHAPE, np.uint16)
        for k in range(1, 4):
            x, y, z = gen.integers(20, 44, 3)
            label[x : x + 4, y : y + 4, z : z + 4] = k
        folder = root / "preprocessed" / scan
        folder.mkdir(parents=True)
        write_image(from_array(image), folder / "image.nii.gz")
        write_image(from_array(label), folder / "label.nii.gz")
        write_image(from_array(brain.astype(np.uint8)), folder / "brainmask.nii.gz")
        rows.append({"subject": scan[:7], "session": "ses-01", "scan": scan, "class": "low"})
    manifest = pd.DataFrame(rows)
    subjects = sorted(manifest["subject"])
    splits = {"folds": [{"train": subjects, "val": []}]}
    extract_patches(manifest, splits, root / "preprocessed", root / "patches",
                    {"size": [32, 32, 32], "per_scan": 16, "volume_shape": [32, 32, 32]}, seed=0)
    return root / "patches", subjects


def timed(fn: object, steps: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` (after two warm-up calls), synchronising CUDA."""
    assert callable(fn)
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", default=None, help="results/patches (default: synthetic)")
    parser.add_argument("--network", default="unet", choices=["unet", "segresnet", "basicunet"])
    parser.add_argument("--channels", default="8,16,32")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=None,
                        help="loader workers (default: 0 on CPU, min(8, cores - 1) on CUDA)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda:0" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
    workers = args.workers if args.workers is not None else (min(8, (os.cpu_count() or 2) - 1) if cuda else 0)

    with tempfile.TemporaryDirectory() as tmp:
        if args.patches:
            patches = Path(args.patches)
            subjects = sorted(set(pd.read_csv(patches / "index.tsv", sep="\t", dtype=str)["subject"]))
        else:
            patches, subjects = synth_patches(Path(tmp))
        channels = [int(c) for c in args.channels.split(",")]
        params = resolve_params({"task": "segmentation", "network": {"name": args.network, "channels": channels}}, 0)
        torch.manual_seed(0)
        model = build_model(params, 2, 2).to(device).train()
        loss_fn = make_loss(params).to(device)
        optimizer = make_optimizer(model, params.optimizer)
        scaler = torch.amp.GradScaler("cuda", enabled=cuda)

        state: dict[str, Any] = {"epoch": 0, "it": iter(())}

        def next_batch() -> dict[str, torch.Tensor]:
            try:
                return next(state["it"])  # type: ignore[no-any-return]
            except StopIteration:
                state["epoch"] += 1
                state["it"] = iter(segmentation_loader(
                    patches, subjects, args.batch_size, 0, int(state["epoch"]), augment=1.0,
                    num_workers=workers))
                return next(state["it"])  # type: ignore[no-any-return]

        def full() -> None:
            train_step(model, next_batch(), loss_fn, optimizer, scaler, device, cuda)

        fixed = {k: v.to(device) for k, v in next_batch().items()}

        def model_only() -> None:
            train_step(model, fixed, loss_fn, optimizer, scaler, device, cuda)

        t_model = timed(model_only, args.steps, device)
        t_full = timed(full, args.steps, device)

    bs = args.batch_size
    print(f"device: {device} ({torch.cuda.get_device_name(0) if cuda else 'CPU'}), "
          f"threads {args.threads}, workers {workers}, AMP {cuda}")
    print(f"network: {args.network} {channels}, batch {bs}, patch 32^3, {args.steps} steps")
    print(f"full step (loader + transfer + train step): {t_full * 1e3:8.1f} ms  "
          f"{bs / t_full:8.1f} samples/s")
    print(f"model-only step (batch on device):          {t_model * 1e3:8.1f} ms  "
          f"{bs / t_model:8.1f} samples/s")
    target = " (target <= 1.10 on CUDA)" if cuda else " (CPU: loader and model share the cores)"
    print(f"ratio full / model-only: {t_full / t_model:.3f}{target}")


if __name__ == "__main__":
    main()

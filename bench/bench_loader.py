"""Patches per second: the mripipe loader against a MONAI on-the-fly baseline, in the same run.

Baseline (the usual MONAI recipe): ``LoadImaged`` of each preprocessed scan (image + label),
``EnsureChannelFirstd``, binarised label, ``RandCropByPosNegLabeld`` (pos:neg 1:1,
``num_samples`` patches per load), the same augmentation, ``monai.data.DataLoader``.
mripipe: ``mripipe patches`` once (timed separately: it is a one-off DAG job: it caches each
scan's brain-cropped arrays), then ``segmentation_loader`` drawing fresh patches online from the
memory-mapped cache (foreground share 1/2). Same patch count, patch size, augmentation, batch
size and workers. The ratio is printed last.

Usage::

    .venv/bin/python bench/bench_loader.py [--preprocessed results/preprocessed] [--workers 2]

Without ``results/preprocessed`` it writes small preprocessed-like scans (2 channels,
99x117x95 voxels = the template at 2 mm) into a temporary folder.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Lambdad,
    LoadImaged,
    RandCropByPosNegLabeld,
    SqueezeDimd,
)
from scipy import ndimage

from mripipe.core.imageio import from_array, write_image
from mripipe.learn.augment import augmentation
from mripipe.learn.loader import segmentation_loader
from mripipe.learn.patches import extract_patches

SHAPE = (99, 117, 95)


def synth_scans(root: Path, n: int, seed: int) -> list[str]:
    """Write ``n`` preprocessed-like scans: smooth 2-channel brain, a few lesions, a mask."""
    gen = np.random.default_rng(seed)
    grid = np.indices(SHAPE, dtype=np.float32)
    centre = (np.array(SHAPE, np.float32) - 1)[:, None, None, None] / 2
    radius = np.array([40, 50, 40], np.float32)[:, None, None, None]
    brain = (((grid - centre) / radius) ** 2).sum(0) <= 1
    scans = []
    for i in range(n):
        image = np.stack([ndimage.gaussian_filter(gen.normal(size=SHAPE), 2.0) for _ in range(2)])
        image = ((image / image.std()) * brain).astype(np.float32)
        label = np.zeros(SHAPE, np.uint16)
        for k in range(1, 6):
            x, y, z = (centre[:, 0, 0, 0] + gen.integers(-20, 20, 3)).astype(int)
            label[x - 2 : x + 2, y - 2 : y + 2, z - 1 : z + 2] = k
        scan = f"sub-{i:03d}_ses-01"
        folder = root / scan
        folder.mkdir(parents=True)
        write_image(from_array(image), folder / "image.nii.gz")
        write_image(from_array(label), folder / "label.nii.gz")
        write_image(from_array(brain.astype(np.uint8)), folder / "brainmask.nii.gz")
        scans.append(scan)
    return scans


def baseline_loader(
    pre: Path, scans: list[str], size: list[int], num_samples: int, repeats: int, args: argparse.Namespace
) -> DataLoader:
    """MONAI on-the-fly: load, crop pos/neg, augment; ``repeats`` passes over the scans."""
    items = [{"image": str(pre / s / "image.nii.gz"), "label": str(pre / s / "label.nii.gz")}
             for s in scans] * repeats
    transform = Compose([
        LoadImaged(keys=["image", "label"], image_only=True),
        EnsureChannelFirstd(keys=["image", "label"]),
        SqueezeDimd(keys="image", dim=4),  # SimpleITK vector NIfTI: (C, X, Y, Z, 1)
        Lambdad(keys="label", func=lambda x: (x > 0).float()),
        RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=size,
                               pos=1, neg=1, num_samples=num_samples, image_key="image",
                               image_threshold=0.0),
        augmentation(args.augment, ["image"], "label"),
    ])
    transform.set_random_state(seed=0)
    return DataLoader(Dataset(items, transform), batch_size=args.batch, shuffle=True,
                      num_workers=args.workers)


def rate(loader: torch.utils.data.DataLoader) -> tuple[float, int]:
    """(patches per second, patches) of one full pass."""
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        n += int(batch["image"].shape[0])
    return n / (time.perf_counter() - t0), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocessed", default="results/preprocessed")
    parser.add_argument("--scans", type=int, default=8, help="scans to use (synthesised if absent)")
    parser.add_argument("--per-scan", type=int, default=32, help="patches per scan in the pass")
    parser.add_argument("--size", type=int, nargs=3, default=[32, 32, 32])
    parser.add_argument("--num-samples", type=int, default=4, help="baseline patches per load")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--augment", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pre = Path(args.preprocessed)
        if pre.is_dir() and any(pre.glob("*/image.nii.gz")):
            scans = sorted(p.parent.name for p in pre.glob("*/label.nii.gz"))[: args.scans]
            print(f"using {len(scans)} scans of {pre}")
        else:
            pre = tmp / "preprocessed"
            t0 = time.perf_counter()
            scans = synth_scans(pre, args.scans, seed=0)
            print(f"synthesised {len(scans)} scans {SHAPE} x2 in {time.perf_counter() - t0:.1f} s")
        manifest = pd.DataFrame({"scan": scans, "subject": [s.split("_")[0] for s in scans],
                                 "class": ""})
        subjects = sorted(set(manifest["subject"]))
        splits = {"folds": [{"train": subjects, "val": []}]}
        params = {"size": args.size, "per_scan": args.per_scan, "pos_fraction": 0.5}
        t0 = time.perf_counter()
        extract_patches(manifest, splits, pre, tmp / "patches", params, seed=0)
        print(f"mripipe patches (one-off job): {time.perf_counter() - t0:.1f} s "
              f"for {len(scans)} cached scans")

        ours = segmentation_loader(tmp / "patches", subjects, args.batch, seed=0, epoch=0,
                                   augment=args.augment, num_workers=args.workers)
        repeats = max(1, args.per_scan // args.num_samples)
        base = baseline_loader(pre, scans, args.size, args.num_samples, repeats, args)
        base_rate, base_n = rate(base)
        ours_rate, ours_n = rate(ours)
        print(f"MONAI on-the-fly baseline: {base_rate:8.1f} patches/s ({base_n} patches, "
              f"num_samples={args.num_samples}, workers={args.workers})")
        print(f"mripipe loader:            {ours_rate:8.1f} patches/s ({ours_n} patches, "
              f"workers={args.workers})")
        print(f"ratio mripipe / MONAI baseline: {ours_rate / base_rate:.1f}x")


if __name__ == "__main__":
    main()

"""GPU check: the CUDA path of the default segmentation trial, measured on a real GPU.

It needs torch, numpy, pandas, PyYAML, jsonschema and MONAI only (no SimpleITK, MLflow or
Snakemake), so it runs on a bare GPU machine: it reads the ``results/patches`` folder of a phantom
run made elsewhere (the cached, preprocessed scans the loader samples from) and, optionally, a
model package (``results/lesion_seg/model``) for the inference weights. It measures:

1. **training** (trial 0 of ``lesion_seg`` in the config, AMP on CUDA): the full step (online
   sampling + augmentation in the DataLoader, host-to-device copy, forward, backward, optimiser)
   for several DataLoader worker counts, against the model-only step on batches already on the
   device; their ratio (goal <= 1.10), samples/s and peak GPU memory;
2. **determinism**: the same seed trained twice through :func:`mripipe.learn.loop.fit` (with
   sliding-window validation), with cuDNN autotuning (the CUDA default) and in deterministic
   mode; the largest differences of history and weights, and what deterministic mode costs;
3. **sliding-window inference**: scans/s on the GPU (float32 and AMP, two window batches) and
   the largest absolute difference of its probabilities from the CPU's;
4. **trials per GPU**: ``bench/bench_hpo_throughput.py`` with 1, 2 and 4 concurrent trial
   processes (goal: 4 at once >= 3x one at a time).

Usage::

    make gpu-check PATCHES=results/patches [MODEL=results/lesion_seg/model]
    python bench/gpu_check.py --patches results/patches --model results/lesion_seg/model --out gpu_check.json

Without CUDA it runs everything on the CPU with ``--quick`` sizes (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from mripipe.core.devices import torch_settings
from mripipe.learn.checkpoint import CheckpointMeta, load_state_dict
from mripipe.learn.loader import segmentation_loader
from mripipe.learn.loop import fit, make_optimizer, seed_everything, train_step
from mripipe.learn.losses import make_loss
from mripipe.learn.monitor import ValScan, segmentation_validator
from mripipe.learn.networks import build_model, segment_probability
from mripipe.learn.search import resolve_params
from mripipe.learn.trial_params import SegmentationTraining, TrialParams

log = logging.getLogger("gpu_check")
REPO = Path(__file__).resolve().parents[1]
SEED = 42


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trial_params(config: Path, experiment: str) -> TrialParams:
    """Trial 0's resolved parameters (what the default search trains first)."""
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    return resolve_params(cfg["experiments"][experiment], 0)


def subjects(patches: Path, role: str) -> list[str]:
    table = pd.read_csv(patches / "index.tsv", sep="\t")
    return sorted(set(table.loc[table["role"] == role, "subject"]))


def val_scans(patches: Path, n: int) -> list[ValScan]:
    """Whole validation scans from the cache (already cropped to the brain box)."""
    table = pd.read_csv(patches / "index.tsv", sep="\t")
    rows = table[table["role"] == "val"].sort_values("scan").head(n)
    return [ValScan(str(r.scan),
                    torch.from_numpy(np.load(patches / r.file).astype(np.float32)),
                    torch.from_numpy((np.load(patches / r.label_file) > 0)[None].astype(np.float32)))
            for r in rows.itertuples()]


def _step_loop(model: torch.nn.Module, batches: Any, n: int, opt: dict[str, Any],
               device: torch.device) -> float:
    """Seconds per step over ``n`` steps of ``batches`` (an iterator), synchronised at both ends."""
    loss_fn, optimizer, scaler, amp = opt["loss"], opt["optimizer"], opt["scaler"], opt["amp"]
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        train_step(model, next(batches), loss_fn, optimizer, scaler, device, amp)
    sync(device)
    return (time.perf_counter() - t0) / n


def training_speed(p: TrialParams, patches: Path, device: torch.device, workers: int,
                   steps: int, warmup: int) -> dict[str, float]:
    """Full training step (with this many loader workers) against the model-only step."""
    train, bs = subjects(patches, "train"), p.training.batch_size
    aug = float(p.training.augment)
    loader = segmentation_loader(patches, train, bs, SEED, 0, augment=aug, num_workers=workers,
                                 n_samples=(2 * warmup + steps + 8) * bs)
    it = iter(loader)
    first = next(it)
    seed_everything(SEED)
    model = build_model(p, int(first["image"].shape[1]), 2).to(device).train()
    amp = device.type == "cuda" and p.training.amp
    opt = {"loss": make_loss(p).to(device), "optimizer": make_optimizer(model, p.optimizer),
           "scaler": torch.amp.GradScaler("cuda", enabled=amp), "amp": amp}
    on_device = [{k: v.to(device) for k, v in next(it).items()} for _ in range(8)]

    def cycle() -> Any:
        i = 0
        while True:
            yield on_device[i % len(on_device)]
            i += 1

    _step_loop(model, cycle(), warmup, opt, device)  # cuDNN autotuning, allocator warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model_only = _step_loop(model, cycle(), steps, opt, device)
    _step_loop(model, it, warmup, opt, device)  # workers started, pipeline filled
    full = _step_loop(model, it, steps, opt, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"workers": workers, "batch_size": bs, "full_step_ms": 1e3 * full,
            "model_step_ms": 1e3 * model_only, "ratio_full_to_model": full / model_only,
            "samples_per_s": bs / full, "model_samples_per_s": bs / model_only,
            "peak_gpu_mib": peak}


def _train_once(p: TrialParams, patches: Path, scans: list[ValScan], device: torch.device,
                deterministic: bool | None, epochs: int, steps: int, workers: int) -> dict[str, Any]:
    tr = replace(p.training, epochs=epochs, val_every=1, patience=epochs, batches_per_epoch=steps)
    if not isinstance(tr, SegmentationTraining):
        raise ValueError("gpu_check trains a segmentation experiment")
    q = replace(p, training=tr)
    bs, aug = tr.batch_size, float(tr.augment)
    roi = patches_size(patches)
    meta = CheckpointMeta(in_channels=int(scans[0].image.shape[0]), n_classes=2,
                          class_names=("background", "lesion"), roi_size=tuple(roi), task=q.task)
    train = subjects(patches, "train")
    with torch_settings(device, 4, deterministic), tempfile.TemporaryDirectory() as tmp:
        seed_everything(SEED)
        model = build_model(q, int(scans[0].image.shape[0]), 2).to(device)
        loss = make_loss(q).to(device)
        validate = segmentation_validator(scans, loss, roi, tr.sw_batch_size, float(tr.sw_overlap),
                                          device.type == "cuda")
        t0 = time.perf_counter()
        result = fit(model, loss, lambda e: segmentation_loader(
            patches, train, bs, SEED, e, augment=aug, num_workers=workers, n_samples=steps * bs),
            steps, validate, q, "val_dice", tmp, device, meta)
        sync(device)
        wall = time.perf_counter() - t0
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    return {"history": pd.DataFrame(result.history), "state": state, "wall_s": wall}


def patches_size(patches: Path) -> list[int]:
    return [int(s) for s in json.loads((patches / "patches.json").read_text())["size"]]


def determinism(p: TrialParams, patches: Path, device: torch.device, epochs: int, steps: int,
                workers: int) -> dict[str, Any]:
    """Two runs per mode with the same seed: how far apart are their histories and weights?"""
    scans = val_scans(patches, 2)
    out: dict[str, Any] = {"epochs": epochs, "steps_per_epoch": steps, "workers": workers}
    modes = {"autotuned": None, "deterministic": True} if device.type == "cuda" else {"cpu": None}
    for name, det in modes.items():
        try:
            a, b = (_train_once(p, patches, scans, device, det, epochs, steps, workers) for _ in range(2))
        except RuntimeError as exc:  # an op without a deterministic CUDA kernel
            out[name] = {"error": str(exc).splitlines()[0]}
            continue
        cols = [c for c in a["history"].columns if c != "epoch"]
        hist = float(np.nanmax(np.abs(a["history"][cols].to_numpy(float) - b["history"][cols].to_numpy(float))))
        weights = max(float((a["state"][k] - b["state"][k]).abs().max()) for k in a["state"])
        out[name] = {"max_abs_diff_history": hist, "max_abs_diff_weights": weights,
                     "identical": hist == 0 and weights == 0, "wall_s": [a["wall_s"], b["wall_s"]],
                     "final_val_dice": [float(a["history"]["val_dice"].iloc[-1]),
                                        float(b["history"]["val_dice"].iloc[-1])]}
    if "autotuned" in out and "deterministic" in out and "wall_s" in out["deterministic"]:
        out["deterministic_cost"] = min(out["deterministic"]["wall_s"]) / min(out["autotuned"]["wall_s"])
    return out


def load_package_model(p: TrialParams, model_dir: Path | None, in_channels: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The package's trained network and window, or trial 0's untrained one (seeded)."""
    if model_dir is None:
        seed_everything(SEED)
        return build_model(p, in_channels, 2).eval(), {"roi_size": [32, 32, 32], "overlap": 0.5}
    meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    model = build_model(TrialParams.from_dict(meta["params"]), int(meta["in_channels"]), int(meta["n_classes"]))
    model.load_state_dict(load_state_dict(model_dir / meta["weights"]["file"]))
    return model.eval(), meta["window"]


def inference(p: TrialParams, patches: Path, model_dir: Path | None, device: torch.device,
              n_scans: int) -> dict[str, Any]:
    """Sliding-window probabilities on the GPU against the CPU's: speed and agreement."""
    scans = val_scans(patches, n_scans)
    model, window = load_package_model(p, model_dir, int(scans[0].image.shape[0]))
    roi, overlap = [int(s) for s in window["roi_size"]], float(window["overlap"])
    t0 = time.perf_counter()
    ref = [segment_probability(model.cpu(), s.image, roi, 2, overlap, amp=False) for s in scans]
    out: dict[str, Any] = {"scans": len(scans), "shape": list(scans[0].image.shape),
                           "roi_size": roi, "overlap": overlap, "trained": model_dir is not None,
                           "cpu_threads": torch.get_num_threads(),
                           "cpu_scans_per_s": len(scans) / (time.perf_counter() - t0)}
    if device.type != "cuda":
        return out
    model = model.to(device)
    with torch_settings(device, 4):
        for amp in (False, True):
            for swb in (2, 32):
                segment_probability(model, scans[0].image, roi, swb, overlap, amp)  # warm-up
                sync(device)
                t0 = time.perf_counter()
                probs = [segment_probability(model, s.image, roi, swb, overlap, amp) for s in scans]
                rate = len(scans) / (time.perf_counter() - t0)
                diff = max(float((a - b).abs().max()) for a, b in zip(probs, ref, strict=True))
                masks = sum(int(((a >= 0.5) != (b >= 0.5)).sum()) for a, b in zip(probs, ref, strict=True))
                out[f"{'amp' if amp else 'fp32'}_sw{swb}"] = {
                    "scans_per_s": rate, "max_abs_diff_vs_cpu": diff, "mask_voxels_differing": masks}
    return out


def trials_per_gpu(config: Path, trials: int, steps: int, quick: bool, timeout: float = 300) -> dict[str, Any]:
    """bench/bench_hpo_throughput.py with k = 1, 2, 4 trial processes per device."""
    cmd = [sys.executable, str(REPO / "bench" / "bench_hpo_throughput.py"), "--trials", str(trials),
           "--steps", str(steps), "--ks", "1,2,4", "--config", str(config)] + (["--tiny"] if quick else [])
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
        text, code = run.stdout + run.stderr, run.returncode
    except subprocess.TimeoutExpired as exc:  # report the ks that finished
        text, code = f"{exc.stdout or ''}{exc.stderr or ''}", -1
    # "k=2: 4 trials in 31.0 s", logged as each k finishes (so a timeout keeps the finished ks)
    rates = {int(k): int(n) / float(s) * 3600 for k, n, s in re.findall(r"k=(\d+): (\d+) trials in ([\d.]+) s", text)}
    out: dict[str, Any] = {"trials": trials, "steps_per_trial": steps, "trials_per_hour": rates,
                           "returncode": code}
    if 1 in rates:
        out["ratio_vs_1"] = {k: v / rates[1] for k, v in rates.items()}
    if code:
        out["log_tail"] = text[-2000:]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=Path, required=True, help="results/patches of a phantom run")
    parser.add_argument("--model", type=Path, default=None, help="a model package (inference weights)")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--experiment", default="lesion_seg")
    parser.add_argument("--workers", default="0,2,4,8", help="DataLoader worker counts to time")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps per setting")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU smoke test)")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: train,determinism,inference,trials")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda:0" if cuda else "cpu")
    p, skip = trial_params(args.config, args.experiment), set(args.skip.split(","))
    steps = 4 if args.quick else args.steps
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "network": p.network.to_dict(), "training": p.training.to_dict(), "patches": str(args.patches)}
    sections = {
        "train": lambda: [training_speed(p, args.patches, device, int(w), steps, 2 if args.quick else 20)
                          for w in args.workers.split(",")],
        "determinism": lambda: determinism(p, args.patches, device, 2 if args.quick else 3,
                                           3 if args.quick else 40, 0 if args.quick else 4),
        "inference": lambda: inference(p, args.patches, args.model, device, 1 if args.quick else 4),
        "trials": lambda: trials_per_gpu(args.config, 2 if args.quick else 4,
                                         4 if args.quick else 600, args.quick),
    }
    for name, run in sections.items():
        if name in skip:
            continue
        t0 = time.perf_counter()
        with torch_settings(device, 4):
            report[name] = run()
        log.info("%s (%.0f s): %s", name, time.perf_counter() - t0, json.dumps(report[name], default=str))
        args.out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    log.info("report: %s", args.out)


if __name__ == "__main__":
    main()

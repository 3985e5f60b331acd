"""Search throughput: trials per hour with k = 1, 2, 4 trials sharing each device.

Each trial is its own process, as Snakemake's trial jobs are. It takes a slot from
:func:`mripipe.core.devices.allocate` with ``per_device=k`` (``train.trials_per_gpu``), builds
the default config's ``lesion_seg`` network (trial 0's parameters), and runs ``--steps`` real
training steps (:func:`mripipe.learn.loop.train_step`, AMP on CUDA) on synthetic blob
patches of the configured size and batch. ``--trials`` trials run with ``k x devices`` at a time,
and the wall time of the whole batch gives trials/hour. k = 1 is the baseline measured in the
same run; the ratio is printed for each k (target on one GPU: k = 4 >= 3x k = 1).

Without a GPU the "devices" are the CPU: k trials share the cores, so the code path runs but the
ratio only says how well the cores were used.

Usage::

    .venv/bin/python bench/bench_hpo_throughput.py [--trials 8] [--steps 40] [--ks 1,2,4]
        [--config config/config.yaml] [--experiment lesion_seg] [--tiny]

``--tiny`` (the CPU smoke case) shrinks the network, patch and steps so it takes seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from mripipe.core.devices import allocate, visible_devices
from mripipe.learn.loop import make_optimizer, train_step
from mripipe.learn.losses import make_loss
from mripipe.learn.networks import build_model
from mripipe.learn.search import resolve_params

log = logging.getLogger("bench_hpo_throughput")
REPO = Path(__file__).resolve().parents[1]


def trial_setup(config: Path, experiment: str, tiny: bool) -> dict[str, Any]:
    """Trial 0's resolved parameters of ``experiment`` plus its patch size and batch size."""
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    exp = cfg["experiments"][experiment]
    size = list(cfg.get("patches", {}).get("size", [32, 32, 32]))
    if tiny:
        exp = {**exp, "network": {**(exp.get("network") or {}), "channels": [4, 8, 16]}}
        size = [16, 16, 16]
    params = resolve_params(exp, 0)
    return {"params": params, "size": size, "batch": params.training.batch_size}


def run_trial(setup: dict[str, Any], steps: int, lock_dir: str, k: int, seed: int) -> str:
    """One trial on an allocated slot: ``steps`` training steps on synthetic blobs."""
    params, size, batch = setup["params"], setup["size"], setup["batch"]
    with allocate(lock_dir, per_device=k) as slot:
        device = torch.device(slot.device)
        cuda = device.type == "cuda"
        torch.set_num_threads(1)  # as a trial job (threads: 1): k processes must not oversubscribe
        gen = torch.Generator().manual_seed(seed)
        model = build_model(params, 2, 2).to(device).train()
        loss_fn = make_loss(params).to(device)
        optimizer = make_optimizer(model, params.optimizer)
        scaler = torch.amp.GradScaler("cuda", enabled=cuda)
        grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in size],
                                          indexing="ij"))
        for _ in range(steps):
            centre = torch.rand(batch, 3, 1, 1, 1, generator=gen) * torch.tensor(size).view(1, 3, 1, 1, 1)
            blob = ((grid[None] - centre) ** 2).sum(1, keepdim=True) < (min(size) / 5) ** 2
            image = torch.randn(batch, 2, *size, generator=gen) + 2.0 * blob
            data = {"image": image.to(device), "label": blob.to(torch.uint8).to(device)}
            train_step(model, data, loss_fn, optimizer, scaler, device, cuda)
        if cuda:
            torch.cuda.synchronize(device)
    return f"{slot.device} slot {slot.slot}"


def run_batch(args: argparse.Namespace, k: int, lock_dir: Path) -> float:
    """Wall seconds for ``args.trials`` trial processes, ``k x devices`` at a time."""
    parallel = k * max(1, len(visible_devices()))
    cmd = [sys.executable, __file__, "--worker", "--k", str(k), "--lock-dir", str(lock_dir),
           "--steps", str(args.steps), "--config", str(args.config),
           "--experiment", args.experiment] + (["--tiny"] if args.tiny else [])
    t0 = time.perf_counter()
    pending, running = list(range(args.trials)), []
    while pending or running:
        while pending and len(running) < parallel:
            running.append(subprocess.Popen([*cmd, "--seed", str(pending.pop(0))]))
        for proc in list(running):
            if proc.poll() is not None:
                running.remove(proc)
                if proc.returncode != 0:
                    raise RuntimeError(f"trial process failed with exit code {proc.returncode}")
        time.sleep(0.05)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per k (default 8)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per trial")
    parser.add_argument("--ks", default="1,2,4", help="trials per device to compare (first = baseline)")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--experiment", default="lesion_seg")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke case: small net and patch")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--lock-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    setup = trial_setup(args.config, args.experiment, args.tiny)
    if args.worker:
        run_trial(setup, args.steps, args.lock_dir, args.k, args.seed)
        return
    devices = visible_devices()
    names = [torch.cuda.get_device_name(i) for i in range(len(devices))] or ["CPU"]
    ks = [int(k) for k in args.ks.split(",")]
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in ks:
            wall = run_batch(args, k, Path(tmp) / f"locks-k{k}")
            rates[k] = args.trials / wall * 3600
            log.info("k=%d: %d trials in %.1f s", k, args.trials, wall)
    log.info("devices: %s; %s, patch %s, batch %d, %d steps per trial",
             ", ".join(names), json.dumps(setup["params"].network.to_dict()), setup["size"],
             setup["batch"], args.steps)
    for k in ks:
        log.info("trials_per_gpu=%d: %8.1f trials/hour  ratio vs k=%d: %.2fx", k, rates[k],
                 ks[0], rates[k] / rates[ks[0]])
    if not devices:
        log.info("no GPU: the k trials shared the CPU cores (code path only; target is for one GPU)")


if __name__ == "__main__":
    main()

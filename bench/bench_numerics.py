"""What pinning the CPU kernels costs, and whether it makes dispatch levels agree.

Each measurement is a fresh process (the levers are read when the libraries load) that trains
the default U-Net (channels 8-16-32, batch 4, 32^3 patches, one thread) for ``--steps`` steps
from a fixed seed on fixed random batches, and prints its seconds per step and a hash of the
final weights. The settings, interleaved ``--repeats`` times:

- ``native``: no cap (what each library picks on this CPU);
- ``native, capped at avx2 outside``: the issue's simulation of an AVX2-only machine (the same
  levers set in the environment, as another CPU would choose them);
- ``pinned avx2``: ``compute.cpu_isa: avx2`` (mripipe.core.numerics.pinning_env);
- ``pinned avx2, capped at avx512 outside``: pinning on a machine whose best level differs.

Printed last: the time ratio pinned / native (the cost of pinning), and which settings gave the
same weights.

Usage::

    .venv/bin/python bench/bench_numerics.py [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

from mripipe.core.numerics import LEVER_VARS, pinning_env

SETTINGS = {
    "native": ("native", None),
    "native, capped at avx2 outside": ("native", "avx2"),
    "pinned avx2": ("avx2", None),
    "pinned avx2, capped at avx512 outside": ("avx2", "avx512"),
}


def child(steps: int) -> None:
    """Train ``steps`` steps; print {"s_per_step", "weights", "capability"} as JSON."""
    import torch

    from mripipe.learn.loop import make_optimizer, train_step
    from mripipe.learn.losses import make_loss
    from mripipe.learn.networks import build_model
    from mripipe.learn.search import resolve_params

    torch.set_num_threads(1)
    torch.manual_seed(0)
    params = resolve_params({"task": "segmentation", "network": {"name": "unet", "channels": [8, 16, 32]}}, 0)
    model = build_model(params, 2, 2).train()
    loss_fn = make_loss(params)
    optimizer = make_optimizer(model, params.optimizer)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    gen = torch.Generator().manual_seed(1)
    batches = [{"image": torch.randn(4, 2, 32, 32, 32, generator=gen),
                "label": (torch.rand(4, 1, 32, 32, 32, generator=gen) > 0.9).float()} for _ in range(4)]
    train_step(model, batches[0], loss_fn, optimizer, scaler, torch.device("cpu"), False)  # warm-up
    t0 = time.perf_counter()
    for i in range(steps):
        train_step(model, batches[i % 4], loss_fn, optimizer, scaler, torch.device("cpu"), False)
    seconds = (time.perf_counter() - t0) / steps
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.numpy().tobytes())
    print(json.dumps({"s_per_step": seconds, "weights": h.hexdigest()[:16],
                      "capability": str(torch.backends.cpu.get_cpu_capability())}))


def run_setting(cap: str, outside: str | None, steps: int) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in LEVER_VARS}
    if outside:
        env.update(pinning_env(outside))  # what another CPU's libraries would pick
    env.update(pinning_env(cap))
    out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(steps)], env=env,
                         capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.steps)
        return
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    results: dict[str, dict[str, object]] = {}
    for _ in range(args.repeats):
        for name, (cap, outside) in SETTINGS.items():
            results[name] = run_setting(cap, outside, args.steps)
            times[name].append(float(results[name]["s_per_step"]))  # type: ignore[arg-type]
    print(f"{'setting':40s} {'torch dispatch':>14s} {'ms/step':>8s}  weights")
    for name in SETTINGS:
        r = results[name]
        print(f"{name:40s} {r['capability']!s:>14s} {statistics.median(times[name]) * 1e3:8.1f}  {r['weights']}")
    ratio = statistics.median(times["pinned avx2"]) / statistics.median(times["native"])
    same = [n for n in SETTINGS if results[n]["weights"] == results["pinned avx2"]["weights"]]
    print(f"same weights as 'pinned avx2': {', '.join(same)}")
    print(f"native and 'capped at avx2 outside' agree: "
          f"{results['native']['weights'] == results['native, capped at avx2 outside']['weights']}")
    print(f"cost of pinning (pinned avx2 / native, median of {args.repeats}): {ratio:.3f}")


if __name__ == "__main__":
    main()

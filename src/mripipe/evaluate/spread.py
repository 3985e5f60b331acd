"""The seed spread of a published result: the same commit, data, split, preprocessing and search,
trained with several training seeds (``train_seed``), and what it makes of a tolerance.

A bootstrap CI over test cases measures test-set sampling. It is not a reproduction tolerance: a
training run on another CPU takes another path through float rounding, which behaves like another
training seed. The spread over seeds measures exactly that variance.

Tolerance on a machine with another fingerprint (:data:`MARGIN_SD`): a reproduced metric passes
when it lies in ``[min(mean - 3 SD, seed min), max(mean + 3 SD, seed max)]`` of the published seeds
(sample SD, ``ddof=1``). A metric that every seed gives alike (SD 0: counts, a saturated accuracy)
must be equal.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from mripipe.core.errors import InputError

#: The published seed range is widened by this many SDs on each side of the mean.
MARGIN_SD = 3.0
CI_SUFFIXES = ("_ci95_low", "_ci95_high")
#: Summary blocks of the published file that are not an experiment's metrics.
META_BLOCKS = ("produced", "excluded", "seeds", "spread", "stages")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def seed_spread(per_seed: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{experiment: {metric: {mean, sd, min, max, values}}}`` over the seeds' summaries.

    Args:
        per_seed: ``{seed: results/summary.json}``, in the order the seeds ran.

    Only numeric headline metrics (not their CI bounds) defined in every seed are summarised;
    ``sd`` is the sample SD (None with one seed).
    """
    if not per_seed:
        raise InputError("a seed spread needs at least one seed's summary")
    seeds = list(per_seed)
    first = per_seed[seeds[0]]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, block in first.items():
        if name in META_BLOCKS or not isinstance(block, Mapping):
            continue
        for key in block:
            if key.endswith(CI_SUFFIXES):
                continue
            values = [per_seed[s].get(name, {}).get(key) for s in seeds]
            if not all(_number(v) for v in values):
                continue
            vals = [float(v) for v in values]
            out.setdefault(name, {})[key] = {
                "mean": statistics.fmean(vals),
                "sd": statistics.stdev(vals) if len(vals) > 1 else None,
                "min": min(vals), "max": max(vals), "values": vals,
            }
    return out


def tolerance_interval(stats: Mapping[str, Any]) -> tuple[float, float] | None:
    """The interval a reproduced value must lie in (see the module), or None without an SD."""
    sd = stats.get("sd")
    if sd is None:
        return None
    mean = float(stats["mean"])
    return (min(mean - MARGIN_SD * float(sd), float(stats["min"])),
            max(mean + MARGIN_SD * float(sd), float(stats["max"])))


def spread_table(spread: Mapping[str, Mapping[str, Mapping[str, Any]]], seeds: Sequence[str],
                 metrics: Sequence[str]) -> list[str]:
    """Markdown rows ``| experiment/metric | mean ± SD | min–max | seed values... |`` of ``metrics``
    (``experiment/metric`` names) for the README."""
    head = ["| metric | mean ± SD | min–max | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|---|---|" + "---|" * len(seeds)]
    rows = []
    for full in metrics:
        name, key = full.split("/", 1)
        st = spread.get(name, {}).get(key)
        if st is None:
            continue
        sd = "–" if st["sd"] is None else f"{st['sd']:.3f}"
        rows.append(f"| {full} | {st['mean']:.3f} ± {sd} | {st['min']:.3f}–{st['max']:.3f} | "
                    + " | ".join(f"{v:.3f}" for v in st["values"]) + " |")
    return head + rows

"""Compare a reproduced ``results/summary.json`` with a published one, metric by metric.

The published file (``published/phantom/summary.json``, written by ``mripipe publish``) holds
the first training seed's summary (every experiment's headline metrics with their 95 % bootstrap
CIs, as :mod:`mripipe.evaluate.summarise` writes them), every seed's summary and stage hashes, the
seed spread (:mod:`mripipe.evaluate.spread`) and where it was produced (``produced``: commit,
platform, CPU model and dispatch flags, the ISA cap, Python, torch, BLAS, device, date).

Tolerance (the table's first line says which applied and why):

- ``identical``: the same fingerprint (:data:`FINGERPRINT_KEYS`: platform, CPU model, ISA cap,
  torch, BLAS), both on the CPU: every number must be equal (the CPU path is seeded and
  deterministic).
- ``seed range``: another fingerprint: each metric must lie in the published seed range widened
  by :data:`mripipe.evaluate.spread.MARGIN_SD` SDs; a metric without spread (counts) must be equal.
- ``ci95``: a published file without a seed spread (older files): each metric inside its 95 % CI.
- ``comparison``: a recipe's ``reference:`` block holds another method's numbers, on another split
  or dataset: nothing there can be reproduced. A metric passes when their value lies inside our
  95 % CI or ours is better (higher, or lower for distances and errors); without our CI, when ours
  is at least as good.

Strings (``task``, ``space``) are always compared for equality.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeGuard

from mripipe.core.errors import InputError
from mripipe.core.numerics import cpu_flags, cpu_model
from mripipe.evaluate.spread import META_BLOCKS, seed_spread, tolerance_interval

IDENTICAL = "identical"
SEED_RANGE = "seed range"
CI95 = "ci95"
COMPARISON = "comparison"
MODES = (IDENTICAL, SEED_RANGE, CI95, COMPARISON)
CI_LOW, CI_HIGH = "_ci95_low", "_ci95_high"
#: What must match for the ``identical`` tolerance (besides both runs being on the CPU).
FINGERPRINT_KEYS = ("platform", "cpu", "cpu_isa", "torch", "blas")
#: Metric names (substrings) where lower is better, for the ``comparison`` rule.
LOWER_IS_BETTER = ("hd95", "volume_error", "error")


@dataclass(frozen=True)
class Row:
    """One metric of the comparison.

    Attributes:
        metric: ``experiment/metric`` (e.g. ``lesion_seg/dice``).
        published: the reference value (None when undefined or missing).
        reproduced: the reproduced value (None when undefined or missing).
        tolerance: ``identical``, ``equal`` (no CI) or ``95% CI [lo, hi]``.
        ok: whether the reproduced value is within the tolerance.
        note: why a row failed in words (``missing``, ``outside the CI``...), else empty.
    """

    metric: str
    published: Any
    reproduced: Any
    tolerance: str
    ok: bool
    note: str = ""

    @property
    def difference(self) -> float | None:
        """reproduced - published, when both are numbers."""
        if _number(self.published) and _number(self.reproduced):
            return float(self.reproduced) - float(self.published)
        return None


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def platform_info(device: str = "cpu") -> dict[str, Any]:
    """Where a run happens: platform (OS-architecture), CPU model and the flags that decide
    kernel dispatch, Python, torch, device, date (UTC). A run's ``results/stages.json`` adds the
    ISA cap and the dispatch in effect (:func:`numerics_info`)."""
    try:
        torch = metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        torch = "none"
    return {
        "platform": f"{platform.system()}-{platform.machine()}",
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "python": platform.python_version(),
        "torch": torch,
        "device": device,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def numerics_info(stages: Mapping[str, Any]) -> dict[str, Any]:
    """The numerics part of a fingerprint from a run's ``results/stages.json``: the ISA cap, the
    BLAS libraries and the dispatch in effect in its jobs."""
    dispatch = dict(stages.get("dispatch") or {})
    blas = f"torch {dispatch.get('torch_blas', '?')}, numpy {dispatch.get('numpy_blas', '?')}"
    return {"cpu_isa": stages.get("cpu_isa"), "blas": blas, "dispatch": dispatch}


def tolerance_mode(published: Mapping[str, Any], here: Mapping[str, Any], spread: bool = False) -> str:
    """``identical`` when both runs are on the CPU with the same fingerprint; otherwise
    ``seed range`` when the published file has a seed spread, else ``ci95``.

    Args:
        published: the published file's ``produced`` block (may be empty: not identical).
        here: the reproduction's fingerprint (:func:`platform_info` | :func:`numerics_info`).
        spread: whether the published file has a seed spread.
    """
    same = all(published.get(k) and published.get(k) == here.get(k) for k in FINGERPRINT_KEYS)
    cpu = published.get("device") == "cpu" and here.get("device") == "cpu"
    if same and cpu:
        return IDENTICAL
    return SEED_RANGE if spread else CI95


def fingerprint_differences(published: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """``key: published -> here`` for each :data:`FINGERPRINT_KEYS` entry (and device) that differs."""
    return [f"{k}: {published.get(k, '?')} -> {here.get(k, '?')}" for k in (*FINGERPRINT_KEYS, "device")
            if published.get(k) != here.get(k)]


def _normalise(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One experiment's metrics in the summary's flat shape (``m``, ``m_ci95_low``, ``m_ci95_high``).

    Also accepted (a recipe's ``reference:`` block): ``m: [value, low, high]`` and
    ``m: {value: v, ci95: [low, high]}``.
    """
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, list | tuple) and len(value) == 3:
            out[key], out[key + CI_LOW], out[key + CI_HIGH] = value
        elif isinstance(value, Mapping) and "value" in value:
            out[key] = value["value"]
            low, high = value.get("ci95") or (None, None)
            out[key + CI_LOW], out[key + CI_HIGH] = low, high
        elif not isinstance(value, Mapping | list | tuple):
            out[key] = value
    return out


def headline_values(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{experiment: {metric: value, metric_ci95_low: ..., ...}}`` of a summary or a reference.

    ``excluded`` (scans left out) contributes its count as ``excluded/n_scans``; ``produced``
    (the published file's provenance), ``seeds``, ``spread`` and ``stages`` are skipped.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, block in summary.items():
        if name in META_BLOCKS and name != "excluded":
            continue
        if not isinstance(block, Mapping):
            raise InputError(f"summary entry {name!r}: expected a mapping of metrics, got {block!r}")
        out[name] = {"n_scans": block.get("n_scans")} if name == "excluded" else _normalise(block)
    return out


def _better(key: str, ours: float, theirs: float) -> bool:
    lower = any(part in key for part in LOWER_IS_BETTER)
    return ours <= theirs if lower else ours >= theirs


def _comparison_row(metric: str, key: str, theirs: Any, got: Mapping[str, Any]) -> Row:
    ours, low, high = got.get(key), got.get(key + CI_LOW), got.get(key + CI_HIGH)
    if not (_number(ours) and _number(theirs)):
        ok = ours == theirs
        return Row(metric, theirs, ours, "equal", ok, "" if ok else "differs")
    if _number(low) and _number(high):
        inside = float(low) <= float(theirs) <= float(high)
        ok = inside or _better(key, float(ours), float(theirs))
        return Row(metric, theirs, ours, f"ours {float(ours):.4g} [{float(low):.4g}, {float(high):.4g}]: "
                   "theirs inside, or ours better", ok, "" if ok else "theirs outside our CI and better")
    ok = _better(key, float(ours), float(theirs))
    return Row(metric, theirs, ours, "ours at least as good (no CI)", ok, "" if ok else "theirs better")


def _compare_one(name: str, ref: Mapping[str, Any], got: Mapping[str, Any], key: str, mode: str,
                 spread: Mapping[str, Any] | None) -> Row:
    pub, rep = ref.get(key), got.get(key)
    low, high = ref.get(key + CI_LOW), ref.get(key + CI_HIGH)
    metric = f"{name}/{key}"
    if key not in got:
        return Row(metric, pub, None, "", False, "missing from the reproduction")
    if mode == COMPARISON:
        return _comparison_row(metric, key, pub, got)
    interval = tolerance_interval(spread[key]) if mode == SEED_RANGE and spread and key in spread else None
    if interval is not None and interval[0] < interval[1]:
        lo, hi = interval
        ok = _number(rep) and lo <= float(rep) <= hi
        return Row(metric, pub, rep, f"seeds [{lo:.4g}, {hi:.4g}]", bool(ok),
                   "" if ok else "outside the published seed range")
    if mode == CI95 and _number(low) and _number(high) and _number(pub):
        tol = f"95% CI [{low:.4g}, {high:.4g}]"
        ok = _number(rep) and float(low) <= float(rep) <= float(high)
        return Row(metric, pub, rep, tol, bool(ok), "" if ok else "outside the published CI")
    tol = IDENTICAL if mode == IDENTICAL and _number(pub) else "equal"
    ok = pub == rep or (_number(pub) and _number(rep) and float(pub) == float(rep))
    return Row(metric, pub, rep, tol, bool(ok), "" if ok else "differs")


def compare(reference: Mapping[str, Any], reproduced: Mapping[str, Any], mode: str,
            spread: Mapping[str, Mapping[str, Any]] | None = None) -> list[Row]:
    """Every headline metric of ``reference`` checked against ``reproduced``.

    Args:
        reference: the published summary (or a recipe's ``reference:`` block), the shape of
            ``results/summary.json``: ``{experiment: {metric, metric_ci95_low, metric_ci95_high}}``.
        reproduced: the reproduced ``results/summary.json``.
        mode: one of :data:`MODES` (:func:`tolerance_mode`; :data:`COMPARISON` for a recipe).
        spread: the published seed spread (``{experiment: {metric: stats}}``), for ``seed range``.

    Returns:
        One row per metric of the reference (CI bounds are tolerances, not rows), in its order.
    """
    if mode not in MODES:
        raise ValueError(f"unknown tolerance mode {mode!r}")
    ref, got = headline_values(reference), headline_values(reproduced)
    rows = []
    for name, metrics in ref.items():
        theirs = got.get(name, {})
        for key in metrics:
            if key.endswith((CI_LOW, CI_HIGH)):
                continue
            rows.append(_compare_one(name, metrics, theirs, key, mode, (spread or {}).get(name)))
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _why(mode: str, published: Mapping[str, Any], here: Mapping[str, Any]) -> str:
    if mode == IDENTICAL:
        return (f"identical: the same fingerprint as the published run (CPU {here.get('cpu')}, ISA cap "
                f"{here.get('cpu_isa')}, torch {here.get('torch')}, {here.get('blas')}, {here.get('platform')})")
    differ = "; ".join(fingerprint_differences(published, here)) or "unknown"
    if mode == SEED_RANGE:
        return (f"within the published seed range +- 3 SD: another fingerprint ({differ}); a "
                "training run there is another draw of the training seed")
    if mode == COMPARISON:
        return ("comparison, not reproduction: the reference is another method, split or dataset; "
                "a metric passes when their value lies inside our 95 % CI or ours is better")
    return f"within the published 95 % CIs (the published file has no seed spread): {differ}"


def format_table(rows: list[Row], mode: str, published: Mapping[str, Any], here: Mapping[str, Any]) -> str:
    """The side-by-side table (published, reproduced, difference, within tolerance?) as text,
    with a header saying which tolerance applied and why, and a last line with the verdict."""
    why = _why(mode, published, here)
    head = ("metric", "theirs" if mode == COMPARISON else "published",
            "ours" if mode == COMPARISON else "reproduced", "difference", "tolerance", "ok")
    body = [(r.metric, _fmt(r.published), _fmt(r.reproduced), _fmt(r.difference), r.tolerance,
             "yes" if r.ok else f"NO ({r.note})") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = [f"tolerance: {why}", ""]
    for i, cells in enumerate([head, *body]):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    bad = [r.metric for r in rows if not r.ok]
    lines.append("")
    verb = "compare as the rule asks" if mode == COMPARISON else "reproduced"
    lines.append(f"MISMATCH in {len(bad)} of {len(rows)} metrics: {', '.join(bad)}" if bad
                 else f"all {len(rows)} metrics {verb}")
    return "\n".join(lines)


def table_tsv(rows: list[Row], mode: str) -> str:
    """The comparison as TSV (one row per metric), e.g. for ``results/reproduce.tsv``."""
    lines = ["metric\tpublished\treproduced\tdifference\ttolerance\tmode\tok\tnote"]
    for r in rows:
        lines.append("\t".join([r.metric, _fmt(r.published), _fmt(r.reproduced), _fmt(r.difference),
                                r.tolerance, mode, str(r.ok).lower(), r.note]))
    return "\n".join(lines) + "\n"


def published_doc(summaries: Mapping[str, Mapping[str, Any]], stages: Mapping[str, Any],
                  produced: Mapping[str, Any]) -> dict[str, Any]:
    """The published file: ``produced`` (the fingerprint, commit, date and training seeds), the
    first seed's summary (what ``reproduce`` re-runs by default), every seed's summary and stage
    hashes, and the seed spread.

    Args:
        summaries: ``{seed: results/summary.json}`` in the order the seeds ran.
        stages: ``{seed: results/stages.json's stages}``.
        produced: where and how the run was made.
    """
    if not summaries:
        raise InputError("nothing to publish: no seed's summary")
    first = next(iter(summaries.values()))
    if "produced" in first:
        raise InputError("the summary already has a 'produced' block (is it a published file?)")
    return {"produced": {**produced, "train_seeds": [int(s) for s in summaries]}, **first,
            "spread": seed_spread(summaries), "seeds": {str(k): dict(v) for k, v in summaries.items()},
            "stages": {str(k): v for k, v in stages.items()}}

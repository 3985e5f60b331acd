"""Compare a reproduced ``results/summary.json`` with a published one, metric by metric.

The published file (``published/phantom/summary.json``, written by ``mripipe publish``) holds
the summary (every experiment's headline metrics with their 95 % bootstrap CIs, as
:mod:`mripipe.evaluate.summarise` writes them) and where it was produced: commit, platform,
Python, torch, device, date.

Tolerance:

- ``identical``: the reproduction ran on the CPU of the same platform (OS and architecture) with
  the same torch version as the published run, also on CPU: every number must be equal (the CPU
  path is seeded and deterministic).
- ``ci95``: another platform, another torch, or a GPU on either side: each metric must lie inside
  the published 95 % CI; a number without a CI (counts such as ``n_scans``) must still be equal.

Strings (``task``, ``space``) are always compared for equality. :func:`compare` works on any
reference dict of the summary's shape, so a recipe's ``reference:`` block is checked the same way.
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

IDENTICAL = "identical"
CI95 = "ci95"
CI_LOW, CI_HIGH = "_ci95_low", "_ci95_high"
#: What must match for the ``identical`` tolerance (besides both runs being on the CPU).
SAME_PLATFORM_KEYS = ("platform", "torch")


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


def platform_info(device: str = "cpu") -> dict[str, str]:
    """Where a run happens: platform (OS-architecture), CPU, Python, torch, device, date (UTC)."""
    try:
        torch = metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        torch = "none"
    return {
        "platform": f"{platform.system()}-{platform.machine()}",
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "torch": torch,
        "device": device,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tolerance_mode(published: Mapping[str, Any], here: Mapping[str, Any]) -> str:
    """``identical`` when both runs are on the CPU of the same platform and torch, else ``ci95``.

    Args:
        published: the published file's ``produced`` block (may be empty: then ``ci95``).
        here: :func:`platform_info` of the reproduction.
    """
    same = all(published.get(k) and published.get(k) == here.get(k) for k in SAME_PLATFORM_KEYS)
    cpu = published.get("device") == "cpu" and here.get("device") == "cpu"
    return IDENTICAL if same and cpu else CI95


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
    (the published file's provenance) is skipped.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, block in summary.items():
        if name == "produced":
            continue
        if not isinstance(block, Mapping):
            raise InputError(f"summary entry {name!r}: expected a mapping of metrics, got {block!r}")
        out[name] = {"n_scans": block.get("n_scans")} if name == "excluded" else _normalise(block)
    return out


def _compare_one(name: str, ref: Mapping[str, Any], got: Mapping[str, Any], key: str, mode: str) -> Row:
    pub, rep = ref.get(key), got.get(key)
    low, high = ref.get(key + CI_LOW), ref.get(key + CI_HIGH)
    metric = f"{name}/{key}"
    if key not in got:
        return Row(metric, pub, None, "", False, "missing from the reproduction")
    if mode == CI95 and _number(low) and _number(high) and _number(pub):
        tol = f"95% CI [{low:.4g}, {high:.4g}]"
        ok = _number(rep) and float(low) <= float(rep) <= float(high)
        return Row(metric, pub, rep, tol, bool(ok), "" if ok else "outside the published CI")
    tol = IDENTICAL if mode == IDENTICAL and _number(pub) else "equal"
    ok = pub == rep or (_number(pub) and _number(rep) and float(pub) == float(rep))
    return Row(metric, pub, rep, tol, bool(ok), "" if ok else "differs")


def compare(reference: Mapping[str, Any], reproduced: Mapping[str, Any], mode: str) -> list[Row]:
    """Every headline metric of ``reference`` checked against ``reproduced``.

    Args:
        reference: the published summary (or a recipe's ``reference:`` block), the shape of
            ``results/summary.json``: ``{experiment: {metric, metric_ci95_low, metric_ci95_high}}``.
        reproduced: the reproduced ``results/summary.json``.
        mode: :data:`IDENTICAL` or :data:`CI95` (:func:`tolerance_mode`).

    Returns:
        One row per metric of the reference (CI bounds are tolerances, not rows), in its order.
    """
    if mode not in (IDENTICAL, CI95):
        raise ValueError(f"unknown tolerance mode {mode!r}")
    ref, got = headline_values(reference), headline_values(reproduced)
    rows = []
    for name, metrics in ref.items():
        theirs = got.get(name, {})
        for key in metrics:
            if key.endswith((CI_LOW, CI_HIGH)):
                continue
            rows.append(_compare_one(name, metrics, theirs, key, mode))
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_table(rows: list[Row], mode: str, published: Mapping[str, Any], here: Mapping[str, Any]) -> str:
    """The side-by-side table (published, reproduced, difference, within tolerance?) as text,
    with a header saying which tolerance applied and why, and a last line with the verdict."""
    if mode == IDENTICAL:
        why = (f"identical: CPU on the same platform ({here.get('platform')}, torch "
               f"{here.get('torch')}) as the published run")
    else:
        why = (f"within the published 95 % CIs: published on {published.get('platform', '?')} "
               f"({published.get('device', '?')}, torch {published.get('torch', '?')}), reproduced on "
               f"{here.get('platform')} ({here.get('device')}, torch {here.get('torch')})")
    head = ("metric", "published", "reproduced", "difference", "tolerance", "ok")
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
    lines.append(f"MISMATCH in {len(bad)} of {len(rows)} metrics: {', '.join(bad)}" if bad
                 else f"all {len(rows)} metrics reproduced")
    return "\n".join(lines)


def table_tsv(rows: list[Row], mode: str) -> str:
    """The comparison as TSV (one row per metric), e.g. for ``results/reproduce.tsv``."""
    lines = ["metric\tpublished\treproduced\tdifference\ttolerance\tmode\tok\tnote"]
    for r in rows:
        lines.append("\t".join([r.metric, _fmt(r.published), _fmt(r.reproduced), _fmt(r.difference),
                                r.tolerance, mode, str(r.ok).lower(), r.note]))
    return "\n".join(lines) + "\n"


def published_doc(summary: Mapping[str, Any], produced: Mapping[str, Any]) -> dict[str, Any]:
    """The published file: the summary plus ``produced`` (commit, platform, torch, device, date)."""
    if "produced" in summary:
        raise InputError("the summary already has a 'produced' block (is it a published file?)")
    return {"produced": dict(produced), **summary}

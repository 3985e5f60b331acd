"""What every subcommand module of the CLI shares: the common options, the JSON option type,
the mark naming the stage module an adapter calls, the conversions of parsed values, and the
user-facing output (:func:`show`, stdout)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

Adapter = Callable[[argparse.Namespace], Any]
A = TypeVar("A", bound=Adapter)


def show(text: str) -> None:
    """A command's user-facing output: stdout, flushed at once (``mripipe ui`` keeps running)."""
    print(text, flush=True)


def json_object(text: str) -> dict[str, Any]:
    """An option's value parsed as a JSON object (``--params``: a config section)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--params must be a JSON object")
    return value


def add_common(p: argparse.ArgumentParser) -> None:
    """``--log`` and ``--params``, the options of every subcommand a rule runs."""
    p.add_argument("--log", default=None, help="also log to this file (the rule's log:)")
    p.add_argument("--params", type=json_object, default={}, help="the stage's config section as JSON")


def add_label_grid(p: argparse.ArgumentParser) -> None:
    """``--label-grid``: how a label map must lie on its image's grid, as validation checked it."""
    p.add_argument("--label-grid", type=json_object, default={},
                   help="data.grid_tolerance_mm and data.resample_labels as JSON (default: the schema's)")


def executes(module: str) -> Callable[[A], A]:
    """Mark an adapter with the stage module whose typed function it calls: what
    :func:`mripipe.cli.command_module` returns, whose import closure is the rule's code."""

    def mark(adapter: A) -> A:
        adapter.stage_module = module  # type: ignore[attr-defined]
        return adapter

    return mark


def optional_path(value: str | None) -> Path | None:
    """A path option that may be absent (None or empty)."""
    return Path(value) if value else None


def paths(values: list[str] | None) -> list[Path]:
    """A list option of paths (absent: empty)."""
    return [Path(v) for v in values or ()]


def gpu_locks() -> Path:
    """The device-allocation locks of this working directory, shared by every job run here."""
    return Path.cwd() / ".mripipe" / "gpu-locks"

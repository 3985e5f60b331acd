"""The configuration schema, the single source of every default.

``workflow/schemas/config.schema.yaml`` documents, types and defaults each key. Snakemake
validates the config against it when the DAG is parsed, so a rule always hands a stage its full
section. A stage function called directly (unit tests, benchmarks, ``mripipe`` by hand) with a
partial section gets the same defaults through :func:`with_defaults`: no module keeps its own copy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mripipe.core.errors import InputError

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


@cache
def schema() -> dict[str, Any]:
    """The parsed config schema."""
    if not SCHEMA_PATH.is_file():
        raise FileNotFoundError(f"{SCHEMA_PATH}: config schema not found (mripipe runs from its repository)")
    return dict(yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8")))


def _fill(node: Mapping[str, Any], value: Any) -> Any:
    """``value`` with the defaults of ``node`` (and of its nested objects) filled in."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for key, sub in node.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _fill(sub, out[key])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        known = set(node.get("properties", {}))
        for key in out:
            if key not in known:
                out[key] = _fill(extra, out[key])
    return out


def with_defaults(section: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A config section with the schema's defaults filled in and validated.

    Args:
        section: a top-level key of the config (``preprocess``, ``evaluate``, ...).
        params: the section as given (possibly partial); None = all defaults.

    Raises:
        InputError: an unknown key or a wrong type, naming it.
    """
    node = schema()["properties"].get(section)
    if node is None:
        raise KeyError(f"no config section {section!r} in {SCHEMA_PATH}")
    filled = _fill(node, dict(params or {}))
    try:
        jsonschema.Draft202012Validator(node).validate(filled)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path)
        raise InputError(f"{section}{'.' + where if where else ''}: {exc.message}") from None
    return filled


@cache
def _defaults(section: str) -> dict[str, Any]:
    return with_defaults(section)


def param(section: str, params: Mapping[str, Any], key: str) -> Any:
    """``params[key]``, or the schema's default of ``section.key`` when a direct caller left it out."""
    return params[key] if key in params else copy.deepcopy(_defaults(section)[key])

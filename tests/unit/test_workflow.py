"""The DAG's configuration contract: the schema validates and defaults, a bad key fails at parse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


@pytest.mark.parametrize("path", ["config/config.yaml", "tests/e2e/config.yaml"])
def test_shipped_configs_are_valid(path: str) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load((REPO / path).read_text()))


def test_every_schema_key_is_documented() -> None:
    def walk(node: dict, where: str) -> list[str]:
        missing = []
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub and sub.get("type") != "object":
                missing.append(f"{where}.{key}")
            missing += walk(sub, f"{where}.{key}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            missing += walk(extra, f"{where}.*")
        return missing

    assert walk(SCHEMA, "config") == []


def _dry_run(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config)
    bindir = Path(sys.executable).parent
    return subprocess.run(
        [str(bindir / "snakemake"), "-n", "--cores", "1", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(cfg)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"},
    )


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ("split: {test_fracton: 0.2}\nexperiments: {x: {task: segmentation}}\n", "test_fracton"),
        ("seed: one\nexperiments: {x: {task: segmentation}}\n", "seed"),
        ("experiments: {x: {task: regression}}\n", "regression"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(config: str, named: str, tmp_path: Path) -> None:
    proc = _dry_run(config, tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Error validating config file" in out
    assert named in out
    assert not (tmp_path / "results").exists()

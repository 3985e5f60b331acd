from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mripipe.cli import build_parser, main

STAGES = [
    "phantom", "manifest", "fingerprint", "preprocess", "qc-table", "split", "patches",
    "search-init", "train", "select", "predict", "evaluate", "evaluate-detection", "summarise",
    "where",
]


def test_every_stage_has_a_subcommand() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(STAGES) <= set(sub.choices)  # type: ignore[union-attr]


def test_params_must_be_a_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["split", "--manifest", "m", "--seed", "1", "--out", "o", "--params", "[1]"])
    assert "JSON object" in capsys.readouterr().err


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tsv"
    proc = subprocess.run(
        [sys.executable, "-m", "mripipe.cli", "split", "--manifest", str(missing), "--seed", "1",
         "--out", str(tmp_path / "s.json")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert "nope.tsv" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s.json").exists()


def test_help_is_instant() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = subprocess.run(
        [sys.executable, "-c", "import sys, mripipe.cli; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert out == "False"

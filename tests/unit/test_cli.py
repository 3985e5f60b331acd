from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mripipe.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]

STAGES = [
    "phantom", "dicom", "manifest", "validate", "ready", "fingerprint", "preprocess", "qc-table", "split", "patches",
    "search-init", "train", "package", "predict", "evaluate", "evaluate-detection", "summarise",
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


def test_a_crash_keeps_its_traceback_in_the_log(tmp_path: Path) -> None:
    """An error the code does not raise on purpose (here a KeyError from a split file without a
    fold key the stage needs) is not dressed up as bad input: its traceback is in the rule's log."""
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("subject\tsession\tscan\tT1w\tlabel\tclass\n"
                        + "".join(f"sub-{i:03d}\tses-01\tsub-{i:03d}_ses-01\tx.nii.gz\t\tnone\n" for i in range(9)))
    log = tmp_path / "logs" / "split.log"
    code = (
        "import sys, mripipe.learn.split as s\n"
        "def boom(*a, **k):\n    return {}['folds']\n"
        "s.make_splits = boom\n"
        "from mripipe.cli import main\n"
        f"sys.exit(main(['split', '--manifest', {str(manifest)!r}, '--seed', '1', "
        f"'--out', {str(tmp_path / 's.json')!r}, '--log', {str(log)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    text = log.read_text()
    assert "Traceback" in text and "KeyError: 'folds'" in text and "crashed" in text
    assert not (tmp_path / "s.json").exists()


def test_bad_input_error_names_the_file_in_the_log(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.tsv"
    bad.write_text("not\ta manifest\n")
    log = tmp_path / "split.log"
    rc = main(["split", "--manifest", str(bad), "--seed", "1", "--out", str(tmp_path / "s.json"),
               "--log", str(log)])
    assert rc == 1
    errors = [line for line in log.read_text().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and str(bad) in errors[0]
    assert "Traceback" not in log.read_text()


def test_command_module_names_what_a_rule_executes() -> None:
    from mripipe.cli import command_module

    assert command_module("preprocess") == "mripipe.preprocess.preprocess_scan"  # records failures, runs pipeline
    assert command_module("evaluate") == "mripipe.evaluate.evaluate_experiment"
    assert command_module("search-init") == "mripipe.track.search_init"
    with pytest.raises(KeyError):
        command_module("nope")


def test_each_command_in_a_rule_leads_to_the_module_named_for_it() -> None:
    """``mripipe X`` in a rule file leads a reader to one module named for X: the module's base
    name is X (``-`` as ``_``), or X's first word begins it (``evaluate`` ->
    ``evaluate_experiment``), or it is X's first word (``qc-table`` -> ``qc``)."""
    import re

    from mripipe.cli import command_module

    rules = "".join(p.read_text(encoding="utf-8") for p in (REPO / "workflow" / "rules").glob("*.smk"))
    commands = set(re.findall(r"\"mripipe ([a-z][a-z-]*) ", rules))  # shell lines
    assert {"preprocess", "train", "evaluate", "package", "search-init"} <= commands
    wrong = {}
    for cmd in sorted(commands):
        base = command_module(cmd).rsplit(".", 1)[-1]
        first = cmd.split("-")[0]
        if not (base == cmd.replace("-", "_") or base.startswith(first) or first == base):
            wrong[cmd] = base
    assert wrong == {}


def _subcommands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", _subcommands())
def test_each_adapter_calls_only_the_stage_module_it_names(command: str) -> None:
    """The adapter imports (inside itself, so --help stays instant) its stage module and no other
    mripipe module: the rule's code inputs, the closure of command_module, cover what it runs."""
    from mripipe.cli import adapter, command_module

    func = adapter(command)
    assert func.__module__.startswith("mripipe.cli.") and func.__module__ != "mripipe.cli.arguments"
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m and m.startswith("mripipe")} == {command_module(command)}


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and f"usage: mripipe {command}" in capsys.readouterr().out


def test_a_rule_lists_the_adapter_module_as_code() -> None:
    """Editing an adapter re-runs the rules of its family's commands only; the dispatcher and the
    shared argument helpers are no rule's code."""
    from mripipe.cli import command_code

    train = command_code("train")
    assert {"src/mripipe/learn/train.py", "src/mripipe/learn/loop.py", "src/mripipe/cli/learn_commands.py"} <= set(train)
    assert not {"src/mripipe/cli/__init__.py", "src/mripipe/cli/arguments.py",
                "src/mripipe/cli/evaluate_commands.py"} & set(train)
    evaluate = command_code("evaluate")
    assert "src/mripipe/cli/evaluate_commands.py" in evaluate
    assert not [f for f in evaluate if f.startswith("src/mripipe/learn/")]
    assert "src/mripipe/cli/preprocess_commands.py" in command_code("preprocess")


def test_trials_per_gpu_reaches_the_device_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    """`train.trials_per_gpu` travels rule -> `--trials-per-gpu` -> train_trial(per_device=k),
    which hands it to core.devices.allocate (tested there with fake devices)."""
    import mripipe.learn.train as train

    seen: dict[str, object] = {}
    monkeypatch.setattr(train, "train_trial", lambda *a, **kw: seen.update(kw))
    assert main([
        "train", "--experiment", "e", "--trial", "trial-000", "--patches", "p", "--splits", "s",
        "--preprocessed", "x", "--manifest", "m", "--search", "j", "--seed", "1", "--out-dir", "o",
        "--trials-per-gpu", "3", "--loader-workers", "4",
    ]) == 0
    assert seen["per_device"] == 3 and seen["loader_workers"] == 4
    rule = (Path(__file__).resolve().parents[2] / "workflow" / "rules" / "learn.smk").read_text(encoding="utf-8")
    # a resource, not a param or a literal: re-packing trials onto GPUs never re-runs one
    assert 'trials_per_gpu=config["train"]["trials_per_gpu"]' in rule
    assert "--trials-per-gpu {resources.trials_per_gpu}" in rule
    # the same for the GPU DataLoader workers (train.loader_workers), in the one training rule
    # that train_rung and train_fold inherit (`use rule train as ... with:`)
    assert rule.count("mripipe train ") == 1
    assert rule.count("use rule train as ") == 2
    assert rule.count('loader_workers=config["train"]["loader_workers"]') == 1
    assert rule.count("--loader-workers {resources.loader_workers}") == 1

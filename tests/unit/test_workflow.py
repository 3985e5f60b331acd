"""The DAG's configuration contract: the schema validates and defaults, a bad key fails at parse."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", ["config/config.yaml", "tests/e2e/config.yaml", "tests/e2e/config_msd.yaml",
                                  "tests/e2e/config_dicom.yaml"])
def test_shipped_configs_are_valid(path: str) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load((REPO / path).read_text(encoding="utf-8")))


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


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bindir = Path(sys.executable).parent
    return subprocess.run(
        [str(bindir / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"},
    )


def _dry_run(config: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config)
    return _snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg), *args)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ("split: {test_fracton: 0.2}\nexperiments: {x: {task: segmentation}}\n", "test_fracton"),
        ("seed: one\nexperiments: {x: {task: segmentation}}\n", "seed"),
        ("experiments: {x: {task: regression}}\n", "regression"),
        ("experiments: {x: {task: segmentation, trainig: {epochs: 3}}}\n", "trainig"),
        ("experiments: {x: {task: segmentation, search: {n_trial: 8}}}\n", "n_trial"),
        ("experiments: {x: {task: segmentation, network: {chanels: [4, 8]}}}\n", "chanels"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(config: str, named: str, tmp_path: Path) -> None:
    proc = _dry_run(config, tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Error validating config file" in out
    assert named in out
    assert not (tmp_path / "results").exists()


def test_region_of_an_unknown_class_fails_at_parse_naming_the_key(tmp_path: Path) -> None:
    proc = _dry_run("data: {labels: {rim: 1, core: 2}}\nexperiments: {x: {task: segmentation}}\n"
                    "evaluate: {regions: {lesion: [rim, oedema]}}\n", tmp_path)
    assert proc.returncode != 0
    assert "evaluate.regions" in proc.stdout + proc.stderr and "oedema" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_every_object_in_the_schema_is_closed() -> None:
    """additionalProperties is false (or a schema for free-form maps) at every level."""
    def walk(node: dict, where: str) -> list[str]:
        open_ = []
        if node.get("type") == "object" and "additionalProperties" not in node:
            open_.append(where)
        for key, sub in node.get("properties", {}).items():
            open_ += walk(sub, f"{where}.{key}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            open_ += walk(extra, f"{where}.*")
        return open_

    assert walk(SCHEMA, "config") == []


def test_no_module_keeps_its_own_defaults() -> None:
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "src").rglob("*.py")
                 if "DEFAULTS" in p.read_text(encoding="utf-8") and p.name != "config.py"]
    assert offenders == []


def test_defaults_for_direct_callers_equal_what_snakemake_fills() -> None:
    from snakemake.utils import validate

    from mripipe.core.config import with_defaults

    config = {"experiments": {"x": {"task": "segmentation"}}}
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    for section in ("phantom", "preprocess", "split", "patches", "predict", "evaluate"):
        assert with_defaults(section) == config[section], section


def _job_counts(out: str) -> dict[str, int]:
    """The dry run's "Job stats" table: rule -> number of jobs."""
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {line.split()[0]: int(line.split()[1]) for line in table.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}


def test_successive_halving_rungs_are_dag_jobs(tmp_path: Path) -> None:
    """4 trials, rungs 2, eta 2: 4 trials of 4 epochs (10 // 2, cut to val_every 2), one `rung`
    job, 2 slots continuing to 10 epochs, and choose reads the slots; rungs 1 has no rung job."""
    exp = "experiments: {x: {task: segmentation, search: {n_trials: 4, rungs: %d}}}\n"
    for name in ("two", "one", "bad"):
        (tmp_path / name).mkdir()
    proc = _dry_run(exp % 2, tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = _job_counts(proc.stdout)
    assert (counts["train"], counts["rung"], counts["train_rung"], counts["package"]) == (4, 1, 2, 1)
    assert "results/x/rungs/1/slot-001/val_metrics.json" in proc.stdout
    assert "wildcards: experiment=x, rung=1, slot=001" in proc.stdout
    plain = _dry_run(exp % 1, tmp_path / "one")
    assert plain.returncode == 0 and "rung" not in _job_counts(plain.stdout)
    bad = _dry_run(exp % 4, tmp_path / "bad")  # budgets 0, 2, 4, 10: no epoch in rung 0
    assert bad.returncode != 0 and "rung budgets [0, 2, 4, 10]" in bad.stdout + bad.stderr


def test_fold_ensemble_jobs(tmp_path: Path) -> None:
    """split.n_folds 3, search on fold 1: `choose` fixes the trial, two `train_fold` jobs train it
    on folds 0 and 2 with the full budget, and one `package` packages the three; n_folds 1 has no
    fold job and the same choose and package."""
    exp = "split: {n_folds: %d}\nexperiments: {x: {task: segmentation, fold: %d, search: {n_trials: 2}}}\n"
    for name in ("three", "one"):
        (tmp_path / name).mkdir()
    proc = _dry_run(exp % (3, 1), tmp_path / "three")
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = _job_counts(proc.stdout)
    assert (counts["train"], counts["choose"], counts["train_fold"], counts["package"]) == (2, 1, 2, 1)
    for fold in (0, 2):
        assert f"wildcards: experiment=x, fold={fold}\n" in proc.stdout
    assert "results/x/folds/fold-1/" not in proc.stdout  # the search fold's member is the trial
    select = proc.stdout.split("rule package:", 1)[1].split("output:", 1)[0]
    assert ("results/x/choice.json, results/x/folds/fold-0/val_metrics.json, "
            "results/x/folds/fold-2/val_metrics.json") in select
    plain = _dry_run(exp % (1, 0), tmp_path / "one")
    assert plain.returncode == 0, plain.stderr[-2000:]
    counts = _job_counts(plain.stdout)
    assert "train_fold" not in counts and (counts["choose"], counts["package"]) == (1, 1)
    assert "results/x/folds" not in plain.stdout


def _shell_commands(out: str) -> list[tuple[str, str]]:
    """(rule, shell command) of each job of a dry run with --printshellcmds."""
    commands, rule = [], ""
    for line in out.splitlines():
        if line.startswith(("rule ", "localrule ", "checkpoint ", "localcheckpoint ")) and line.endswith(":"):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("Shell command: "):
            commands.append((rule, line.removeprefix("Shell command: ")))
    return commands


def test_the_three_training_rules_run_one_command(tmp_path: Path) -> None:
    """train_rung and train_fold are rule train (`use rule train as ... with:`): every training
    job runs `mripipe train` with the same arguments in the same order, the same patch cache,
    scans, split and search, but for what picks its trial (params.job) and its budget and folder."""
    proc = _dry_run("split: {n_folds: 3}\nexperiments: {x: {task: segmentation, fold: 1, "
                    "search: {n_trials: 4, rungs: 2}}}\n", tmp_path, "--printshellcmds")
    assert proc.returncode == 0, proc.stderr[-2000:]
    job = {"train": ["--trial"], "train_rung": ["--promote", "--slot"], "train_fold": ["--choice", "--fold"]}
    runs: dict[str, list[dict[str, str]]] = {rule: [] for rule in job}
    for rule, command in _shell_commands(proc.stdout):
        if rule in job:
            args = shlex.split(command)
            assert args[:2] == ["mripipe", "train"] and len(args) % 2 == 0, command
            runs[rule].append(dict(zip(args[2::2], args[3::2], strict=True)))
    assert {rule: len(r) for rule, r in runs.items()} == {"train": 4, "train_rung": 2, "train_fold": 2}
    shapes = {rule: {tuple(a for a in args if a not in job[rule]) for args in r} for rule, r in runs.items()}
    assert len({shape for s in shapes.values() for shape in s}) == 1, shapes
    every = [args for r in runs.values() for args in r]
    for flag in ("--patches", "--preprocessed", "--splits", "--manifest", "--search", "--seed", "--params",
                 "--trials-per-gpu", "--loader-workers", "--threads"):
        assert len({args[flag] for args in every}) == 1, flag
    assert every[0]["--patches"] == "results/patches" and every[0]["--preprocessed"] == "results/preprocessed"
    assert sorted(a["--trial"] for a in runs["train"]) == [f"trial-00{i}" for i in range(4)]
    assert sorted((a["--promote"], a["--slot"], a["--out-dir"]) for a in runs["train_rung"]) == [
        ("results/x/rungs/rung-0.json", f"00{k}", f"results/x/rungs/1/slot-00{k}") for k in range(2)]
    assert sorted((a["--choice"], a["--fold"], a["--out-dir"]) for a in runs["train_fold"]) == [
        ("results/x/choice.json", f, f"results/x/folds/fold-{f}") for f in ("0", "2")]
    # rung 0 stops at its rung's budget; the slots and the fold models train to training.epochs
    budgets = {rule: {a["--budget"] for a in r} for rule, r in runs.items()}
    assert budgets["train_rung"] == budgets["train_fold"] and budgets["train"] != budgets["train_rung"]


#: The one finding `snakemake --lint` may report, once for every rule. The rules run in the one
#: environment that `make` builds from requirements.lock (the `mripipe` console script and its
#: locked dependencies; the same on a SLURM cluster), not in a conda environment or container of
#: their own; the workflow has neither to name.
DEPLOYMENT_LINT = "Specify a conda environment or container for each rule."


def _lint_findings(out: str) -> list[str]:
    """"<rule or snakefile>: <title>" for each finding of `snakemake --lint` (its text output:
    Snakemake 9's command line prints text even when asked for json)."""
    findings, item = [], ""
    for line in out.splitlines():
        if line.startswith("Lints for "):
            item = line.removeprefix("Lints for ").split(" (line ", 1)[0].rstrip(":")
        elif line.startswith("    * ") and line.endswith(":"):
            findings.append(f"{item}: {line.removeprefix('    * ').removesuffix(':')}")
    return findings


@pytest.mark.parametrize("config", ["config/config.yaml", "tests/e2e/config.yaml", "tests/e2e/config_dicom.yaml"])
def test_snakemake_lint_is_clean_but_for_the_deployment_lint(config: str, tmp_path: Path) -> None:
    """`make lint-workflow`: every other finding of `snakemake --lint` fails, for the default
    config (read from config/ in the working directory, as in a checkout) and the e2e configs (the
    DICOM one takes the rules' DICOM branch)."""
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    args = [] if config == "config/config.yaml" else ["--configfile", str(REPO / config)]
    proc = _snakemake(tmp_path, "--lint", *args)
    findings = _lint_findings(proc.stdout + proc.stderr)
    assert proc.returncode == (1 if findings else 0), proc.stderr[-3000:]
    assert [f for f in findings if not f.endswith(f": {DEPLOYMENT_LINT}")] == []

"""``mripipe reproduce`` and ``mripipe publish``: run the pipeline from a clean state in a fresh
copy of the current commit, then compare its summary with the published one (or write it).

The copy is a ``git clone --shared`` of ``HEAD`` in a temporary folder: uncommitted changes are
not part of it (a warning says so), the user's ``data/``, ``results/`` and ``mlflow.db`` are
never read or written, and the package that runs is the copy's ``src/`` (``PYTHONPATH``), with
the tools of this environment (the venv is reused). Only the comparison table
(``results/reproduce.tsv``) or, for ``publish``, the published file comes back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from mripipe.core.errors import InputError
from mripipe.core.utils import atomic_path, interactive, read_json, write_json
from mripipe.evaluate.compare import (
    COMPARISON,
    IDENTICAL,
    Row,
    compare,
    format_table,
    numerics_info,
    platform_info,
    published_doc,
    table_tsv,
    tolerance_mode,
)
from mripipe.evaluate.hashes import where_runs_part
from mripipe.evaluate.spread import spread_table

log = logging.getLogger(__name__)

PUBLISHED = Path("published/phantom/summary.json")
TABLE = Path("results/reproduce.tsv")
SUMMARY = "results/summary.json"
STAGES = Path("results/stages.json")
DEFAULT_CONFIG = Path("config/config.yaml")
PUBLISH_STORE = Path("results/publish/mlflow.db")
#: The metrics of the README's seed table.
HEADLINE = ("lesion_seg/dice", "lesion_seg/sensitivity_at_1_fp", "lesion_seg/hd95_mm_median",
            "lesion_seg/abs_volume_error_ml", "lesion_seg/burden_balanced_accuracy",
            "burden_cls/balanced_accuracy", "burden_cls/auroc_macro")
STEPS = re.compile(r"(\d+) of (\d+) steps")


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise InputError(f"{repo}: git {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def fresh_copy(repo: Path, dest: Path) -> str:
    """Clone ``repo``'s ``HEAD`` into the empty folder ``dest``; return the commit.

    Uncommitted changes to tracked files are not in the copy: a warning names them.
    """
    commit = _git(repo, "rev-parse", "HEAD")
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    if dirty:
        log.warning("uncommitted changes are not part of the reproduction (commit %s is):\n%s",
                    commit[:12], dirty)
    _git(repo, "clone", "--quiet", "--shared", "--no-checkout", str(repo.resolve()), str(dest))
    _git(dest, "checkout", "--quiet", "--detach", commit)
    return commit


def _here() -> dict[str, Any]:
    """This machine's :func:`~mripipe.evaluate.compare.platform_info`, on the device a run uses."""
    return platform_info("cuda" if gpu_present() else "cpu")


def gpu_present() -> bool:
    """Whether the pipeline would train on a GPU here (it uses CUDA whenever it is present)."""
    from mripipe.core.devices import visible_devices

    return bool(visible_devices())


def run_pipeline(workdir: Path, cores: int, configfiles: list[str], log_path: Path) -> int:
    """Run the whole DAG in ``workdir`` with this environment's tools; output goes to ``log_path``.

    A progress bar follows Snakemake's "N of M steps" when stderr is a terminal; otherwise every
    such line is logged. Returns Snakemake's exit status.
    """
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(workdir / "src"), "MLFLOW_DISABLE_TELEMETRY": "true",
           "DVC_NO_ANALYTICS": "1"}
    cmd = [str(bindir / "snakemake"), "--cores", str(cores), "--keep-going"]
    if configfiles:
        cmd += ["--configfile", *configfiles]
    log.info("running %s in %s (log: %s)", " ".join(cmd[1:]), workdir, log_path)
    bar = tqdm(desc="reproduce", unit="job", disable=not interactive(), total=None)
    with open(log_path, "w") as fh, subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            match = STEPS.search(line)
            if match:
                done, total = map(int, match.groups())
                bar.total = total
                bar.n = done
                bar.refresh()
                if bar.disable:
                    log.info("%s", line.strip())
        code = proc.wait()
    bar.close()
    return code


@contextlib.contextmanager
def _workspace(keep: bool) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="mripipe-reproduce-"))
    ok = False
    try:
        yield tmp
        ok = True
    finally:
        if keep or not ok:
            log.info("the reproduction is kept in %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _link_data(repo: Path, work: Path) -> None:
    """A recipe's dataset lives in the user's ``data/`` (only read): link each entry the copy lacks."""
    src = repo / "data"
    if not src.is_dir():
        return
    (work / "data").mkdir(exist_ok=True)
    for entry in src.iterdir():
        target = work / "data" / entry.name
        if not target.exists():
            target.symlink_to(entry.resolve())


@dataclass(frozen=True)
class SeedRun:
    """One clean run of the DAG: its training seed (None: the config's), summary and stages.json."""

    seed: int | None
    summary: dict[str, Any]
    stages: dict[str, Any]


def master_seed(repo: Path, recipe: Path | None) -> int:
    """The config's master seed (``seed``): the first training seed of a spread."""
    cfg = yaml.safe_load((repo / (recipe or DEFAULT_CONFIG)).read_text()) or {}
    return int(cfg.get("seed", 42)) if isinstance(cfg, dict) else 42


def _overlay(tmp: Path, seed: int | None, tracking_uri: str | None) -> Path | None:
    """A config file setting the training seed (and where MLflow writes) over the run's config."""
    extra: dict[str, Any] = {}
    if seed is not None:
        extra["train_seed"] = seed
    if tracking_uri:
        extra["tracking"] = {"uri": tracking_uri}
    if not extra:
        return None
    path = tmp / f"overlay-{seed}.yaml"
    path.write_text(yaml.safe_dump(extra))
    return path


def fresh_runs(repo: Path, cores: int, recipe: Path | None, keep: bool, seeds: list[int | None],
               tracking_uri: str | None = None) -> tuple[list[SeedRun], dict[str, Any]]:
    """Clean runs of ``HEAD`` in one fresh copy, one per training seed in turn (the data,
    preprocessing and patch cache are made once; each seed re-runs training onwards), and the
    fingerprint (:func:`~mripipe.evaluate.compare.platform_info`, the numerics of the first
    run's stages.json, the commit)."""
    here = _here()
    runs = []
    with _workspace(keep) as tmp:
        work = tmp / "repo"
        commit = fresh_copy(repo, work)
        if recipe is not None:
            _link_data(repo, work)
        for seed in seeds:
            overlay = _overlay(tmp, seed, tracking_uri)
            files = [str(recipe or DEFAULT_CONFIG)] + ([str(overlay)] if overlay else [])
            log_path = tmp / f"snakemake-seed-{seed}.log"
            code = run_pipeline(work, cores, files if (recipe or overlay) else [], log_path)
            if code != 0 or not (work / SUMMARY).is_file():
                raise InputError(f"the reproduction run (training seed {seed}) failed (snakemake exit "
                                 f"{code}); its log: {log_path}, the job logs: {work / 'logs'}")
            runs.append(SeedRun(seed, read_json(work / SUMMARY), read_json(work / STAGES)))
            log.info("training seed %s done", seed)
    return runs, here | numerics_info(runs[0].stages) | {"commit": commit}


def reference_of(repo: Path, published: Path, recipe: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference summary and its provenance: the published file, or a recipe's ``reference:``."""
    if recipe is None:
        doc = read_json(repo / published)
        return doc, dict(doc.get("produced") or {})
    cfg = yaml.safe_load((repo / recipe).read_text()) or {}
    ref = cfg.get("reference") if isinstance(cfg, dict) else None
    if not isinstance(ref, dict):
        raise InputError(f"{recipe}: no 'reference:' block to compare with")
    return ref, dict(ref.get("produced") or {})


def _seeds_to_run(produced: dict[str, Any], all_seeds: bool) -> list[int | None]:
    seeds: list[int | None] = [int(x) for x in produced.get("train_seeds") or []]
    if not seeds:
        return [None]
    return seeds if all_seeds else seeds[:1]


def _given_run(summary: Path, seed: int | None) -> tuple[SeedRun, dict[str, Any]]:
    """A run made elsewhere: its summary and the stages.json beside it (if any)."""
    stages_path = summary.parent / STAGES.name
    stages = read_json(stages_path) if stages_path.is_file() else {}
    here = _here() | numerics_info(stages)
    return SeedRun(seed, read_json(summary), stages), here


def _stage_report(reference: dict[str, Any], run: SeedRun) -> tuple[list[str], str | None]:
    ref = (reference.get("stages") or {}).get(str(run.seed))
    if not ref or not run.stages.get("stages"):
        return ["stage hashes: none to compare (the published file or the run has none)"], None
    lines, first = where_runs_part(ref, run.stages["stages"])
    verdict = f"first stage whose outputs differ: {first}" if first else "every stage's outputs identical"
    return [f"stages (training seed {run.seed}):", *[f"  {x}" for x in lines], verdict], first


def _compare_runs(reference: dict[str, Any], runs: list[SeedRun], mode: str) -> tuple[list[Row], list[str], bool]:
    rows: list[Row] = []
    lines: list[str] = []
    stages_ok = True
    for run in runs:
        ref = (reference.get("seeds") or {}).get(str(run.seed), reference)
        got = compare(ref, run.summary, mode, reference.get("spread"))
        if len(runs) > 1:
            got = [replace(r, metric=f"seed {run.seed}: {r.metric}") for r in got]
        rows += got
        if mode != COMPARISON:
            stage_lines, first = _stage_report(reference, run)
            lines += stage_lines
            stages_ok = stages_ok and not (mode == IDENTICAL and first)
    return rows, lines, stages_ok


def reproduce(repo: Path, published: Path = PUBLISHED, recipe: Path | None = None, cores: int = 2,
              keep: bool = False, summary: Path | None = None, all_seeds: bool = False) -> tuple[str, int]:
    """Re-run ``HEAD`` from a clean state and compare it with the published result.

    Args:
        repo: the user's checkout (only its git history is read, and the table written).
        published: the published file, relative to ``repo``.
        recipe: compare a recipe's run with its ``reference:`` block (a comparison) instead.
        cores: Snakemake's ``--cores``.
        keep: keep the temporary copy (its path is logged).
        summary: compare this summary (and the stages.json beside it) instead of running.
        all_seeds: re-run every published training seed, not only the first.

    Returns:
        The report as text and the exit status (0: every metric within tolerance and, for the
        ``identical`` rule, every stage's outputs identical; 1: not).
    """
    reference, produced = reference_of(repo, published, recipe)
    seeds: list[int | None] = _seeds_to_run(produced, all_seeds) if recipe is None else [None]
    if summary is None:
        runs, here = fresh_runs(repo, cores, recipe, keep, seeds)
    else:
        run, here = _given_run(summary, seeds[0])
        runs = [run]
    mode = COMPARISON if recipe else tolerance_mode(produced, here, bool(reference.get("spread")))
    rows, stage_lines, stages_ok = _compare_runs(reference, runs, mode)
    with atomic_path(repo / TABLE) as tmp:
        tmp.write_text(table_tsv(rows, mode))
    head = (f"reference: {recipe or published} (commit {str(produced.get('commit', '?'))[:12]}, "
            f"{produced.get('date', '?')}); reproduced: commit {str(here.get('commit', '?'))[:12]}, "
            f"training seed(s) {', '.join(str(r.seed) for r in runs)}")
    text = "\n".join([head, format_table(rows, mode, produced, here), *stage_lines, f"(table: {TABLE})"])
    return text, 0 if all(r.ok for r in rows) and stages_ok else 1


def publish(repo: Path, out: Path = PUBLISHED, cores: int = 2, summary: Path | None = None,
            allow_dirty: bool = False, n_seeds: int = 5) -> str:
    """Write the published file from clean runs of ``HEAD`` with ``n_seeds`` training seeds (the
    config's seed, then the next ones), or from ``summary`` (a fresh ``make run``'s, one seed).
    Refuses a checkout with uncommitted changes: the commit must describe the code. The runs'
    MLflow store is kept in ``results/publish/mlflow.db`` (one search run per seed)."""
    if not allow_dirty and _git(repo, "status", "--porcelain", "--untracked-files=no"):
        raise InputError(f"{repo}: uncommitted changes; commit them first (the published file names the commit)")
    if n_seeds < 1:
        raise InputError(f"--seeds {n_seeds}: at least one training seed")
    if summary is None:
        base = master_seed(repo, None)
        store = (repo / PUBLISH_STORE).resolve()
        store.parent.mkdir(parents=True, exist_ok=True)
        seeds: list[int | None] = [base + i for i in range(n_seeds)]
        runs, here = fresh_runs(repo, cores, None, False, seeds,
                                tracking_uri=f"sqlite:///{store}")
    else:
        run, here = _given_run(summary, master_seed(repo, None))
        runs, here = [run], here | {"commit": _git(repo, "rev-parse", "HEAD")}
    doc = published_doc({str(r.seed): r.summary for r in runs},
                        {str(r.seed): r.stages.get("stages", []) for r in runs}, here)
    write_json(repo / out, doc)
    table = spread_table(doc["spread"], [str(r.seed) for r in runs], HEADLINE)
    return (f"published {out} (commit {here['commit'][:12]}, {here['platform']}, {here['cpu']}, ISA cap "
            f"{here.get('cpu_isa')}, {here['device']}, torch {here['torch']}), {len(runs)} training seed(s)\n"
            + "\n".join(table))

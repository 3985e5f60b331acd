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
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from mripipe.core.errors import InputError
from mripipe.core.utils import atomic_path, interactive, read_json, write_json
from mripipe.evaluate.compare import (
    compare,
    format_table,
    platform_info,
    published_doc,
    table_tsv,
    tolerance_mode,
)

log = logging.getLogger(__name__)

PUBLISHED = Path("published/phantom/summary.json")
TABLE = Path("results/reproduce.tsv")
SUMMARY = "results/summary.json"
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


def gpu_present() -> bool:
    """Whether the pipeline would train on a GPU here (it uses CUDA whenever it is present)."""
    from mripipe.core.devices import visible_devices

    return bool(visible_devices())


def run_pipeline(workdir: Path, cores: int, configfile: str | None, log_path: Path) -> int:
    """Run the whole DAG in ``workdir`` with this environment's tools; output goes to ``log_path``.

    A progress bar follows Snakemake's "N of M steps" when stderr is a terminal; otherwise every
    such line is logged. Returns Snakemake's exit status.
    """
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(workdir / "src"), "MLFLOW_DISABLE_TELEMETRY": "true",
           "DVC_NO_ANALYTICS": "1"}
    cmd = [str(bindir / "snakemake"), "--cores", str(cores), "--keep-going"]
    if configfile:
        cmd += ["--configfile", configfile]
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


def fresh_run(repo: Path, cores: int, recipe: Path | None, keep: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The summary of a clean run of ``HEAD`` (with ``recipe`` as its config, if given), and its
    provenance (:func:`~mripipe.evaluate.compare.platform_info` plus the commit)."""
    here = platform_info("cuda" if gpu_present() else "cpu")
    with _workspace(keep) as tmp:
        work = tmp / "repo"
        commit = fresh_copy(repo, work)
        if recipe is not None:
            _link_data(repo, work)
        code = run_pipeline(work, cores, str(recipe) if recipe else None, tmp / "snakemake.log")
        if code != 0 or not (work / SUMMARY).is_file():
            raise InputError(f"the reproduction run failed (snakemake exit {code}); its log: "
                             f"{tmp / 'snakemake.log'}, the job logs: {work / 'logs'}")
        summary = read_json(work / SUMMARY)
    return summary, here | {"commit": commit}


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


def reproduce(repo: Path, published: Path = PUBLISHED, recipe: Path | None = None, cores: int = 2,
              keep: bool = False, summary: Path | None = None) -> tuple[str, int]:
    """Re-run ``HEAD`` from a clean state and compare it with the published result.

    Args:
        repo: the user's checkout (only its git history is read, and the table written).
        published: the published file, relative to ``repo``.
        recipe: compare a recipe's run with its ``reference:`` block instead.
        cores: Snakemake's ``--cores``.
        keep: keep the temporary copy (its path is logged).
        summary: compare this summary instead of running (a run made elsewhere).

    Returns:
        The table as text and the exit status (0: every metric within tolerance, 1: not).
    """
    reference, produced = reference_of(repo, published, recipe)
    if summary is None:
        got, here = fresh_run(repo, cores, recipe, keep)
    else:
        got, here = read_json(summary), platform_info("cuda" if gpu_present() else "cpu")
    mode = tolerance_mode(produced, here)
    rows = compare(reference, got, mode)
    with atomic_path(repo / TABLE) as tmp:
        tmp.write_text(table_tsv(rows, mode))
    head = (f"reference: {recipe or published} (commit {str(produced.get('commit', '?'))[:12]}, "
            f"{produced.get('date', '?')}); reproduced: commit {str(here.get('commit', '?'))[:12]}")
    text = f"{head}\n{format_table(rows, mode, produced, here)}\n(table: {TABLE})"
    return text, 0 if all(r.ok for r in rows) else 1


def publish(repo: Path, out: Path = PUBLISHED, cores: int = 2, summary: Path | None = None,
            allow_dirty: bool = False) -> str:
    """Write the published file from a clean run of ``HEAD`` (or from ``summary``, a fresh
    ``make run``'s). Refuses a checkout with uncommitted changes: the commit must describe the code."""
    if not allow_dirty and _git(repo, "status", "--porcelain", "--untracked-files=no"):
        raise InputError(f"{repo}: uncommitted changes; commit them first (the published file names the commit)")
    if summary is None:
        got, here = fresh_run(repo, cores, None, keep=False)
    else:
        got = read_json(summary)
        here = platform_info("cuda" if gpu_present() else "cpu") | {"commit": _git(repo, "rev-parse", "HEAD")}
    write_json(repo / out, published_doc(got, here))
    return f"published {out} (commit {here['commit'][:12]}, {here['platform']}, {here['device']}, torch {here['torch']})"

"""The tiny e2e config through a real single-node SLURM cluster (`make test-slurm`).

`slurm-up.sh` starts munge, MariaDB, slurmdbd, slurmctld and slurmd; Snakemake submits every
non-local job with `--executor slurm` and the project's SLURM profile; `sacct` must list each of
them COMPLETED, GPU rules must have asked for the (fake) GPU, and `results/summary.json` must equal
a local run's. The cluster is stopped at the end, and that is checked too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# the daemons run as their own users (munge, mysql): their folder lies outside pytest's private tmp
RUN_DIR = Path("/tmp/mripipe-slurm")
SITE = HERE / "site"  # the test cluster's site profile (account, partition, runtime)
LOCAL_RULES = {"manifest", "split", "search_init", "package", "summarise", "all"}
GPU_RULES = {"train", "predict"}
SNAKEMAKE_TIMEOUT_S = 1500  # the plugin waits forever when sacct cannot reach accounting
DAEMONS = ("munge/munged.pid", "mysql/mysqld.pid", "pid/slurmdbd.pid", "pid/slurmctld.pid",
           "pid/slurmd.pid")

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _env() -> dict[str, str]:
    bindir = Path(sys.executable).parent
    return {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
    }


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="module")
def cluster() -> Iterator[Path]:
    """The run folder of a started cluster; stopped (again, idempotently) at the end."""
    if shutil.which("bash") is None:
        pytest.skip("SLURM test: needs bash")
    run_dir = RUN_DIR
    start = time.monotonic()
    up = subprocess.run(["bash", str(HERE / "slurm-up.sh"), str(run_dir)], capture_output=True,
                        text=True, timeout=900)
    if up.returncode == 3:
        pytest.skip(f"SLURM test cannot run on this machine: {up.stderr.strip()}")
    assert up.returncode == 0, up.stdout + up.stderr
    log.info("cluster up in %.1f s: %s", time.monotonic() - start, up.stdout.strip())
    try:
        yield run_dir
    finally:
        subprocess.run(["bash", str(HERE / "slurm-down.sh"), str(run_dir)], capture_output=True,
                       timeout=300)


@pytest.fixture(scope="module")
def local_summary(tmp_path_factory: pytest.TempPathFactory,
                  workflow_copy: Callable[[Path], Path]) -> dict[str, object]:
    """summary.json of the same tiny config run locally."""
    work = workflow_copy(tmp_path_factory.mktemp("local") / "repo")
    proc = subprocess.run(
        ["snakemake", "--configfile", "config/e2e.yaml", "--cores", "2"],
        cwd=work, env=_env(), capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads((work / "results" / "summary.json").read_text())


@pytest.fixture(scope="module")
def slurm_run(cluster: Path, tmp_path_factory: pytest.TempPathFactory,
              workflow_copy: Callable[[Path], Path]) -> tuple[Path, str]:
    """The tiny config through `snakemake --executor slurm`: (working copy, Snakemake's log)."""
    work = workflow_copy(tmp_path_factory.mktemp("cluster") / "repo")
    cmd = [
        "timeout", str(SNAKEMAKE_TIMEOUT_S),
        "snakemake", "--configfile", "config/e2e.yaml",
        "--profile", str(SITE), "--workflow-profile", "workflow/profiles/slurm",
        "--slurm-init-seconds-before-status-checks", "5",
        "--verbose",
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True,
                          timeout=SNAKEMAKE_TIMEOUT_S + 60)
    log.info("snakemake --executor slurm: %.1f s", time.monotonic() - start)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}"
                         for p in sorted((work / ".snakemake" / "slurm_logs").rglob("*.log")))
        pytest.fail(f"snakemake --executor slurm failed ({proc.returncode})\n{out[-6000:]}\n{logs}")
    return work, out


def _sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """sacct's record of each job (allocation line only): State, Comment, AllocTRES."""
    proc = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids),
         "-o", "JobID,State,Comment,AllocTRES,ExitCode"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.strip()]
    return {r[0]: {"state": r[1], "comment": r[2], "tres": r[3], "exit": r[4]} for r in rows}


def test_every_cluster_job_completed_in_sacct(slurm_run: tuple[Path, str]) -> None:
    work, out = slurm_run
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/([^/]+)/", out))
    assert submitted, out[-3000:]
    records: dict[str, dict[str, str]] = {}
    for _ in range(30):  # slurmdbd records a finished job within seconds
        records = _sacct(list(submitted))
        if all(r["state"] == "COMPLETED" for r in records.values()) and len(records) == len(submitted):
            break
        time.sleep(1)
    log.info("sacct:\n%s", "\n".join(f"{j} {r['state']:<10} {r['comment']:<28} {r['tres']}"
                                       for j, r in sorted(records.items(), key=lambda kv: int(kv[0]))))
    assert set(records) == set(submitted)
    assert {j: r["state"] for j, r in records.items() if r["state"] != "COMPLETED"} == {}
    rules = {re.sub(r"^(rule|group)_", "", name) for name in submitted.values()}
    # light jobs never reach the cluster; everything else did
    assert not rules & LOCAL_RULES, rules
    assert {"phantom", "scans_preprocess", "patches", "train", "predict", "evaluate",
            "qc_table"} <= rules, rules
    # sacct's comment names the rule (or group) Snakemake submitted, e.g. rule_train_wildcards_...
    for job, record in records.items():
        assert record["comment"].startswith("rule_" + re.sub(r"^(rule|group)_", "", submitted[job])), record


def test_gpu_rules_ask_for_the_gpu_and_only_they_do(slurm_run: tuple[Path, str]) -> None:
    work, out = slurm_run
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/([^/]+)/", out))
    records = _sacct(list(submitted))
    for job, folder in submitted.items():
        rule = re.sub(r"^(rule|group)_", "", folder)
        has_gpu = "gres/gpu=1" in records[job]["tres"]
        assert has_gpu == (rule in GPU_RULES), (rule, records[job]["tres"])
    # the GPU request is a resource (`--gpus`/`--gres`), never slurm_extra
    calls = [line for line in out.splitlines() if line.startswith("sbatch call:")]
    assert calls and not any("slurm_extra" in c for c in calls)


def test_preprocessing_is_bundled_into_group_jobs(slurm_run: tuple[Path, str]) -> None:
    work, out = slurm_run
    n_scans = len(list((work / "results" / "preprocessed").glob("sub-*/image.nii.gz")))
    groups = re.findall(r"submitted with SLURM jobid \d+ \(log: \S*/slurm_logs/group_scans_preprocess/", out)
    singles = re.findall(r"slurm_logs/rule_preprocess/", out)
    assert n_scans >= 9 and not singles
    assert 1 <= len(groups) < n_scans  # several scans per sbatch call


def test_cluster_outputs_equal_a_local_run(slurm_run: tuple[Path, str],
                                           local_summary: dict[str, object]) -> None:
    work, _ = slurm_run
    assert json.loads((work / "results" / "summary.json").read_text()) == local_summary


def test_cluster_stops(cluster: Path, slurm_run: tuple[Path, str]) -> None:
    """Runs last (file order): slurm-down.sh stops every daemon slurm-up.sh started."""
    pids = [cluster / p for p in DAEMONS]
    assert all(_alive(p) for p in pids), [p for p in pids if not _alive(p)]
    down = subprocess.run(["bash", str(HERE / "slurm-down.sh"), str(cluster)], capture_output=True,
                          text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    assert not [p for p in pids if _alive(p)]
    assert not Path("/etc/slurm/slurm.conf").is_symlink()
    again = subprocess.run(["bash", str(HERE / "slurm-down.sh"), str(cluster)], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0 and "stopped" not in again.stdout  # idempotent

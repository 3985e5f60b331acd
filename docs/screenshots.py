"""Screenshots of the MLflow UI on a finished run, from exactly the links ``mripipe ui`` prints
(``make screenshots``), each taken as a newcomer lands on it: a fresh Chromium profile, headless.

- ``docs/img/mlflow_runs.png``: the first experiment's trials link: the runs table with one group
  per search (per seed), its trials sorted by the selection metric, which with the searched
  parameters are the first columns.
- ``docs/img/mlflow_parallel.png``: its compare link: the trials side by side, the
  parallel-coordinates plot of the searched parameters against the selection metric.

The end-to-end test ``tests/e2e/test_ui_browser.py`` drives the same functions: it loads every printed
link and checks the rendered DOM for each trial's name and selection-metric value.

Usage: ``python docs/screenshots.py --run DIR [--experiment lesion_seg] [--out docs/img]`` where
``DIR`` holds ``mlflow.db`` (a finished ``make run``, or the tiny e2e configuration).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("screenshots")
#: a newcomer's laptop screen
WINDOW = "1440,900"
EXPERIMENT = re.compile(r"^(\S+): \d+ trials?,")
LINK = re.compile(r"^\s+(trials|compare)\b.*?(http://\S+)\s*$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chromium(install: bool = True) -> str:
    """The Chromium executable; Debian's ``chromium`` package installed first when missing and
    ``install`` (as root, or with password-less sudo). Raises RuntimeError naming why not."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    apt = shutil.which("apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if not install or apt is None or (sudo and shutil.which("sudo") is None):
        raise RuntimeError("no Chromium, and no apt-get as root to install Debian's `chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([*sudo, apt, "update", "-qq"], [*sudo, apt, "install", "-y", "-qq", "chromium"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-400:]}")
    if path := shutil.which("chromium"):
        return path
    raise RuntimeError("apt-get installed `chromium` but it is not on PATH")


@contextmanager
def mripipe_ui(run_dir: Path, env: dict[str, str] | None = None) -> Iterator[dict[str, dict[str, str]]]:
    """``mripipe ui --no-browser`` on ``run_dir``'s store, as a user starts it there; yields the
    printed links, ``{experiment: {"trials": url, "compare": url}}`` in printed order, and stops
    the server on exit."""
    exe = Path(sys.executable).parent / "mripipe"
    proc = subprocess.Popen([str(exe), "ui", "--no-browser", "--port", str(free_port())], cwd=run_dir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    links: dict[str, dict[str, str]] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # printed at once when the server answers, "Ctrl-C" last
            if m := EXPERIMENT.match(line):
                links[m.group(1)] = {}
            elif m := LINK.match(line):
                links[list(links)[-1]][m.group(1)] = m.group(2)
            elif "Ctrl-C" in line:
                break
        if not links:
            raise RuntimeError(f"mripipe ui in {run_dir} printed no links")
        log.info("mripipe ui: %s", links)
        yield links
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def browse(url: str, profile: Path, *, dom: bool = False, shot: Path | None = None,
           size: str = WINDOW) -> str:
    """Load ``url`` in headless Chromium (the page's scripts get 20 s of virtual time) with the
    profile folder ``profile``; return the rendered DOM (``dom``) or write a screenshot."""
    cmd = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--no-first-run", "--disable-extensions",
           f"--window-size={size}", "--virtual-time-budget=20000"]
    cmd += ["--dump-dom"] if dom else [f"--screenshot={shot}"]
    proc = subprocess.run([*cmd, url], check=True, capture_output=True, text=True, timeout=180)
    log.info("%s <- %s", shot or "DOM", url)
    return proc.stdout


def take(run_dir: Path, out_dir: Path, experiment: str = "lesion_seg") -> list[Path]:
    """The two screenshots from the links ``mripipe ui`` prints for ``experiment``, each in a
    fresh profile (what a newcomer sees, MLflow's assistant panel included)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = [out_dir / "mlflow_runs.png", out_dir / "mlflow_parallel.png"]
    with mripipe_ui(run_dir) as links:
        urls = links[experiment]["trials"], links[experiment]["compare"]
        for url, shot in zip(urls, shots, strict=True):
            profile = Path(tempfile.mkdtemp(prefix="mripipe-chromium-"))
            try:
                browse(url, profile, shot=shot)
            finally:
                shutil.rmtree(profile, ignore_errors=True)
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished run's root (with mlflow.db)")
    parser.add_argument("--experiment", default="lesion_seg")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "img")
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not (ns.run / "mlflow.db").is_file():
        log.error("%s: no mlflow.db (run the pipeline there first)", ns.run)
        return 1
    take(ns.run.resolve(), ns.out.resolve(), ns.experiment)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Screenshots of the MLflow UI on a finished run, as a user sees it (``make screenshots``).

Starts ``mlflow server`` on 127.0.0.1 on the run's store (read only, apart from one experiment
tag: the shared view below), then takes headless Chromium screenshots:

- ``docs/img/mlflow_runs.png``: the experiment page, i.e. the runs table with the search run
  expanded to its trials and the selection metric, test metrics and searched parameters as
  columns. The view is an MLflow *shared view* (experiment tag ``mlflow.sharedViewState.<key>``,
  opened with ``?viewStateShareKey=<key>``), which is exactly what the UI's "Share" button
  writes; a user opening the plain experiment page sees the same runs.
- ``docs/img/mlflow_parallel.png``: the runs compared side by side (``#/compare-runs``): the
  parallel-coordinates plot of the searched parameters against the selection metric.

Usage: ``python docs/screenshots.py --run DIR [--experiment lesion_seg] [--out docs/img]`` where
``DIR`` holds ``mlflow.db`` (a finished ``make run``, or the tiny e2e configuration).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("screenshots")
SHARE_KEY = "mripipe-runs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(base: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def start_server(run_dir: Path, port: int) -> subprocess.Popen[bytes]:
    bindir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [str(bindir / "mlflow"), "server", "--backend-store-uri", "sqlite:///mlflow.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=run_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.terminate()
                raise RuntimeError("mlflow server did not start") from None
            time.sleep(1)


def shared_view(runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The runs table's state: search runs expanded, metric/param columns shown, sorted by metric."""
    keys: dict[str, set[str]] = {"metrics": set(), "params": set()}
    parents = []
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        if tags.get("mripipe.role") == "search":
            parents.append(run["info"]["run_id"])
        keys["metrics"] |= {m["key"] for m in run["data"].get("metrics", [])}
        if "mlflow.parentRunId" in tags:
            keys["params"] |= {p["key"] for p in run["data"].get("params", [])}
    metrics = [metric] + sorted(k for k in keys["metrics"] if k.startswith(("selected_", "test_"))
                                and "ci95" not in k)[:6]
    space = [p for p in sorted(keys["params"]) if p.startswith(("optimizer.", "network.", "loss.", "training."))]
    columns = (["attributes.`Dataset`", f"metrics.`{metric}`"] + [f"params.`{p}`" for p in space[:6]]
               + [f"metrics.`{m}`" for m in metrics[1:]])
    return {"runsExpanded": {p: True for p in parents}, "selectedColumns": columns,
            "orderByKey": f"metrics.`{metric}`", "orderByAsc": False, "compareRunsMode": "TABLE"}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no chromium: `apt-get install -y chromium` (make screenshots does)")


def screenshot(url: str, out: Path, profile: Path, size: str = "2200,900") -> None:
    """Headless Chromium screenshot of ``url`` (the page's scripts get 20 s of virtual time).

    ``profile`` is a Chromium profile kept across the shots: MLflow opens its assistant panel on
    a browser's first visit only (a flag in local storage), so a first throwaway visit keeps it
    out of the pictures.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={profile}",
           "--no-first-run", "--disable-extensions", f"--window-size={size}",
           "--virtual-time-budget=20000", f"--screenshot={out}", url]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    log.info("%s <- %s", out, url)


def take(run_dir: Path, experiment: str, out_dir: Path) -> list[Path]:
    port = free_port()
    server = start_server(run_dir, port)
    base = f"http://127.0.0.1:{port}"
    try:
        exp = api(base, f"experiments/get-by-name?experiment_name={experiment}")["experiment"]
        exp_id = exp["experiment_id"]
        runs = api(base, "runs/search", {"experiment_ids": [exp_id], "max_results": 500})["runs"]
        trials = [r for r in runs if any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))]
        search = next(r for r in runs if any(t["key"] == "mripipe.role" and t["value"] == "search"
                                             for t in r["data"].get("tags", [])))
        metric = next(p["value"] for p in search["data"]["params"] if p["key"] == "metric")
        api(base, "experiments/set-experiment-tag", {"experiment_id": exp_id,
                                                     "key": f"mlflow.sharedViewState.{SHARE_KEY}",
                                                     "value": json.dumps(shared_view(runs, metric))})
        shots = [out_dir / "mlflow_runs.png", out_dir / "mlflow_parallel.png"]
        profile = Path(tempfile.mkdtemp(prefix="mripipe-chromium-"))
        screenshot(f"{base}/#/experiments/{exp_id}/runs", profile / "first-visit.png", profile)
        screenshot(f"{base}/#/experiments/{exp_id}/runs?viewStateShareKey={SHARE_KEY}", shots[0], profile)
        ids = json.dumps([r["info"]["run_id"] for r in trials])
        query = urllib.parse.urlencode({"runs": ids, "experiments": json.dumps([exp_id])})
        screenshot(f"{base}/#/compare-runs?{query}", shots[1], profile, "1800,1100")
        shutil.rmtree(profile, ignore_errors=True)
        return shots
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished run's root (with mlflow.db)")
    parser.add_argument("--experiment", default="lesion_seg")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "img")
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not (ns.run / "mlflow.db").is_file():
        log.error("%s: no mlflow.db (run the pipeline there first)", ns.run)
        return 1
    take(ns.run.resolve(), ns.experiment, ns.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``mripipe ui``: the MLflow UI on this checkout's runs, opened on the comparison of the trials.

MLflow 3.17's frontend sets the runs page from the URL only in part, so each printed link is
built from what that frontend reads (``mlflow/server/js``):

- ``workflowType=machine_learning`` puts the sidebar on "Model training" whatever the browser's
  local storage says (it defaults to GenAI and ignores the experiment's
  ``mlflow.experimentKind`` tag: mlflow/mlflow#24498).
- The columns, their order, grouping and expanded rows are UI state, kept in local storage and
  read from no URL parameter; the one way in is a *shared view*: the experiment tag
  ``mlflow.sharedViewState.<key>`` (what the UI's "Share" button writes), opened with
  ``viewStateShareKey=<key>``. Its search facets carry the sort.
- The URL's own facets (``orderByKey``, ``orderByAsc``, ``searchFilter``...) must stay out of
  that link: with any of them present the frontend skips the shared view (measured).
- The compare page (``#/compare-runs?runs=[...]&experiments=[...]``) reads its run ids (and
  ``workflowType``);
  its parallel-coordinates plot starts on the first metric the runs share, in logging order,
  so the trials log the selection metric first (:func:`mripipe.learn.train`).

The view groups the trials by their ``search`` tag (:data:`mripipe.track.tracking.SEARCH_TAG`;
not in stores older than the tag): each search (one per seed) is a group, its trials sorted by
the selection metric, which with the searched parameters are the first columns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mripipe.track.server import (
    DEFAULT_ARTIFACTS,
    DEFAULT_BACKEND,
    DEFAULT_HOST,
    server_command,
    server_env,
)
from mripipe.track.tracking import SEARCH_TAG, TRIAL_TAG, client, retry

log = logging.getLogger(__name__)

#: ``viewStateShareKey`` of the view this module writes on every experiment with a search
SHARE_KEY = "mripipe-trials"
SHARE_TAG = "mlflow.sharedViewState."
#: the searched parameters shown as columns, at most
MAX_PARAM_COLUMNS = 8


@dataclass(frozen=True)
class ExperimentLinks:
    """The links ``mripipe ui`` prints for one experiment.

    Attributes:
        experiment: the MLflow experiment's name (an ``experiments:`` key).
        metric: the selection metric (``search.metric``).
        trials: the trial runs' names, best first.
        runs: its runs page in the shared view (trials grouped by search, sorted by ``metric``).
        compare: the compare page of every trial of every search of the experiment.
    """

    experiment: str
    metric: str
    trials: tuple[str, ...]
    runs: str
    compare: str


def _tags(run: Any) -> dict[str, str]:
    return dict(run.data.tags)


def runs_view(metric: str, params: Sequence[str], grouped: bool = True) -> dict[str, Any]:
    """The shared view state of the trials table: sorted by ``metric`` (best first; MLflow then
    lists child runs as rows of their own), with ``metric`` and the searched ``params`` as the
    first columns (MLflow orders metric columns alphabetically otherwise) and no other column
    chosen; ``grouped``: one group per ``search`` tag, its row showing the best ``metric``
    (runs without the tag would fall into MLflow's folded "Additional runs")."""
    columns = [f"metrics.`{metric}`"] + [f"params.`{p}`" for p in params]
    group = {"aggregateFunction": "max", "groupByKeys": [{"mode": "tag", "groupByData": SEARCH_TAG}]}
    return {
        "orderByKey": f"metrics.`{metric}`", "orderByAsc": False,
        "selectedColumns": columns, "columnOrder": columns,
        "groupBy": group if grouped else None, "groupsExpanded": {}, "runsExpanded": {},
    }


def _searched(search_runs: Sequence[Any]) -> list[str]:
    """The searched parameter names of the searches (their ``space`` parameter), in order."""
    names: list[str] = []
    for run in search_runs:
        try:
            space = json.loads(run.data.params.get("space") or "{}")
        except json.JSONDecodeError:  # a space too long for one MLflow parameter (cut at 6000)
            space = {}
        names += [k for k in space if k not in names]
    return names[:MAX_PARAM_COLUMNS]


def experiment_links(c: Any, base_url: str, experiment: Any) -> ExperimentLinks | None:
    """Write the shared view on ``experiment`` and return its links (None without a search).

    Args:
        c: MLflow client of the store the server shows.
        base_url: the UI's address, ``http://127.0.0.1:5000``.
        experiment: an MLflow experiment entity.
    """
    exp_id = str(experiment.experiment_id)
    runs = retry(c.search_runs, [exp_id], max_results=5000)
    searches = [r for r in runs if _tags(r).get("mripipe.role") == "search"]
    if not searches:
        return None
    metric = str(searches[-1].data.params.get("metric") or "")
    ids = {r.info.run_id for r in searches}
    trials = [r for r in runs if _tags(r).get("mlflow.parentRunId") in ids  # not the fold runs
              and "-fold-" not in _tags(r).get(TRIAL_TAG, "-fold-")]
    trials.sort(key=lambda r: -r.data.metrics.get(metric, float("-inf")))
    view = runs_view(metric, _searched(searches), all(SEARCH_TAG in _tags(r) for r in trials))
    retry(c.set_experiment_tag, exp_id, SHARE_TAG + SHARE_KEY, json.dumps(view))
    page = urllib.parse.urlencode({"workflowType": "machine_learning", "viewStateShareKey": SHARE_KEY})
    compare = urllib.parse.urlencode({"runs": json.dumps([r.info.run_id for r in trials]),
                                      "experiments": json.dumps([exp_id]),
                                      "workflowType": "machine_learning"})
    return ExperimentLinks(
        experiment=str(experiment.name), metric=metric,
        trials=tuple(str(r.info.run_name) for r in trials),
        runs=f"{base_url}/#/experiments/{exp_id}/runs?{page}",
        compare=f"{base_url}/#/compare-runs?{compare}",
    )


def write_links(tracking_uri: str, base_url: str) -> list[ExperimentLinks]:
    """:func:`experiment_links` of every experiment of the store that holds a search."""
    c = client(tracking_uri)
    found = [experiment_links(c, base_url, e) for e in retry(c.search_experiments)]
    return [f for f in found if f is not None]


def describe(base_url: str, links: Sequence[ExperimentLinks]) -> str:
    """What ``mripipe ui`` prints: the UI's address and, per experiment, its two links."""
    lines = [f"MLflow UI: {base_url}"]
    for x in links:
        n = len(x.trials)
        lines += [f"{x.experiment}: {n} trial{'s' * (n != 1)}, selection metric {x.metric}",
                  f"  trials, best {x.metric} first: {x.runs}",
                  f"  compare the trials:           {x.compare}"]
    if not links:
        lines.append("no search in this store yet: run the pipeline first")
    return "\n".join([*lines, "Ctrl-C stops the UI."])


def wait_until_up(base_url: str, server: subprocess.Popen[bytes], timeout: float = 180) -> None:
    """Return once ``base_url/health`` answers; raise if the server exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{base_url}/health", timeout=5)
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the MLflow server at {base_url} did not start") from None
            time.sleep(0.5)


def has_display() -> bool:
    """Whether a browser can be opened here (a desktop session, macOS or Windows)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform in ("darwin", "win32")


def ui(backend_store_uri: str = DEFAULT_BACKEND, artifacts: str | Path = DEFAULT_ARTIFACTS,
       host: str = DEFAULT_HOST, port: int = 5000, browser: bool = True,
       announce: Callable[[str], None] = log.info) -> int:
    """``mripipe ui``: start ``mlflow server`` on the store, write the shared views, hand the
    links to ``announce`` (the CLI prints them), open the first in a browser when ``browser``
    and a display exist, and serve until interrupted (Ctrl-C or SIGTERM).

    The server's own output goes to stderr (stdout holds the links only); it runs in a process
    group of its own, stopped whole on the way out (``mlflow server`` left alone outlives its
    parent, busy).

    Returns:
        The server's exit status (0 when interrupted).
    """
    cmd = server_command(backend_store_uri, artifacts, host, port)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    server = subprocess.Popen(cmd, env=server_env(), stdout=sys.stderr, start_new_session=True)
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        wait_until_up(base_url, server)
        links = write_links(backend_store_uri, base_url)
        announce(describe(base_url, links))
        if browser and links and has_display():
            webbrowser.open(links[0].runs)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(server)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group; SIGKILL whatever is left of it 20 s later."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()

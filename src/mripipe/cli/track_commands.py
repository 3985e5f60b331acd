"""Subcommands of tracking (:mod:`mripipe.track`): tracking-server, ui (search-init, a step of
the search, is in :mod:`mripipe.cli.learn_commands`)."""

from __future__ import annotations

import argparse
from typing import Any

from mripipe.cli.arguments import executes, show


def add_commands(sub: Any) -> None:
    """tracking-server, ui."""
    p = sub.add_parser("tracking-server",
                       help="one MLflow server for parallel trials (tracking.uri: http://HOST:PORT)")
    p.add_argument("--log", default=None)
    p.add_argument("--backend-store-uri", default="sqlite:///mlflow.db",
                   help="sqlite:///PATH (on a local disk) or postgresql://USER:PW@HOST:PORT/DB")
    p.add_argument("--artifacts", default="mlartifacts", help="the shared artifact root")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (0.0.0.0: reachable from the cluster's nodes)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cli_tracking_server)

    p = sub.add_parser("ui", help="the MLflow UI on this checkout's runs; prints the links that "
                                  "compare each experiment's trials and opens the first")
    p.add_argument("--log", default=None)
    p.add_argument("--backend-store-uri", default="sqlite:///mlflow.db")
    p.add_argument("--artifacts", default="mlartifacts")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--no-browser", action="store_true", help="print the links only")
    p.set_defaults(func=cli_ui)


@executes("mripipe.track.server")
def cli_tracking_server(ns: argparse.Namespace) -> None:
    """``mripipe tracking-server``: replaces this process with ``mlflow server``."""
    from mripipe.track.server import serve

    serve(ns.backend_store_uri, ns.artifacts, ns.host, ns.port, ns.workers)


@executes("mripipe.track.ui")
def cli_ui(ns: argparse.Namespace) -> tuple[str, int]:
    """``mripipe ui``: serves until Ctrl-C; the links go to stdout as soon as the UI is up."""
    from mripipe.track.ui import ui

    status = ui(ns.backend_store_uri, ns.artifacts, ns.host, ns.port, not ns.no_browser, show)
    return "", status

"""Subcommands of tracking (:mod:`mripipe.track`): tracking-server (search-init, a step of the
search, is in :mod:`mripipe.cli.learn_commands`)."""

from __future__ import annotations

import argparse
from typing import Any

from mripipe.cli.arguments import executes


def add_commands(sub: Any) -> None:
    """tracking-server."""
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


@executes("mripipe.track.server")
def cli_tracking_server(ns: argparse.Namespace) -> None:
    """``mripipe tracking-server``: replaces this process with ``mlflow server``."""
    from mripipe.track.server import serve

    serve(ns.backend_store_uri, ns.artifacts, ns.host, ns.port, ns.workers)

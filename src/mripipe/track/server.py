"""One MLflow tracking server for many concurrent trials (``mripipe tracking-server``).

The single-machine default is the SQLite file ``mlflow.db`` that every job opens itself. On a
cluster, dozens of trial jobs on different nodes would then write one SQLite file over a shared
filesystem, where its locking is unreliable. Instead, one ``mlflow server`` owns the store (a
SQLite file on its own local disk, or PostgreSQL) and the artifact root, and every job talks to it
over HTTP: set ``tracking.uri: http://HOST:PORT`` in the config.

The server binds 127.0.0.1 unless told otherwise, proxies artifacts (jobs upload through it, so
they need no access to the artifact root), and never starts MLflow's job-execution workers.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

log = logging.getLogger(__name__)

DEFAULT_BACKEND = "sqlite:///mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000

SERVER_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job workers (~2 GB each)
    "MLFLOW_DISABLE_TELEMETRY": "true",  # no network at run time
}


def server_command(
    backend_uri: str = DEFAULT_BACKEND,
    artifacts: str | Path = DEFAULT_ARTIFACTS,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
    mlflow: str | None = None,
) -> list[str]:
    """The ``mlflow server`` command line.

    Args:
        backend_uri: the store, ``sqlite:///PATH`` (on a local disk) or
            ``postgresql://USER:PASSWORD@HOST:PORT/DB``.
        artifacts: the artifact root (a folder or an object-store URI); the server proxies
            uploads to it (``--serve-artifacts``).
        host: address to bind; ``0.0.0.0`` exposes the server to the whole network.
        port: TCP port.
        workers: server worker processes (keep 1 or 2 with SQLite, more with PostgreSQL).
        mlflow: the ``mlflow`` executable (default: the one beside this Python, else on PATH).

    Returns:
        The argument list, ready for :func:`subprocess.run` or :func:`os.execve`.

    Raises:
        ValueError: the backend is neither SQLite nor PostgreSQL, or ``workers`` < 1.
    """
    if not backend_uri.startswith(("sqlite:///", "postgresql://", "postgresql+")):
        raise ValueError(f"backend {backend_uri!r}: use sqlite:///PATH or postgresql://...")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    exe = mlflow or _mlflow_executable()
    destination = str(artifacts)
    if "://" not in destination:
        destination = str(Path(destination).resolve())
    return [
        exe, "server",
        "--backend-store-uri", backend_uri,
        "--serve-artifacts", "--artifacts-destination", destination,
        "--host", host, "--port", str(port),
        "--workers", str(workers),
    ]


def _mlflow_executable() -> str:
    beside = Path(sys.executable).parent / "mlflow"
    if beside.is_file():
        return str(beside)
    found = shutil.which("mlflow")
    if found is None:
        raise FileNotFoundError("no `mlflow` executable beside this Python nor on PATH")
    return found


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the server: ``base`` (default: this process's) plus :data:`SERVER_ENV`."""
    env = dict(os.environ if base is None else base)
    env.update(SERVER_ENV)
    return env


def serve(backend_store_uri: str = DEFAULT_BACKEND, artifacts: str = DEFAULT_ARTIFACTS,
          host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, workers: int = 1) -> NoReturn:
    """``mripipe tracking-server``: replaces this process with ``mlflow server``."""
    db = backend_store_uri[len("sqlite:///"):] if backend_store_uri.startswith("sqlite:///") else None
    if db:
        Path(db).resolve().parent.mkdir(parents=True, exist_ok=True)
    cmd = server_command(backend_store_uri, artifacts, host, port, workers)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: every machine that can reach it can read and write the runs",
                    host)
    log.info("tracking server: %s; jobs use tracking.uri: http://%s:%d", " ".join(cmd),
             host if host != "0.0.0.0" else "<this host's name>", port)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execve(cmd[0], cmd, server_env())

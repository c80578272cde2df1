"""``modelgate serve``: the gateway's Starlette app on uvicorn with uvloop and httptools, N workers.

BentoML (``bentoml serve service.gateway:Gateway``) runs the same app for bento
deployments, but puts its own middleware (tracing, metrics, context) and an
h11 + asyncio server around every request; measured on one worker, that stack
cost more than the app itself (load_tests/results/). Here the app gets the
fastest stack measured, and keeps what BentoML gave it: worker processes on
one socket, ``/livez``, ``/readyz`` and one ``/metrics`` summed over every
process (prometheus-client's multiprocess mode, in a directory made fresh for
each start and removed at exit).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import uvicorn
from starlette.applications import Starlette

from monitoring.logs import configure_logging
from service.app import create_app
from service.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: seconds a stopping worker waits for open connections before it drains its log and exits
GRACEFUL_SECONDS = 20


def app() -> Starlette:
    """The app factory each worker process calls (uvicorn ``factory=True``)."""
    configure_logging()
    return create_app(Settings.from_env())


def run(host: str, port: int, workers: int) -> None:
    """Serve until SIGTERM or SIGINT; each worker drains its prediction log before it exits."""
    owned = MULTIPROC_ENV not in os.environ
    if owned:
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="modelgate-metrics-")
    try:
        uvicorn.run(
            "service.server:app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
        )
    finally:
        if owned:
            shutil.rmtree(os.environ.pop(MULTIPROC_ENV), ignore_errors=True)

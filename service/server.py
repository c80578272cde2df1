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

import asyncio
import functools
import os
import shutil
import tempfile

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from monitoring.logs import configure_logging
from service.app import create_app
from service.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: seconds a stopping worker waits for open connections before it drains its log and exits
GRACEFUL_SECONDS = 20


@functools.cache
def _settings() -> Settings:
    return Settings.from_env()


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on each request's head.

    uvicorn times out only idle keep-alive connections: a client that opens a
    connection and sends its headers a byte at a time (slow loris), or sends
    megabytes of headers, held a connection and its buffers for as long as it
    liked. Here the head must be complete within ``header_timeout`` seconds of
    its first byte (or of the connection) and within ``max_header_bytes``:
    else 408 or 431, and the connection is closed. The body's own deadline is
    the app's (``service.api.http.read_body``), so it holds under BentoML too.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        settings = _settings()
        self.header_timeout = settings.header_timeout
        self.max_header_bytes = settings.max_header_bytes
        self._in_head = True
        self._head_bytes = 0  # received since the head began
        self._head_size = 0  # its line and headers, as parsed
        self._refused = False
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        # an unfinished head is counted a chunk at a time (the transport's reads are bounded), so a
        # client cannot make the parser buffer megabytes of it; a finished one by its parts, below
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_header_bytes:
            self._refuse(431, f"request head over {self.max_header_bytes} bytes")

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        if self._head_size > self.max_header_bytes:  # a whole head in one chunk: refused unserved
            self._refuse(431, f"request head over {self.max_header_bytes} bytes")
            return
        self._head_bytes = self._head_size = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._in_head = True  # what comes next is the next request's head

    def _arm(self) -> None:
        self._in_head = True
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._in_head and (self._head_bytes or self.cycle is None or self.cycle.response_complete):
            self._refuse(408, f"request head not received within {self.header_timeout:g} s")

    def _refuse(self, status: int, why: str) -> None:
        """Answer ``status`` in plain HTTP (no app is involved yet) and close the connection."""
        self._disarm()
        self._refused = True
        if self.transport.is_closing():
            return
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        body = why.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()


def app() -> Starlette:
    """The app factory each worker process calls (uvicorn ``factory=True``)."""
    configure_logging()
    return create_app(Settings.from_env())


def run(host: str, port: int, workers: int) -> None:
    """Serve until SIGTERM or SIGINT; each worker drains its prediction log before it exits."""
    settings = _settings()
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
            http=GuardedHttpTools,
            timeout_keep_alive=int(settings.keep_alive_timeout),
            limit_concurrency=settings.max_connections,
            lifespan="on",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
        )
    finally:
        if owned:
            shutil.rmtree(os.environ.pop(MULTIPROC_ENV), ignore_errors=True)

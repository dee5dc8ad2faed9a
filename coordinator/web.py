"""The coordinator's HTTP side (`render-coordinator serve --http HOST:PORT`): /metrics and
the web dashboard's pages (coordinator/dashboard), all on one Starlette app.

Why Starlette + uvicorn, in the coordinator's own event loop: the gRPC server is grpc.aio, so
an ASGI server on the same loop shares the process, its database engine and its lifecycle (no
second process or thread pool to keep in step); Starlette is small, maintained and is what
FastAPI is built on, so the dashboard (templates, server-sent events) mounts more routes on
this app instead of a second server. uvicorn is the reference ASGI server; we hand it a bound
socket and keep its signal handling off, so SIGTERM still stops the coordinator as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator, Sequence

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from coordinator.metrics import exposition

log = logging.getLogger(__name__)


def build_app(registry: CollectorRegistry, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The coordinator's HTTP app: /metrics, /healthz, and any further `routes`."""

    async def metrics(_request: Request) -> Response:
        # The farm-state collector queries the database: keep that off the event loop.
        body = await asyncio.to_thread(exposition, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz), *routes])


def bind(listen: str) -> socket.socket:
    """A listening TCP socket for HOST:PORT (port 0: any free port); OSError if it cannot."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise OSError(f"--http {listen!r} is not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot serve HTTP on {listen}: {error.strerror}") from error
    sock.setblocking(False)
    if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
        log.warning("HTTP on %s is not loopback: /metrics and the dashboard (every job, its "
                    "creator and its frames) have no login; see docs/DASHBOARD.md", listen)
    return sock


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the coordinator owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(app: Starlette, sock: socket.socket) -> None:
    """Serve `app` on the bound `sock` until cancelled, then close it gracefully."""
    # The dashboard's live pages hold streams open: a stop waits at most 2 s for them.
    server = _EmbeddedServer(uvicorn.Config(app, lifespan="off", log_level="warning",
                                            access_log=False, timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        raise
    finally:
        sock.close()

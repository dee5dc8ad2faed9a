"""The web dashboard: jobs, a job's frames, nodes, the ledger; read-only, live over SSE.

Served by the coordinator's Starlette app (coordinator/web.py) when `--http HOST:PORT` is
given. The HTTP listener has no authentication, so the pages show what the farm's operator
may see (every job, its creator's key, its frames) and nothing changes state: there are no
cancel or top-up buttons, those stay signed by the creator's keypair (`frameproof cancel`,
`frameproof topup`). Bind it to loopback (the default in every example) and reach it over an
SSH tunnel; see docs/DASHBOARD.md. Node histories follow the public rule of GetNodeStanding:
no creator's job id, details cut to how the frame was checked.

Live updates: each page's body is re-rendered on the server about once a second for each open
page and sent as a server-sent event only when it changed; a 10-line static script swaps it in.
No JavaScript build step, nothing fetched from the internet.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from coordinator.api.node_service import event_message
from coordinator.blobstore import BlobStore
from coordinator.dashboard.thumbnails import Thumbnails
from coordinator.domain.reputation import check_probability
from coordinator.payments.payments import Payments
from coordinator.payments.results import CheckReport
from coordinator.storage.dashboard import DashboardQueries, LedgerSummary, Page
from coordinator.storage.proof import standing_of

PAGE_SIZE = 50
FRAME_PAGE_SIZE = 48
LIVE_INTERVAL_SECONDS = 1.0
LIVE_STREAM_SECONDS = 300.0  # a stream ends after this; the browser's EventSource reconnects
SUMMARY_SECONDS = 10.0  # the ledger page's token totals are at most this old
LEDGER_CHECK_SECONDS = 60.0  # the ledger check runs at most this often, only while watched
STATIC_DIR = Path(__file__).parent / "static"


class LedgerCheck:
    """`ledger check`, run in a background thread while someone looks, result kept."""

    def __init__(self, payments: Payments | None) -> None:
        self.payments = payments
        self.report: CheckReport | None = None
        self.error = ""
        self.checked_at = 0.0
        self._running = threading.Lock()

    def latest(self) -> LedgerCheck:
        """This check as it stands; starts a fresh run when the last is old."""
        stale = time.time() - self.checked_at > LEDGER_CHECK_SECONDS
        if self.payments is not None and stale and self._running.acquire(blocking=False):
            threading.Thread(target=self._run, name="dashboard-ledger-check",
                             daemon=True).start()
        return self

    @property
    def running(self) -> bool:
        return self._running.locked()

    def _run(self) -> None:
        try:
            assert self.payments is not None
            self.report, self.error = self.payments.check(), ""
        except Exception as error:  # a broken chain connection is shown, not raised
            self.report, self.error = None, f"{type(error).__name__}: {error}"
        finally:
            self.checked_at = time.time()
            self._running.release()


@dataclass
class Dashboard:
    """What the pages read from: the farm's database, blobs, payments."""

    queries: DashboardQueries
    thumbnails: Thumbnails
    payments: Payments | None
    ledger_check: LedgerCheck
    _summary: tuple[float, LedgerSummary] | None = None

    def ledger_summary(self) -> LedgerSummary:
        """Token totals sum every ledger line (O(ledger)): computed at most every 10 s."""
        if self._summary is None or time.monotonic() - self._summary[0] > SUMMARY_SECONDS:
            self._summary = (time.monotonic(), self.queries.ledger_summary())
        return self._summary[1]

    @property
    def decimals(self) -> int:
        return self.payments.pricing.decimals if self.payments else 6


def dashboard_routes(engine: Engine, blobs: BlobStore, payments: Payments | None,
                     cache_dir: Path) -> list[BaseRoute]:
    """The dashboard's routes, to mount on the coordinator's HTTP app."""
    board = Dashboard(DashboardQueries(engine), Thumbnails(blobs, cache_dir), payments,
                      LedgerCheck(payments))
    env = _environment(board)
    views: dict[str, Callable[[Dashboard, Request], tuple[str, dict[str, Any]]]] = {
        "jobs": _jobs_view, "job": _job_view, "nodes": _nodes_view, "node": _node_view,
        "ledger": _ledger_view,
    }

    def render(view: str, request: Request, *, fragment: bool) -> str:
        template, context = views[view](board, request)
        live = request.url.path if not fragment else ""
        if request.url.query and not fragment:
            live += "?" + request.url.query
        return env.get_template(template).render(fragment=fragment, view=view,
                                                 live_path=live, **context)

    def page(view: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            return HTMLResponse(await asyncio.to_thread(render, view, request, fragment=False))
        return handler

    def live(view: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            return StreamingResponse(_stream(request, lambda: render(view, request,
                                                                     fragment=True)),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store"})
        return handler

    async def thumbnail(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        frame = request.path_params["frame"]
        result = await asyncio.to_thread(board.queries.frame_result, job_id, frame)
        if result is None:
            raise HTTPException(404, f"job {job_id} has no image of frame {frame}")
        data = await asyncio.to_thread(board.thumbnails.png, result.blob_sha256,
                                       result.extension)
        # The URL carries the image's hash (?v=), so a cached thumbnail is never stale.
        return Response(data, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400"})

    async def home(_request: Request) -> Response:
        return RedirectResponse("/jobs")

    routes: list[BaseRoute] = [Route("/", home)]
    for view, path in (("jobs", "/jobs"), ("job", "/jobs/{job_id}"), ("nodes", "/nodes"),
                       ("node", "/nodes/{node_id}"), ("ledger", "/ledger")):
        routes.append(Route(path, page(view)))
        routes.append(Route("/live" + path, live(view)))
    routes.append(Route("/jobs/{job_id}/frames/{frame:int}/thumb.png", thumbnail))
    routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
    return routes


async def _stream(request: Request, render: Callable[[], str]) -> AsyncIterator[str]:
    """Server-sent events: the page's body whenever it changes, until the client leaves."""
    last = ""
    ends = time.monotonic() + LIVE_STREAM_SECONDS
    yield "retry: 2000\n\n"
    while time.monotonic() < ends and not await request.is_disconnected():
        try:
            body = await asyncio.to_thread(render)
        except HTTPException:
            return
        digest = hashlib.sha256(body.encode()).hexdigest()
        if digest != last:
            last = digest
            yield "".join(f"data: {line}\n" for line in body.splitlines()) + "\n"
        await asyncio.sleep(LIVE_INTERVAL_SECONDS)


def _page(request: Request, name: str = "page", size: int = PAGE_SIZE) -> Page:
    raw = request.query_params.get(name, "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000:
        raise HTTPException(400, f"{name} must be a page number from 1")
    return Page(int(raw), size)


def _pages(page: Page, total: int) -> dict[str, int]:
    return {"number": page.number, "count": max(1, -(-total // page.size)), "total": total}


def _jobs_view(board: Dashboard, request: Request) -> tuple[str, dict[str, Any]]:
    page = _page(request)
    rows, total = board.queries.jobs(page)
    return "jobs.html", {"rows": rows, "pages": _pages(page, total), "title": "Jobs"}


def _job_view(board: Dashboard, request: Request) -> tuple[str, dict[str, Any]]:
    job_id = request.path_params["job_id"]
    row = board.queries.job(job_id)
    if row is None:
        raise HTTPException(404, f"no job {job_id}")
    page = _page(request, size=FRAME_PAGE_SIZE)
    cells, total = board.queries.frames(row.job, page)
    return "job.html", {"row": row, "cells": cells, "pages": _pages(page, total),
                        "title": f"Job {row.job.name or job_id[:8]}"}


def _nodes_view(board: Dashboard, request: Request) -> tuple[str, dict[str, Any]]:
    page = _page(request)
    rows, total = board.queries.nodes(page)
    standings = [standing_of(row.standing) for row in rows]
    return "nodes.html", {"rows": list(zip(rows, standings, strict=True)),
                          "pages": _pages(page, total), "title": "Nodes"}


def _node_view(board: Dashboard, request: Request) -> tuple[str, dict[str, Any]]:
    node_id = request.path_params["node_id"]
    row = board.queries.node(node_id)
    if row is None:
        raise HTTPException(404, f"no node {node_id}")
    page = _page(request)
    events, total = board.queries.reputation_events(node_id, page)
    standing = standing_of(row.standing)
    # The public view of each event (GetNodeStanding's rule): no job id, details cut.
    public = [(message, json.loads(message.details_json or "{}")) for message in
              (event_message(event, named=False) for event in events)]
    return "node.html", {"row": row, "standing": standing, "events": public,
                         "check_probability": check_probability(standing),
                         "pages": _pages(page, total), "title": f"Node {row.node.name}"}


def _ledger_view(board: Dashboard, request: Request) -> tuple[str, dict[str, Any]]:
    burns_page = _page(request, "burns", 20)
    mints_page = _page(request, "mints", 20)
    epochs_page = _page(request, "epochs", 20)
    burns, burns_total = board.queries.chain_ops("burn", burns_page)
    mints, mints_total = board.queries.chain_ops("mint", mints_page)
    epochs, epochs_total = board.queries.epochs(epochs_page)
    return "ledger.html", {
        "summary": board.ledger_summary(), "check": board.ledger_check.latest(),
        "burns": burns, "burn_pages": _pages(burns_page, burns_total),
        "mints": mints, "mint_pages": _pages(mints_page, mints_total),
        "epochs": epochs, "epoch_pages": _pages(epochs_page, epochs_total),
        "query": dict(request.query_params), "title": "Ledger"}


def _environment(board: Dashboard) -> Environment:
    env = Environment(loader=PackageLoader("coordinator.dashboard", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    scale = 10 ** board.decimals

    def tokens(amount: int | None) -> str:
        return _amount((amount or 0) / scale, board.decimals)

    def usd_micro(amount: int | None) -> str:
        return "$" + _amount((amount or 0) / 1e6, 6)

    def usd(amount: float | None) -> str:
        return "$" + _amount(amount or 0.0, 6)

    def when(at: float | None) -> str:
        if not at:
            return "—"
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")

    def ago(at: float | None) -> str:
        if not at:
            return "never"
        seconds = max(0, int(time.time() - at))
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit} ago"
        return f"{seconds}s ago"

    def short(text: str | None, length: int = 8) -> str:
        text = text or ""
        return text if len(text) <= length + 1 else text[:length] + "…"

    env.filters.update(tokens=tokens, usd_micro=usd_micro, usd=usd, when=when, ago=ago, short=short)
    env.globals["page_url"] = _page_url
    return env


def _amount(value: float, decimals: int) -> str:
    """All the digits a small amount needs, but at least two: 0.000123, 12.50, 1,000.00."""
    text = f"{value:,.{decimals}f}"
    if "." in text:
        whole, fraction = text.split(".")
        fraction = fraction.rstrip("0").ljust(2, "0")
        text = f"{whole}.{fraction}"
    return text


def _page_url(query: dict[str, str], name: str, number: int) -> str:
    """The current page's query with one page number changed."""
    from urllib.parse import urlencode

    return "?" + urlencode({**query, name: number})

"""Render time of each dashboard page on a farm of 10,000 jobs and 100,000 frames.

Builds a SQLite farm in the coordinator's own schema: JOBS jobs of FRAMES one-frame tasks, a
frame result, a charge and a landed burn (with its ledger posting) per rendered frame, NODES
nodes with a reputation event per frame, EPOCHS closed epochs with a mint each. Then serves the
real HTTP app (coordinator.web + coordinator.dashboard, uvicorn on loopback) and times GETs of
each page, first and last page of each list, end to end (request to last byte).

    .venv/bin/python bench/dashboard_bench.py [--jobs 10000] [--frames 10] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from bench.report import median, write_section  # noqa: E402
from coordinator import web  # noqa: E402
from coordinator.blobstore import BlobStore  # noqa: E402
from coordinator.dashboard import FRAME_PAGE_SIZE, PAGE_SIZE, dashboard_routes  # noqa: E402
from coordinator.dashboard.thumbnails import Thumbnails  # noqa: E402
from coordinator.domain.ledger import movement_lines  # noqa: E402
from coordinator.storage.dashboard import DashboardQueries, Page  # noqa: E402
from coordinator.storage.database import open_database, sqlite_url  # noqa: E402
from coordinator.storage.models import (  # noqa: E402
    FrameResultRecord,
    JobRecord,
    NodeRecord,
    NodeStandingRecord,
    ReputationEventRecord,
    SceneRecord,
    TaskRecord,
)
from coordinator.storage.payment_models import (  # noqa: E402
    ChainOpRecord,
    EpochRecord,
    FrameChargeRecord,
    JobBillingRecord,
    LedgerLineRecord,
    PostingRecord,
)

STATES = ("done", "done", "done", "done", "verifying", "leased", "queued", "queued", "failed",
          "cancelled")
NODES = 100
EPOCHS = 200
RUNS = 7


def build(data_dir: Path, jobs: int, frames: int) -> object:
    engine = open_database(sqlite_url(data_dir))
    now = time.time()
    rows: dict[object, list[dict]] = {table: [] for table in (
        JobRecord, TaskRecord, FrameResultRecord, ChainOpRecord, JobBillingRecord,
        PostingRecord, LedgerLineRecord, FrameChargeRecord, NodeRecord, NodeStandingRecord,
        ReputationEventRecord, EpochRecord)}  # in foreign-key order
    nodes = [f"node{n:03d}" for n in range(NODES)]
    for n, node in enumerate(nodes):
        rows[NodeRecord].append({"node_id": node, "name": node, "capabilities_json": "{}",
                                 "benchmark_score": 1.0, "registered_at": now - NODES + n,
                                 "last_seen_at": now})
        rows[NodeStandingRecord].append({"node_id": node, "score": 0.8, "verified": 900,
                                         "delivered": 1000, "updated_at": now})
    posting = 0

    def chain_op(kind: str, amount: int, job_id: str | None = None, epoch: int | None = None,
                 owner: str = "", at: float = now) -> str:
        nonlocal posting
        op_id = uuid.uuid4().hex
        rows[ChainOpRecord].append({
            "op_id": op_id, "purpose": f"{kind}:{op_id}", "kind": kind, "owner": owner,
            "amount": amount, "job_id": job_id, "epoch": epoch, "state": "landed",
            "signature": op_id * 2, "created_at": at, "updated_at": at, "attempts": 1,
            "description": "", "previous_signatures": "", "error": ""})
        posting += 1
        rows[PostingRecord].append({"posting_id": posting, "op_id": op_id, "kind": kind,
                                    "at": at})
        for account, line in movement_lines(kind, amount, owner=owner,
                                                   job_id=job_id or ""):
            rows[LedgerLineRecord].append({"posting_id": posting, "account": account,
                                           "amount": line})
        return op_id

    for j in range(jobs):
        job_id = f"job{j:06d}"
        created = now - jobs + j
        rows[JobRecord].append({"job_id": job_id, "scene_id": "s", "tier": 1 + j % 3,
                                "frames_spec": f"1-{frames}", "settings_json": "{}",
                                "created_at": created, "updated_at": created,
                                "settled": False, "cancelled": False, "chunk_size": 1,
                                "max_cost_usd": 1.0, "name": f"shot {j}", "creator": "c" * 44,
                                "error": ""})
        deposit = chain_op("deposit", 2_000_000, job_id, owner="c" * 44, at=created)
        rows[JobBillingRecord].append({
            "job_id": job_id, "creator": "c" * 44, "tier": 1 + j % 3, "state": "open",
            "deposit_op_id": deposit, "deposited": 2_000_000, "charged": 0,
            "charged_usd_micro": 0, "refunded": 0, "created_at": created,
            "updated_at": created})
        for f in range(1, frames + 1):
            state = STATES[(j + f) % len(STATES)]
            task_id = uuid.uuid4().hex
            node = nodes[(j * frames + f) % NODES]
            rows[TaskRecord].append({"task_id": task_id, "job_id": job_id, "first_frame": f,
                                     "last_frame": f, "state": state, "attempts": 0,
                                     "node_id": node, "queued_at": created,
                                     "updated_at": created, "error": ""})
            if state not in ("done", "verifying"):
                continue
            rows[FrameResultRecord].append({
                "job_id": job_id, "frame": f, "task_id": task_id, "node_id": node,
                "blob_sha256": uuid.uuid4().hex * 2, "blob_size": 1000, "extension": "png",
                "render_seconds": 1.0, "verdict": "approved" if state == "done" else "pending",
                "verification": "exact", "charged": state == "done",
                "created_at": created, "blender_version": "", "device": "",
                "pixel_sha256": "", "receipt_signature": ""})
            rows[ReputationEventRecord].append({
                "node_id": node, "at": created, "kind": "verified", "score_before": 0.5,
                "score_after": 0.51, "tier_after": "tier3", "reason": "frame verified",
                "job_id": job_id, "frame": f, "details_json": '{"mode": "exact"}'})
            if state == "done":
                burn = chain_op("burn", 20, job_id, at=created)
                rows[FrameChargeRecord].append({
                    "job_id": job_id, "frame": f, "node_id": node, "render_seconds": 1.0,
                    "node_score": 1.0, "work_ms": 1000, "cost_usd_micro": 10,
                    "cost_tokens": 20, "tokens_burned": 20, "op_id": burn,
                    "created_at": created})
    for e in range(1, EPOCHS + 1):
        rows[EpochRecord].append({"epoch": e, "started_at": now - e - 1, "ended_at": now - e,
                                  "emission": 10**9, "fee": 5 * 10**7, "work_pool": 9 * 10**8,
                                  "availability_pool": 5 * 10**7, "total_credits": 1000,
                                  "unminted": 0})
        chain_op("mint", 9 * 10**8, epoch=e, owner=nodes[e % NODES], at=now - e)
    with engine.begin() as db:
        db.execute(insert(SceneRecord), [{"scene_id": "s", "main_file": "a.blend",
                                          "info_json": "{}", "created_at": now}])
        for table, table_rows in rows.items():
            if table_rows:
                db.execute(insert(table), table_rows)  # type: ignore[arg-type]
    return engine


def serve(engine: object, data_dir: Path) -> str:
    """The coordinator's HTTP app on a loopback port, in a thread of its own."""
    app = web.build_app(CollectorRegistry(), dashboard_routes(
        engine, BlobStore(data_dir / "blobs"), None, data_dir / "thumbnails"))  # type: ignore[arg-type]
    sock = web.bind("127.0.0.1:0")
    threading.Thread(target=asyncio.run, args=(web.serve_http(app, sock),),
                     daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def fetch_ms(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
    return (time.perf_counter() - started) * 1000, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        engine = build(Path(tmp), args.jobs, args.frames)
        print(f"built in {time.perf_counter() - started:.1f} s", flush=True)
        base = serve(engine, Path(tmp))
        last_jobs = -(-args.jobs // PAGE_SIZE)
        last_frames = -(-args.frames // FRAME_PAGE_SIZE)
        middle = f"job{args.jobs // 2:06d}"
        queries = DashboardQueries(engine)  # type: ignore[arg-type]
        burns = queries.chain_ops("burn", Page(1, 1))[1]
        thumbs = Thumbnails(BlobStore(Path(tmp) / "blobs"), Path(tmp) / "thumbs")
        frame = np.random.default_rng(1).integers(0, 255, (1080, 1920, 3), np.uint8)
        sha = thumbs.blobs.put_bytes(cv2.imencode(".png", frame)[1].tobytes())
        started = time.perf_counter()
        thumbs.png(sha, "png")
        thumb_first_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        thumbs.png(sha, "png")
        thumb_cached_ms = (time.perf_counter() - started) * 1000
        summary_ms = []
        for _ in range(3):
            started = time.perf_counter()
            queries.ledger_summary()
            summary_ms.append((time.perf_counter() - started) * 1000)
        pages = [
            ("jobs, first page", "/jobs"),
            (f"jobs, last page ({last_jobs:,})", f"/jobs?page={last_jobs}"),
            ("a job's frames", f"/jobs/{middle}"),
            ("a job's frames, last page", f"/jobs/{middle}?page={last_frames}"),
            ("nodes", "/nodes"),
            ("a node and its events, first page", "/nodes/node001"),
            ("a node and its events, last page", "/nodes/node001?page=20"),
            ("ledger (burns, mints, epochs)", "/ledger"),
            ("ledger, last page of burns", f"/ledger?burns={-(-burns // 20)}"),
        ]
        results = []
        for label, path in pages:
            fetch_ms(base + path)  # warm: templates compiled, SQLite pages cached
            times, size = [], 0
            for _ in range(RUNS):
                ms, size = fetch_ms(base + path)
                times.append(ms)
            results.append((label, path, median(times), size))
            print(f"{label:40s} {median(times):7.1f} ms  {size:,} bytes", flush=True)
    frames = args.jobs * args.frames
    body = (
        f"A SQLite farm of {args.jobs:,} jobs and {frames:,} frames (one task per frame, "
        f"states mixed; a result, charge, landed burn and reputation event per rendered frame; "
        f"{NODES} nodes, {EPOCHS} epochs), served by the real HTTP app on loopback; median of "
        f"{RUNS} GETs, request to last byte. The ledger check itself is not in these numbers "
        "(it runs in a background thread at most once a minute while the ledger page is open).\n\n"
        "| page | path | time | size |\n|---|---|---|---|\n"
        + "".join(f"| {label} | `{path}` | {ms:.0f} ms | {size / 1024:.0f} KiB |\n"
                  for label, path, ms, size in results)
        + f"\nThe ledger page's token totals sum every ledger line ({burns:,} burns): "
        f"{median(summary_ms):.0f} ms (median of 3), so the page computes them at most every "
        "10 s and shows them that old at most; the times above are with them cached. "
        f"A thumbnail of a 1920x1080 PNG frame: {thumb_first_ms:.0f} ms the first time "
        f"(decode, resize, encode), {thumb_cached_ms:.1f} ms from the cache. "
        "The live stream of an open page re-renders it about once a second in a worker "
        "thread, so each open page costs about this much per second while it is open."
    )
    if not args.no_write:
        write_section("dashboard", ".venv/bin/python bench/dashboard_bench.py", body)
    print(body)


if __name__ == "__main__":
    main()

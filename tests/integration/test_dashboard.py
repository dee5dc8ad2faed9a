"""The dashboard without a browser: its queries on a real SQLite store, thumbnails of real
images (and refusals of odd ones), and its pages over real HTTP (uvicorn on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from coordinator import web
from coordinator.blobstore import BlobStore
from coordinator.dashboard import dashboard_routes
from coordinator.dashboard.thumbnails import THUMB_WIDTH, Thumbnails
from coordinator.domain.budget import LEASE_SHORT
from coordinator.domain.frames import chunk_frames, parse_frames
from coordinator.storage.dashboard import DashboardQueries, Page
from coordinator.storage.database import open_database
from coordinator.storage.models import (
    FrameResultRecord,
    JobRecord,
    NodeRecord,
    ReputationEventRecord,
    SceneRecord,
    TaskRecord,
)
from coordinator.storage.store import FarmStore


def _png(width: int, height: int, channels: int = 3, dtype: type = np.uint8) -> bytes:
    image = np.zeros((height, width, channels), dtype)
    image[:, : width // 2] = np.iinfo(dtype).max  # left half white: a thumbnail keeps it
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def _lying_png(width: int, height: int) -> bytes:
    """A tiny file whose header claims a huge image (a decompression bomb's first step)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


def test_thumbnails_of_real_images_and_placeholders(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    thumbs = Thumbnails(blobs, tmp_path / "thumbs")

    wide = blobs.put_bytes(_png(640, 360))
    image = _decode(thumbs.png(wide, "png"))
    assert image.shape == (108, THUMB_WIDTH, 3)
    assert image[54, 10].min() > 200 and image[54, -10].max() < 50  # the picture, scaled
    assert (tmp_path / "thumbs" / wide[:2] / f"{wide}.png").is_file()  # cached by hash

    deep = blobs.put_bytes(_png(64, 36, channels=4, dtype=np.uint16))  # 16-bit RGBA
    small = _decode(thumbs.png(deep, "png"))
    assert small.shape == (36, 64, 3) and small.dtype == np.uint8  # never scaled up

    placeholder = thumbs.placeholder("EXR")
    exr = blobs.put_bytes(b"\x76\x2f\x31\x01" + b"\0" * 64)
    assert thumbs.png(exr, "exr") == placeholder  # never decoded in the coordinator
    bomb = blobs.put_bytes(_lying_png(100_000, 100_000))
    assert thumbs.png(bomb, "png") == thumbs.placeholder("no preview")
    assert thumbs.png("0" * 64, "png") == thumbs.placeholder("missing")
    garbage = blobs.put_bytes(b"not an image at all")
    assert thumbs.png(garbage, "png") == thumbs.placeholder("no preview")
    assert _decode(placeholder).shape[1] == THUMB_WIDTH


def _farm(db_url: str) -> tuple[Engine, FarmStore]:
    engine = open_database(db_url)
    store = FarmStore(engine)
    store.save_scene(SceneRecord(scene_id="s", main_file="a.blend", info_json="{}",
                                 created_at=0.0))
    return engine, store


def _job(store: FarmStore, job_id: str, spec: str, chunk: int, at: float) -> None:
    store.create_job(JobRecord(job_id=job_id, name=job_id, scene_id="s", frames_spec=spec,
                               chunk_size=chunk, settings_json="{}", created_at=at,
                               updated_at=at, creator="creator-key"),
                     chunk_frames(parse_frames(spec), chunk), at, frame_price_tokens=10)


def test_queries_page_jobs_frames_and_events(db_url: str) -> None:
    engine, store = _farm(db_url)
    for index in range(5):
        _job(store, f"job{index}", "1-3", 1, 100.0 + index)
    _job(store, "chunky", "1-10", 4, 200.0)  # chunks 1-4, 5-8, 9-10
    queries = DashboardQueries(engine)

    first, total = queries.jobs(Page(1, 4))
    second, _ = queries.jobs(Page(2, 4))
    assert total == 6
    assert [r.job.job_id for r in first + second] == ["chunky", "job4", "job3", "job2",
                                                      "job1", "job0"]
    assert first[0].state == "queued" and first[0].total == 10

    with Session(engine) as session:  # frames 5-8 rendered by node n1; frame 6 approved
        session.exec(update(TaskRecord).where(TaskRecord.job_id == "chunky",
                                              TaskRecord.first_frame == 5)
                     .values(state="verifying", node_id="n1"))
        task_id = session.get(TaskRecord, store.list_tasks("chunky")[1].task_id).task_id
        for frame in (5, 6, 7, 8):
            session.add(FrameResultRecord(
                job_id="chunky", frame=frame, task_id=task_id, node_id="n1",
                blob_sha256="a" * 64, blob_size=1, extension="png", render_seconds=1.0,
                verdict="approved" if frame == 6 else "pending", created_at=1.0))
        session.add(NodeRecord(node_id="n1", name="n1", registered_at=1.0, last_seen_at=1.0))
        for n in range(7):
            session.add(ReputationEventRecord(node_id="n1", at=float(n), kind="verified",
                                              score_before=0.5, score_after=0.51,
                                              tier_after="tier3", reason=f"event {n}",
                                              job_id="chunky", frame=n))
        session.commit()

    job = queries.job("chunky")
    assert job is not None and job.state == "rendering"
    cells, frames = queries.frames(job.job, Page(2, 3))  # frames 4, 5, 6: across two chunks
    assert frames == 10
    assert [(c.frame, c.state, c.node_id) for c in cells] == [
        (4, "queued", ""), (5, "verifying", "n1"), (6, "verifying", "n1")]
    assert cells[0].result is None and cells[2].result is not None
    assert cells[2].result.verdict == "approved" and cells[1].result.verdict == "pending"
    last, _ = queries.frames(job.job, Page(4, 3))
    assert [c.frame for c in last] == [10]
    assert queries.frames(job.job, Page(5, 3)) == ([], 10)

    events, count = queries.reputation_events("n1", Page(1, 5))
    assert count == 7 and [e.reason for e in events] == [f"event {n}" for n in (6, 5, 4, 3, 2)]
    older, _ = queries.reputation_events("n1", Page(2, 5))
    assert [e.reason for e in older] == ["event 1", "event 0"]
    assert queries.job("nope") is None and queries.node("nope") is None

    # A job its budget paused says so, with the reason, until it is resumed.
    assert store.pause_job("job2", LEASE_SHORT, 300.0)
    paused = queries.job("job2")
    assert paused is not None and paused.state == "paused" and paused.paused
    assert paused.pause_reason == LEASE_SHORT
    store.resume_job("job2", 301.0)
    assert queries.job("job2").state == "queued"  # type: ignore[union-attr]


@pytest.fixture()
def served(tmp_path: Path, db_url: str):  # type: ignore[no-untyped-def]
    """The coordinator's HTTP app with the dashboard, on a loopback port."""
    engine, store = _farm(db_url)
    _job(store, "job-a", "1-2", 1, 100.0)
    blobs = BlobStore(tmp_path / "blobs")
    sha = blobs.put_bytes(_png(320, 180))
    with Session(engine) as session:
        task = store.list_tasks("job-a")[0]
        session.add(FrameResultRecord(job_id="job-a", frame=1, task_id=task.task_id,
                                      node_id="n1", blob_sha256=sha, blob_size=1,
                                      extension="png", render_seconds=1.0, created_at=1.0))
        session.add(NodeRecord(node_id="n1", name="node-one", registered_at=1.0,
                               last_seen_at=1.0))
        session.add(ReputationEventRecord(
            node_id="n1", at=1.0, kind="verification_failed", score_before=0.5,
            score_after=0.3, tier_after="probation", reason="tiles differ",
            job_id="job-a", frame=1, details_json='{"mode": "exact", "path": "/secret/x"}'))
        session.commit()
    app = web.build_app(CollectorRegistry(), dashboard_routes(engine, blobs, None,
                                                              tmp_path / "thumbs"))
    sock = web.bind("127.0.0.1:0")
    loop = asyncio.new_event_loop()
    task = loop.create_task(web.serve_http(app, sock))

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", engine
    loop.call_soon_threadsafe(task.cancel)
    thread.join(10)


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_pages_over_http(served) -> None:  # type: ignore[no-untyped-def]
    base, _engine = served
    for path in ("/jobs", "/jobs/job-a", "/nodes", "/nodes/n1", "/ledger",
                 "/static/live.js", "/static/dashboard.css"):
        status, _, body = _get(base + path)
        assert status == 200, (path, body[:200])
    _, _, jobs = _get(base + "/jobs")
    assert b"job-a" in jobs and b'<span class="pill queued">queued</span>' in jobs
    _, _, job = _get(base + "/jobs/job-a")
    assert b"/jobs/job-a/frames/1/thumb.png?v=" in job and b"node-one" not in job
    assert b"no escrow" in job

    status, kind, thumb = _get(base + "/jobs/job-a/frames/1/thumb.png")
    assert status == 200 and kind == "image/png"
    assert _decode(thumb).shape == (108, 192, 3)
    assert _get(base + "/jobs/job-a/frames/2/thumb.png")[0] == 404  # not rendered yet
    assert _get(base + "/jobs/nope")[0] == 404
    assert _get(base + "/nodes/nope")[0] == 404
    for bad in ("0", "-1", "x", "99999999999"):
        assert _get(f"{base}/jobs?page={bad}")[0] == 400

    # The public view of a node's history: the event, not the job, not the private details.
    _, _, node = _get(base + "/nodes/n1")
    assert b"tiles differ" in node and b"exact" in node
    assert b"job-a" not in node and b"/secret/x" not in node

    # A job its budget paused says why and how to resume it.
    FarmStore(_engine).pause_job("job-a", LEASE_SHORT, 200.0)
    _, _, paused = _get(base + "/jobs")
    assert b'<span class="pill paused">paused</span>' in paused
    assert b"top up to resume" in paused and LEASE_SHORT.encode() in paused

    # Nothing changes state over this listener.
    request = urllib.request.Request(base + "/jobs/job-a", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405


def test_live_stream_sends_the_page_body_when_it_changes(served) -> None:  # type: ignore[no-untyped-def]
    base, engine = served
    with urllib.request.urlopen(base + "/live/jobs/job-a", timeout=10) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")

        def event() -> str:
            lines = []
            while (line := stream.readline().decode()) != "\n":
                lines.append(line)
            return "".join(line.removeprefix("data: ") for line in lines
                           if line.startswith("data: "))

        assert stream.readline().startswith(b"retry:")
        stream.readline()
        first = event()
        assert "<h1>" in first and "<html" not in first  # the body only
        assert "frame verifying" not in first and "frame queued" in first
        with Session(engine) as session:
            session.exec(update(TaskRecord).where(TaskRecord.job_id == "job-a",
                                                  TaskRecord.first_frame == 1)
                         .values(state="verifying", node_id="n1"))
            session.commit()
        started = time.monotonic()
        second = event()
        assert "frame verifying" in second and time.monotonic() - started < 5

"""Cost of one /metrics scrape of the coordinator's farm state, on a farm of many jobs.

Builds a SQLite farm (the coordinator's own schema) with JOBS jobs of FRAMES frames each, frames
spread over the task states, one verification per rendered frame, then times the database part
of a scrape (FarmStateCollector, the queries /metrics runs in a worker thread) and the whole
exposition text.

    .venv/bin/python bench/metrics_bench.py [--jobs 10000] [--frames 10] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from bench.report import median, write_section  # noqa: E402
from coordinator.metrics import FarmStateCollector, coordinator_registry, exposition  # noqa: E402
from coordinator.storage.database import open_database, sqlite_url  # noqa: E402
from coordinator.storage.models import (  # noqa: E402
    JobRecord,
    SceneRecord,
    TaskRecord,
    VerificationRecord,
)

STATES = ("done", "done", "done", "done", "verifying", "leased", "queued", "queued", "failed",
          "cancelled")
RUNS = 7


def build(data_dir: Path, jobs: int, frames: int) -> object:
    engine = open_database(sqlite_url(data_dir))
    now = time.time()
    with engine.begin() as db:
        db.execute(insert(SceneRecord), [{"scene_id": "s", "main_file": "a.blend",
                                          "info_json": "{}", "created_at": now}])
        job_rows, task_rows, check_rows = [], [], []
        for j in range(jobs):
            job_id = f"job{j:06d}"
            job_rows.append({"job_id": job_id, "scene_id": "s", "tier": 1 + j % 3,
                             "frames_spec": f"1-{frames}", "settings_json": "{}",
                             "created_at": now, "updated_at": now, "settled": False,
                             "cancelled": False, "chunk_size": 1, "max_cost_usd": 1.0,
                             "name": "", "creator": "c", "error": ""})
            for f in range(1, frames + 1):
                state = STATES[(j + f) % len(STATES)]
                task_id = uuid.uuid4().hex
                task_rows.append({"task_id": task_id, "job_id": job_id, "first_frame": f,
                                  "last_frame": f, "state": state, "attempts": 0,
                                  "queued_at": now, "updated_at": now, "error": ""})
                if state in ("done", "verifying"):
                    check_rows.append({
                        "verification_id": uuid.uuid4().hex, "job_id": job_id, "frame": f,
                        "task_id": task_id, "node_id": "n", "render_tiles": False,
                        "image_sha256": "0" * 64,
                        "state": "done" if state == "done" else "queued",
                        "passed": True if state == "done" else None, "created_at": now,
                        "blender_version": "", "device": "", "verifier_id": "", "reason": "",
                        "mode": "", "details_json": "{}"})
        db.execute(insert(JobRecord), job_rows)
        db.execute(insert(TaskRecord), task_rows)
        db.execute(insert(VerificationRecord), check_rows)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = build(Path(tmp), args.jobs, args.frames)
        collector = FarmStateCollector(engine)  # type: ignore[arg-type]
        registry = coordinator_registry(engine)  # type: ignore[arg-type]
        state_ms, page_ms, size = [], [], 0
        for _ in range(RUNS):
            started = time.perf_counter()
            list(collector.collect())
            state_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            size = len(exposition(registry))
            page_ms.append((time.perf_counter() - started) * 1000)
    total = args.jobs * args.frames
    body = (f"A SQLite farm of {args.jobs:,} jobs and {total:,} frames (one task per frame, "
            f"states mixed, {RUNS} scrapes, medians):\n\n"
            "| part | time |\n|---|---|\n"
            f"| farm-state queries (FarmStateCollector) | {median(state_ms):.0f} ms |\n"
            f"| whole /metrics text ({size:,} bytes) | {median(page_ms):.0f} ms |\n\n"
            "The queries run in a worker thread, off the coordinator's event loop; a scrape "
            "every 15 s costs this once.")
    print(body)
    if not args.no_write:
        write_section("metrics scrape", ".venv/bin/python bench/metrics_bench.py", body)


if __name__ == "__main__":
    main()

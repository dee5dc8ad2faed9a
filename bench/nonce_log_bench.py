"""Replay-nonce journal on PostgreSQL: one transaction per call against group commit.

    .venv/bin/python bench/nonce_log_bench.py [--threads 32] [--calls 4000] [--rounds 3]

Several coordinators on one database check every signed call's nonce there
(coordinator/storage/cluster.py, SharedNonceLog). This times `record` from many threads at
once (a coordinator's executor under load) with the group-commit writer, against the one
transaction per call it replaced (kept here as the baseline), interleaved round by round on
a fresh database each; CPU is this process's (the coordinator's side), per call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from coordinator.storage.cluster import CallNonceRecord, SharedNonceLog, _table
from coordinator.storage.database import (
    create_database,
    drop_database,
    open_database,
)

SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def one_per_call(engine: Engine) -> Callable[[str, float], bool]:
    table = _table(CallNonceRecord)
    statement = pg_insert(table).on_conflict_do_nothing(index_elements=["key"])

    def record(key: str, now: float) -> bool:
        with engine.begin() as connection:
            return connection.execute(statement, {"key": key, "seen_at": now}).rowcount == 1
    return record


def run(kind: str, threads: int, calls: int) -> tuple[float, float]:
    url = create_database(SERVER, prefix="fp_nonce")
    engine = open_database(url)
    log = SharedNonceLog(engine, 120.0)
    record = log.record if kind == "group commit" else one_per_call(engine)
    now = time.time()
    barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        barrier.wait()
        for i in range(index, calls, threads):
            assert record(f"{uuid.uuid4().hex}:{i}", now)

    cpu, wall = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    log.close()
    engine.dispose()
    drop_database(url)
    return calls / wall, cpu / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"one per call": [], "group commit": []}
    for _ in range(args.rounds):
        for kind in results:
            results[kind].append(run(kind, args.threads, args.calls))
    print(f"| journal | calls/s, median of {args.rounds} | CPU µs per call, median |")
    print("|---|---|---|")
    for kind, runs in results.items():
        print(f"| {kind} | {statistics.median(r[0] for r in runs):,.0f} | "
              f"{statistics.median(r[1] for r in runs):,.0f} |")


if __name__ == "__main__":
    main()

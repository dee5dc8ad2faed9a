"""The storage side of a frame cycle in one process: CPU per lease + completion, and commits.

The coordinator's storage thread runs `LeaseHotPath.lease` and the completion for every frame
(coordinator/storage/leasing.py). This drives the same functions in-process on a fresh SQLite
file (the coordinator's settings: WAL, synchronous=NORMAL): 20 jobs of 1,000 one-frame tasks
from 4 creators, 16 trusted, bonded nodes, each round a node leasing `--batch` tasks and
delivering them (`complete_many` where the tree has it, else `complete` per lease). CPU time
(`time.process_time`) of this one process is stable on a loaded machine where the gRPC bench's
wall-clock figures are not. It also counts transactions (COMMITs) and their CPU: what a group
commit, one transaction for several calls, could save at most.

Run it on another checkout by putting that checkout first on the path (the script's own
folder is not a package import):

    PYTHONPATH=/tmp/base .venv/bin/python bench/storage_cycle_bench.py --batch 1 8
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NODES = 16


def run(batch: int, rounds: int) -> dict[str, float]:
    from sqlmodel import Session

    from coordinator.payments.bonds import BondPolicy
    from coordinator.storage import leasing
    from coordinator.storage.database import open_database, sqlite_url
    from coordinator.storage.models import JobRecord, NodeStandingRecord, SceneRecord
    from coordinator.storage.payment_models import BondRecord
    from coordinator.storage.store import FarmStore, FrameOutputRecord, SchedulingPolicy

    engine = open_database(sqlite_url(Path(tempfile.mkdtemp(prefix="storage-cycle-"))))
    store = FarmStore(engine, SchedulingPolicy(lease_seconds=100, max_attempts=3,
                                               max_failures_per_node=2))
    nodes = [f"node-{i}" for i in range(NODES)]
    with Session(engine) as session:
        for node in nodes:
            session.add(NodeStandingRecord(node_id=node, score=0.99, consecutive_verified=100,
                                           verified=100, delivered=100))
            session.add(BondRecord(node_id=node, held=10, posted=10, created_at=0.0,
                                   updated_at=0.0))
        session.commit()
    for node in nodes:
        store.register_node(node, node, "{}", 0.0)
    store.save_scene(SceneRecord(scene_id="scene", main_file="scene.blend", info_json="{}",
                                 created_at=0.0))
    for j in range(20):
        store.create_job(JobRecord(job_id=f"job{j}", scene_id="scene", creator=f"c{j % 4}",
                                   frames_spec="", settings_json="{}", created_at=j,
                                   updated_at=j), [[f] for f in range(1, 1001)], float(j))
    hot = leasing.LeaseHotPath(store, 10, BondPolicy(min_bond_tokens=0))
    commits = [0, 0.0]
    commit = engine.dialect.do_commit

    def counted(dbapi_connection: Any) -> None:
        started = time.process_time()
        commit(dbapi_connection)
        commits[0] += 1
        commits[1] += time.process_time() - started

    engine.dialect.do_commit = counted  # type: ignore[method-assign]
    batched = hasattr(hot, "complete_many")
    lease_cpu = complete_cpu = 0.0
    cycles = 0
    now = 1000.0
    for n in range(rounds):
        node = nodes[n % NODES]
        started = time.process_time()
        grants, _ = hot.lease(node, now, (), batch)
        lease_cpu += time.process_time() - started
        outputs = {g.lease_id: [FrameOutputRecord(frame=g.first_frame, sha256=f"{n:064x}",
                                                  size=1, extension="png", render_seconds=1.0)]
                   for g in grants}
        started = time.process_time()
        if batched and batch > 1:
            hot.complete_many(node, [leasing.LeaseResult(lease, out, {})
                                     for lease, out in outputs.items()], now,
                              lambda result, task, facts: list(result.outputs),
                              lambda gate, frames: frozenset())
        else:
            for lease, out in outputs.items():
                hot.complete(lease, node, out, now, lambda gate: frozenset())
        complete_cpu += time.process_time() - started
        cycles += len(grants)
        now += 0.01
    engine.dispose()
    return {"lease": lease_cpu / cycles * 1e6, "complete": complete_cpu / cycles * 1e6,
            "commits": commits[0] / cycles, "commit_cpu": commits[1] / cycles * 1e6,
            "batched": float(batched and batch > 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8],
                        help="tasks leased and delivered per call")
    parser.add_argument("--rounds", type=int, default=400, help="lease calls per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per batch (median)")
    parser.add_argument("--label", default="this tree")
    args = parser.parse_args(argv)
    for batch in args.batch:
        runs: dict[str, list[float]] = collections.defaultdict(list)
        for _ in range(args.repeat):
            for key, value in run(batch, args.rounds).items():
                runs[key].append(value)
        median = {key: statistics.median(values) for key, values in runs.items()}
        spread = f"{min(runs['lease']) + min(runs['complete']):.0f}-" \
                 f"{max(runs['lease']) + max(runs['complete']):.0f}"
        print(f"| {args.label}, {batch} per call{' (batched)' if median['batched'] else ''} | "
              f"{median['lease']:.0f} | {median['complete']:.0f} | "
              f"{median['lease'] + median['complete']:.0f} ({spread}) | "
              f"{median['commits']:.2f} | {median['commit_cpu']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

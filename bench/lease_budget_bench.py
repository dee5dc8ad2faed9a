"""What the budget gate costs a lease: `lease_next_task` with and without escrow checks.

Real SQLite (WAL) and the real embedded chain for the escrows. The same queue twice: jobs
submitted with a budget row (each lease reserves escrow: a few indexed aggregates over the
job) and without one (no gate). Prints milliseconds per lease; `--write` appends the table to
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from solders.keypair import Keypair

from coordinator.chain import signed_deposit
from coordinator.chain.embedded import EmbeddedChain
from coordinator.domain.pricing import PricingConfig
from coordinator.payments import Payments
from coordinator.storage.database import open_database, sqlite_url
from coordinator.storage.models import JobRecord, SceneRecord
from coordinator.storage.store import FarmStore

ROOT = Path(__file__).resolve().parents[1]


def run(gated: bool, jobs: int, frames: int, work: Path) -> list[float]:
    """Lease every frame of `jobs` jobs once; return each lease's seconds."""
    engine = open_database(sqlite_url(work))
    chain = EmbeddedChain(work / "chain")
    try:
        store = FarmStore(engine)
        payments = Payments(engine, chain, PricingConfig(decimals=chain.decimals))
        store.save_scene(SceneRecord(scene_id="scene", main_file="a.blend", info_json="{}",
                                     created_at=0.0))
        creator = Keypair()
        payments.grant(str(creator.pubkey()))
        now = time.time()
        for n in range(jobs):
            job_id = f"{n:016x}"
            message = payments.deposit_message(str(creator.pubkey()), 1_000_000)
            payments.open_escrow(job_id, str(creator.pubkey()),
                                 signed_deposit(message, creator), 1_000_000)
            store.create_job(JobRecord(job_id=job_id, scene_id="scene", frames_spec="",
                                       settings_json="{}", created_at=now, updated_at=now),
                             [[f] for f in range(1, frames + 1)], now,
                             frame_price_tokens=1_000 if gated else None)
        node = str(Keypair().pubkey())
        store.register_node(node, "bench", "{}", now)
        times = []
        while True:
            start = time.perf_counter()
            task = store.lease_next_task(node, time.time())
            times.append(time.perf_counter() - start)
            if task is None:
                return times[:-1]
    finally:
        chain.close()
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--write", action="store_true", help="append to docs/BENCHMARKS.md")
    args = parser.parse_args()
    rows = []
    for gated in (False, True):
        with tempfile.TemporaryDirectory() as work:
            times = run(gated, args.jobs, args.frames, Path(work))
        rows.append((gated, len(times), statistics.median(times) * 1000,
                     sorted(times)[int(len(times) * 0.95)] * 1000))
    table = ["| escrow gate | leases | median ms | p95 ms |", "|---|---|---|---|"]
    table += [f"| {'on' if gated else 'off'} | {n} | {median:.2f} | {p95:.2f} |"
              for gated, n, median, p95 in rows]
    print("\n".join(table))
    if args.write:
        section = (
            "\n## Lease cost of the budget gate\n\n"
            f"Command: `.venv/bin/python -m bench.lease_budget_bench --jobs {args.jobs} "
            f"--frames {args.frames}` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
            f"Python {platform.python_version()}; a shared 2-core machine)\n\n"
            "One node leases every frame of the queue, one lease at a time (SQLite). With "
            "the gate on, each lease also reads the job's escrow, its frames in flight and "
            "its mean charge (coordinator/domain/budget.py, docs/PAYMENTS.md).\n\n"
            + "\n".join(table) + "\n")
        with (ROOT / "docs" / "BENCHMARKS.md").open("a") as docs:
            docs.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

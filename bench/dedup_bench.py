"""What proof of possession costs: a second creator with the same file sends its bytes once.

Over loopback gRPC to a real coordinator, per run a fresh random blob: creator A uploads it
(new: written, hashed, fsynced), creator B uploads the same bytes (a proof: compared with the
stored copy, nothing written), then B again (already his: nothing sent).

    .venv/bin/python bench/dedup_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import median, write_section  # noqa: E402
from frameproof.localfarm import LocalFarm  # noqa: E402
from frameproof.transfer import upload_files  # noqa: E402


def measure(farm: LocalFarm, size_mb: int, runs: int, work: Path) -> str:
    times: dict[str, list[float]] = {"new": [], "proof": [], "owner": []}
    sent: dict[str, int] = {}
    with farm.client(work / "a.json") as first, farm.client(work / "b.json") as second:
        for run in range(runs):
            blob = work / f"blob-{run}.bin"
            blob.write_bytes(os.urandom(size_mb * 2**20))
            sha = hashlib.sha256(blob.read_bytes()).hexdigest()
            for kind, client in (("new", first), ("proof", second), ("owner", second)):
                start = time.perf_counter()
                sent[kind] = upload_files(client.blobs, {sha: blob})
                times[kind].append(time.perf_counter() - start)
            blob.unlink()
    stored = sum(p.stat().st_size for p in (farm.data_dir / "blobs" / "objects").rglob("*")
                 if p.is_file())
    def speed(kind: str) -> str:
        return f"{sent[kind] / 2**20 / median(times[kind]):.0f} MiB/s" if sent[kind] else "—"

    rows = "".join(
        f"| {label} | {sent[kind] / 2**20:.0f} MiB | {median(times[kind]):.2f} s | "
        f"{speed(kind)} |\n"
        for kind, label in (("new", "creator A, new blob (stored)"),
                            ("proof", "creator B, same bytes (proof of possession)"),
                            ("owner", "creator B again (already his)")))
    return (
        f"Upload of a {size_mb} MiB random blob by two creators, {runs} runs, loopback gRPC "
        "(medians):\n\n| upload | bytes sent | time | throughput |\n|---|---|---|---|\n"
        f"{rows}\nBlob store after {runs} runs: {stored / 2**20:.0f} MiB "
        f"({runs} blobs of {size_mb} MiB: each stored once).\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with LocalFarm(work / "farm") as farm:
            farm.start_coordinator(extra_args=("--no-verifier",))
            body = measure(farm, 20 if args.quick else 100, 3, work)
    print(body)
    command = ".venv/bin/python bench/dedup_bench.py" + (" --quick" if args.quick else "")
    write_section("proof of possession", command, body)


if __name__ == "__main__":
    main()

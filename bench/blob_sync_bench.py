"""CPU to store small blobs durably: one `put_bytes` each (an fsync per file and per folder)
against `put_many` batches (two syncfs(2) barriers a batch), the same BlobStore code the
coordinator runs for UploadBlob and for BatchUploadBlobs / DeliverTasks.

    TMPDIR=/var/tmp .venv/bin/python -m bench.blob_sync_bench --batch 16 --blobs 960

Alternates the two ways (A, B, A, B) in fresh stores under $TMPDIR and prints the CPU time
(user + system of this process) per blob, and the wall time, of each round.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from coordinator.blobstore import BlobStore


def blobs(count: int, tag: str) -> list[tuple[bytes, str]]:
    import hashlib

    out = []
    for index in range(count):
        data = f"{tag} {index} {time.time_ns()}".encode() + os.urandom(64)
        out.append((data, hashlib.sha256(data).hexdigest()))
    return out


def one_round(way: str, count: int, batch: int) -> tuple[float, float]:
    """(CPU seconds per blob, wall seconds per blob) for `count` blobs stored `way`."""
    root = Path(tempfile.mkdtemp(prefix="blob-sync-bench-"))
    try:
        store = BlobStore(root)
        items = blobs(count, way)
        cpu, wall = time.process_time(), time.perf_counter()
        if way == "put_bytes":
            for data, sha in items:
                store.put_bytes(data, sha)
        else:
            for start in range(0, count, batch):
                answers = store.put_many(items[start:start + batch])
                assert all(answer is None for answer in answers), answers
        return (time.process_time() - cpu) / count, (time.perf_counter() - wall) / count
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="blobs per put_many call")
    parser.add_argument("--blobs", type=int, default=960, help="blobs per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each way")
    args = parser.parse_args()
    print("| way | CPU per blob | wall per blob |\n|---|---|---|")
    for _ in range(args.rounds):
        for way in ("put_bytes", f"put_many x{args.batch}"):
            cpu, wall = one_round(way, args.blobs, args.batch)
            print(f"| {way} | {cpu * 1e6:.0f} µs | {wall * 1e6:.0f} µs |", flush=True)


if __name__ == "__main__":
    main()

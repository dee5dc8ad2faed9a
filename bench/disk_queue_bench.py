"""The disk's share of a blob download on one machine, by O_DIRECT queue depth.

Reads a cold 1 GiB file with O_DIRECT at queue depth 1, 2 and 4 (threads, `preadv`), alone
and while another file is written with O_DIRECT and fsynced: the bound a loopback download
meets when the coordinator's copy and the client's are on the same disk (docs/BENCHMARKS.md,
"blob transfer"). Prints only.

    TMPDIR=/var/tmp .venv/bin/python bench/disk_queue_bench.py --runs 1
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SIZE = 1 << 30
BLOCK = 4 << 20


def write(path: Path, depth: int = 1) -> None:
    """A file of random blocks written with O_DIRECT (so none of it is cached), fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    buffer = mmap.mmap(-1, BLOCK)
    buffer.write(os.urandom(BLOCK))
    offsets = range(0, SIZE, BLOCK)
    with ThreadPoolExecutor(depth) as pool:
        list(pool.map(lambda offset: os.pwrite(fd, buffer, offset), offsets))
    os.fsync(fd)
    os.close(fd)


def read(path: Path, depth: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    local = threading.local()

    def one(offset: int) -> int:
        if not hasattr(local, "buffer"):
            local.buffer = mmap.mmap(-1, BLOCK)
        return os.preadv(fd, [local.buffer], offset)

    with ThreadPoolExecutor(depth) as pool:
        list(pool.map(one, range(0, SIZE, BLOCK)))
    os.close(fd)


def timed(step, *args) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    step(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="disk-queue-"))
    source, target = folder / "source", folder / "target"
    try:
        for run in range(args.runs):
            for depth in (1, 2, 4):
                write(source)
                alone = timed(read, source, depth)
                write(source)
                writer = threading.Thread(target=write, args=(target,))
                started = time.perf_counter()
                writer.start()
                reading = timed(read, source, depth)
                writer.join()
                both = time.perf_counter() - started
                print(f"run {run} depth {depth}: read alone {alone:.2f} s; read while "
                      f"writing {reading:.2f} s, both done {both:.2f} s", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

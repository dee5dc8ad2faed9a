"""CPU to create a file, per folder: why the benches run with TMPDIR=/var/tmp on this machine.

Creates (and closes) N empty files in a fresh temporary folder under each given folder and
prints the CPU time per file. On the project's 2-core VM a file created under /tmp costs
about 300 µs of CPU and 6-13 µs anywhere else on the same disk; the coordinator's data dir in
the benches (blobs included) is a temporary folder, so where it lives is part of the figure.

    .venv/bin/python -m bench.file_create_bench /tmp /var/tmp /work
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time


def cpu_per_file(parent: str, count: int) -> float:
    """Seconds of CPU per file created (O_CREAT | O_EXCL, then closed) under `parent`."""
    folder = tempfile.mkdtemp(dir=parent, prefix="file-create-bench-")
    try:
        started = time.process_time()
        for index in range(count):
            os.close(os.open(f"{folder}/f{index}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
        return (time.process_time() - started) / count
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args(argv)
    print("| folder | CPU per file created |\n|---|---|")
    for folder in args.folders:
        print(f"| {folder} | {cpu_per_file(folder, args.files) * 1e6:.0f} µs |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

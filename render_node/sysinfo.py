"""What a node advertises: Blender build, devices, threads, memory."""

from __future__ import annotations

import json
import os
import platform
import socket
from pathlib import Path

from frameproof.v1 import farm_pb2 as pb

ENGINES = ("CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH")


def total_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


BENCHMARK_FILE = "benchmark.json"


def save_benchmark(work_dir: Path, score: float, seconds: float) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / BENCHMARK_FILE).write_text(json.dumps({"score": score, "seconds": seconds}))


def has_benchmark(work_dir: Path) -> bool:
    """Whether this work dir has a saved score (`render-node run` measures once if not)."""
    return (work_dir / BENCHMARK_FILE).is_file()


def benchmark_score(work_dir: Path) -> float:
    """The score `render-node benchmark` saved, or 1.0 (the reference) if it never ran."""
    try:
        return float(json.loads((work_dir / BENCHMARK_FILE).read_text())["score"])
    except (OSError, ValueError, KeyError):
        return 1.0


def capabilities(blender_version: str, threads: int, devices: list[str],
                 score: float = 1.0) -> pb.NodeCapabilities:
    return pb.NodeCapabilities(
        benchmark_score=score,
        blender_version=blender_version,
        devices=devices,
        threads=threads or os.cpu_count() or 1,
        memory_bytes=total_memory_bytes(),
        engines=list(ENGINES),
        hostname=socket.gethostname(),
        platform=f"{platform.system()}-{platform.machine()}",
    )

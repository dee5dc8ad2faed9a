"""Opt-in memory diagnostics for the coordinator process (off unless asked for).

`FRAMEPROOF_MEMORY_LOG=DIR` appends one line to `DIR/memory.log` every
`FRAMEPROOF_MEMORY_SECONDS` (default 60): RSS, what malloc has handed out and holds free
(glibc `mallinfo2`), SQLite's own allocator and the number of Python objects. Growth in
"malloc used" with a flat Python heap points at native code; RSS growing over a flat "used"
is fragmentation.

`FRAMEPROOF_TRACEMALLOC=1` (with the above) also traces Python allocations and dumps a
snapshot (`DIR/heap-SSSSS.tracemalloc`, S = seconds since start) with each line. Compare two
with `python -m coordinator.diagnostics DIR/heap-00060.tracemalloc DIR/heap-00600.tracemalloc`.
Tracing slows a busy coordinator about tenfold: use it to find a leak, not to measure speed.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import re
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOG_ENV = "FRAMEPROOF_MEMORY_LOG"
INTERVAL_ENV = "FRAMEPROOF_MEMORY_SECONDS"
TRACE_ENV = "FRAMEPROOF_TRACEMALLOC"
TRACE_FRAMES = 8
MIB = 2**20


def start_from_env() -> asyncio.Task | None:
    """Start the memory log (and tracing) when FRAMEPROOF_MEMORY_LOG names a folder."""
    target = os.environ.get(LOG_ENV)
    if not target:
        return None
    folder = Path(target)
    folder.mkdir(parents=True, exist_ok=True)
    trace = os.environ.get(TRACE_ENV, "") not in ("", "0")
    if trace and not tracemalloc.is_tracing():
        tracemalloc.start(TRACE_FRAMES)
    interval = float(os.environ.get(INTERVAL_ENV, "60"))
    log.warning("memory log every %.0fs in %s%s", interval, folder,
                " with tracemalloc snapshots" if trace else "")
    return asyncio.create_task(_log_memory(folder, interval))


async def _log_memory(folder: Path, interval: float) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        elapsed = time.monotonic() - started
        await asyncio.to_thread(write_sample, folder, elapsed)


def write_sample(folder: Path, elapsed: float) -> None:
    gc.collect()
    used, free = malloc_used_free()
    line = (f"{elapsed:6.0f}s rss {rss_kib() / 1024:.1f} MiB malloc used {used / MIB:.1f} "
            f"free {free / MIB:.1f} MiB sqlite {sqlite_memory_used() / MIB:.1f} MiB "
            f"objects {len(gc.get_objects())}")
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(str(folder / f"heap-{elapsed:05.0f}.tracemalloc"))
        traced, peak = tracemalloc.get_traced_memory()
        line += f" traced {traced / MIB:.1f} MiB peak {peak / MIB:.1f} MiB"
    with open(folder / "memory.log", "a") as handle:
        handle.write(line + "\n")


@dataclass(frozen=True)
class MemorySample:
    """One line of memory.log; sizes in MiB (-1: not available on this platform)."""

    elapsed: float
    rss: float
    malloc_used: float
    malloc_free: float
    sqlite: float
    objects: int


_LINE = re.compile(r"\s*(?P<elapsed>\d+)s rss (?P<rss>[\d.]+) MiB malloc used "
                   r"(?P<used>-?[\d.]+) free (?P<free>-?[\d.]+) MiB sqlite (?P<sqlite>-?[\d.]+) "
                   r"MiB objects (?P<objects>\d+)")


def read_memory_log(path: Path) -> list[MemorySample]:
    """The samples a coordinator wrote with FRAMEPROOF_MEMORY_LOG (none if there is no log)."""
    if not path.exists():
        return []
    samples = []
    for line in path.read_text().splitlines():
        if match := _LINE.match(line):
            samples.append(MemorySample(
                elapsed=float(match["elapsed"]), rss=float(match["rss"]),
                malloc_used=float(match["used"]), malloc_free=float(match["free"]),
                sqlite=float(match["sqlite"]), objects=int(match["objects"])))
    return samples


def rss_kib(pid: int | str = "self") -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) if match else 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_used_free() -> tuple[int, int]:
    """glibc malloc: bytes in use (mmapped blocks included) and bytes held free; -1 elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return -1, -1
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd, info.fordblks


def sqlite_memory_used() -> int:
    """Bytes held by SQLite's allocator (page caches, statements): invisible to tracemalloc."""
    import sqlite3  # noqa: F401  (loads the library the module links)

    name = ctypes.util.find_library("sqlite3")
    try:
        library = ctypes.CDLL(name or "libsqlite3.so.0")
        library.sqlite3_memory_used.restype = ctypes.c_int64
        return int(library.sqlite3_memory_used())
    except (OSError, AttributeError):
        return -1


def compare(before: Path, after: Path, *, key: str = "traceback", top: int = 15) -> str:
    """The allocation sites that grew most between two snapshots."""
    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    lines = []
    for stat in new.compare_to(old, key)[:top]:
        lines.append(f"{stat.size_diff / 1024:+9.1f} KiB (now {stat.size / 1024:.1f} KiB, "
                     f"{stat.count_diff:+d} blocks)")
        frames = stat.traceback.format() if key == "traceback" else [str(stat.traceback)]
        lines.extend(f"    {frame}" for frame in frames)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="compare two tracemalloc snapshots")
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--key", default="traceback", choices=["traceback", "lineno",
                                                                "filename"])
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    print(compare(args.before, args.after, key=args.key, top=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

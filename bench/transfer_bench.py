"""Blob transfer speed over loopback: upload and download of a 1 GiB blob through a real
coordinator process, against raw TCP between two processes measured in the same run.

    .venv/bin/python bench/transfer_bench.py [--size-mib 1024] [--runs 5] [--before TREE]

Each run uploads a fresh blob (its first bytes changed, so nothing is deduplicated) as a
creator over TCP 127.0.0.1, then downloads it back DOWNLOADS times as the same key (an owner
may read its blob): sha256 checked on both sides, the coordinator's copy and each downloaded
file fsynced, exactly as the CLI and the render node do it. The first reads come from the
coordinator's disk; from the third on the coordinator keeps the blob in the page cache
(coordinator/api/blob_http.py, Reads), as for a scene that every node of its job fetches.
`--before TREE` runs the same measurement with another checkout's code (e.g. a worktree of
the commit before a change), interleaved run by run with this tree, so the two are compared
under the same load.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import mmap
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 16 * 2**20
DOWNLOADS = 4


DISK_ROWS = (("write", "O_DIRECT write alone, 4 MiB blocks, fsynced"),
             ("read", "O_DIRECT read alone, 4 MiB blocks"),
             ("both", "O_DIRECT read of one file while writing another, fsynced"))


def raw_tcp_seconds(size: int) -> float:
    """Seconds to push `size` bytes from this process to a child process over loopback TCP."""
    receiver = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER, str(size)], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    port = int(receiver.stdout.readline())
    block = memoryview(os.urandom(CHUNK))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        sent = 0
        while sent < size:
            piece = block[: min(CHUNK, size - sent)]
            sock.sendall(piece)
            sent += len(piece)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(2) == b"ok"
        seconds = time.perf_counter() - start
    receiver.wait()
    return seconds


def sha256_seconds(size: int) -> float:
    """Seconds for hashlib's sha256 of `size` bytes from memory on one thread: the receiver's
    cost per blob, whatever the network and the disk."""
    block = memoryview(os.urandom(CHUNK))
    digest = hashlib.sha256()
    start = time.perf_counter()
    for offset in range(0, size, CHUNK):
        digest.update(block[: min(CHUNK, size - offset)])
    return time.perf_counter() - start


def _open_direct(path: Path, flags: int) -> int:
    """O_DIRECT where the file system allows it (not tmpfs), as the blob store opens files."""
    try:
        return os.open(path, flags | getattr(os, "O_DIRECT", 0), 0o644)
    except OSError:
        return os.open(path, flags, 0o644)


def _direct_write(path: Path, size: int) -> None:
    block = mmap.mmap(-1, 4 * 2**20)  # page-aligned, as O_DIRECT needs
    block.write(os.urandom(len(block)))
    fd = _open_direct(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for _ in range(0, size, len(block)):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)


def _direct_read(path: Path, size: int) -> None:
    block = mmap.mmap(-1, 4 * 2**20)
    fd = _open_direct(path, os.O_RDONLY)
    try:
        for offset in range(0, size, len(block)):
            os.preadv(fd, [block], offset)
    finally:
        os.close(fd)


def disk_seconds(size: int, folder: Path) -> dict[str, float]:
    """Seconds the disk takes for a transfer's share of the work, O_DIRECT in 4 MiB blocks
    as the blob store does (frameproof.pipeline): writing `size` bytes and fsyncing them (an
    upload's), reading them back, and reading one file while writing another (a loopback
    download's: the coordinator reads its copy while the client writes its own, here on the
    same disk)."""
    stored, written = folder / "disk-stored.bin", folder / "disk-written.bin"
    try:
        start = time.perf_counter()
        _direct_write(stored, size)
        write = time.perf_counter() - start
        start = time.perf_counter()
        _direct_read(stored, size)
        read = time.perf_counter() - start
        reader = threading.Thread(target=_direct_read, args=(stored, size))
        start = time.perf_counter()
        reader.start()
        _direct_write(written, size)
        reader.join()
        both = time.perf_counter() - start
        return {"write": write, "read": read, "both": both}
    finally:
        stored.unlink(missing_ok=True)
        written.unlink(missing_ok=True)


_RECEIVER = """
import socket, sys
size = int(sys.argv[1])
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
buf = memoryview(bytearray(4 << 20))
got = 0
while got < size:
    n = conn.recv_into(buf)
    if not n:
        break
    got += n
conn.sendall(b"ok" if got == size else b"no")
conn.close()
"""


def make_blob(path: Path, size: int, tag: int) -> str:
    """Write `size` random bytes (unique per tag) to path once; return its sha256."""
    if not path.exists() or path.stat().st_size != size:
        with open(path, "wb") as f:
            left = size
            while left:
                f.write(os.urandom(min(CHUNK, left)))
                left -= min(CHUNK, left)
    with open(path, "r+b") as f:
        f.write(tag.to_bytes(16, "big"))
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def measure(tree: Path, blob: Path, sha: str, work: Path) -> dict[str, float]:
    """One upload and one download of blob through a fresh coordinator running tree's code."""
    sys.path.insert(0, str(tree))
    os.environ["PYTHONPATH"] = str(tree)
    from frameproof.localfarm import LocalFarm
    from frameproof.transfer import download_blob, upload_files
    from frameproof.v1 import farm_pb2 as pb

    with LocalFarm(work / "farm") as farm:
        farm.start_coordinator(extra_args=("--no-verifier",))
        assert farm.coordinator is not None
        pid = farm.coordinator.pid
        settle(pid)
        with farm.client() as client:
            client.blobs.FindMissingBlobs(pb.FindMissingBlobsRequest(), timeout=30)  # connected
            cpu = (_cpu_seconds(pid), _own_cpu_seconds())
            start = time.perf_counter()
            upload_files(client.blobs, {sha: blob})
            up = time.perf_counter() - start
            up_cpu = (_cpu_seconds(pid), _own_cpu_seconds())
            result = {"up": up, "up_server_cpu": up_cpu[0] - cpu[0],
                      "up_client_cpu": up_cpu[1] - cpu[1]}
            dest = work / "down.bin"
            for n in range(1, DOWNLOADS + 1):
                before = (_cpu_seconds(pid), _own_cpu_seconds())
                start = time.perf_counter()
                download_blob(client.blobs, sha, dest)
                result[f"down{n}"] = time.perf_counter() - start
                result[f"down{n}_server_cpu"] = _cpu_seconds(pid) - before[0]
                result[f"down{n}_client_cpu"] = _own_cpu_seconds() - before[1]
                dest.unlink()
    return result


def settle(pid: int, *, quiet: float = 0.05, window: float = 0.5, limit: float = 60.0) -> None:
    """Wait until the coordinator and its children use under `quiet` CPU seconds in a
    `window`: a coordinator just started still imports bpy in its warm Blender child
    (about a CPU-second), which a transfer started at once shares the two cores with; a
    long-running coordinator has done that long before."""
    deadline = time.monotonic() + limit
    before = _tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = _tree_cpu_seconds(pid)
        if now - before < quiet:
            return
        before = now


def _tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children so far (Linux /proc)."""
    total = _cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile
                total += _cpu_seconds(int(child))
    return total


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(tree: Path, blob: Path, sha: str, work: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(tree), str(blob), sha, str(work)],
        check=True, capture_output=True, text=True, cwd=tree,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another checkout to measure alongside")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the docs")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # A timeout's SIGTERM unwinds like an error, so LocalFarm stops its processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.measure:
        tree, blob, sha, work = args.measure
        print(json.dumps(measure(Path(tree), Path(blob), sha, Path(work))))
        return

    sys.path.insert(0, str(ROOT))
    from bench.report import median, write_section

    size = args.size_mib * 2**20
    trees = {"this tree": ROOT}
    if args.before:
        trees = {"before": args.before.resolve(), **trees}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    tcp: list[float] = []
    hashing: list[float] = []
    disk: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="transfer-bench-") as tmp:
        work = Path(tmp)
        blob = work / "blob.bin"
        tag = 0
        for run in range(args.runs):
            tcp.append(raw_tcp_seconds(size))
            hashing.append(sha256_seconds(size))
            disk.append(disk_seconds(size, work))
            for name, tree in trees.items():
                tag += 1
                sha = make_blob(blob, size, tag)
                run_dir = work / f"run-{tag}"
                run_dir.mkdir()
                results[name].append(child(tree, blob, sha, run_dir))
                subprocess.run(["rm", "-rf", str(run_dir)], check=True)
                downs = ", ".join(f"{results[name][-1][f'down{n}']:.2f}"
                                  for n in range(1, DOWNLOADS + 1))
                print(f"run {run + 1} {name}: up {results[name][-1]['up']:.2f} s, "
                      f"down {downs} s; raw TCP {tcp[-1]:.2f} s", flush=True)

    def rate(seconds: float) -> str:
        return f"{size / seconds / 1e9:.2f} GB/s ({size / seconds / 2**20:.0f} MiB/s)"

    tcp_s = median(tcp)
    rows = [f"| raw TCP, one connection, process to process | {tcp_s:.2f} s | {rate(tcp_s)} "
            "| 100% | | |",
            f"| sha256 alone, one thread, from memory | {median(hashing):.2f} s "
            f"| {rate(median(hashing))} | | | |",
            *(f"| {label} | {median([d[key] for d in disk]):.2f} s "
              f"| {rate(median([d[key] for d in disk]))} | | | |"
              for key, label in DISK_ROWS)]
    gib = size / 2**30
    transfers = [("up", "upload"), *((f"down{n}", f"download, read {n} of the blob")
                                     for n in range(1, DOWNLOADS + 1))]
    for name, runs in results.items():
        for direction, label in transfers:
            seconds = median([r[direction] for r in runs])
            label_name = f"{label} ({name})" if len(trees) > 1 else label
            server = median([r[f"{direction}_server_cpu"] for r in runs]) / gib
            client = median([r[f"{direction}_client_cpu"] for r in runs]) / gib
            rows.append(f"| {label_name} | {seconds:.2f} s | {rate(seconds)} | "
                        f"{tcp_s / seconds:.0%} | {server:.2f} s | {client:.2f} s |")
    samples = "; ".join(
        f"{name}: " + ", ".join(
            f"{key} " + " / ".join(f"{r[key]:.2f}" for r in runs) + " s" for key, _ in transfers)
        for name, runs in results.items())
    body = (
        f"A {args.size_mib} MiB random blob over loopback TCP to a real coordinator process "
        f"(`--no-verifier`, SQLite), {args.runs} runs, medians; a fresh blob each run, "
        f"uploaded once and downloaded {DOWNLOADS} times; sha256 "
        "checked by the receiver and the received copy fsynced, as the CLI and nodes do. "
        "The first two reads of a blob come from the coordinator's disk (O_DIRECT), the third "
        "goes through the page cache and leaves it there, the later ones are served from it. "
        "Raw TCP, the receiver's sha256 alone and the disk's share alone (the upload's "
        "write; the download's read of the coordinator's copy while the client writes its "
        "own, both on this machine's one disk) are measured in the same runs, interleaved. "
        "The machine has 2 cores shared "
        "by up to 8 engineers' builds and tests, so absolute figures move with their load; "
        "the ratio to raw TCP is the steadier figure.\n\n"
        "| transfer | median time | throughput | of raw TCP | coordinator CPU per GiB "
        "| client CPU per GiB |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nEach run, in seconds: raw TCP {', '.join(f'{t:.2f}' for t in tcp)}; "
        + f"sha256 {', '.join(f'{t:.2f}' for t in hashing)}; "
        + "".join(f"{label.split(',')[0]} {', '.join(f'{d[key]:.2f}' for d in disk)}; "
                  for key, label in DISK_ROWS)
        + samples + ".\n"
    )
    print(body)
    if not args.no_write:
        command = (".venv/bin/python bench/transfer_bench.py"
                   + (f" --size-mib {args.size_mib}" if args.size_mib != 1024 else "")
                   + (f" --runs {args.runs}" if args.runs != 5 else "")
                   + (" --before TREE" if args.before else ""))
        write_section("blob transfer", command, body)


if __name__ == "__main__":
    main()

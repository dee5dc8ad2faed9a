"""Helpers for end-to-end tests: submit, wait, render locally for comparison."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from frameproof.client import FarmClient
from frameproof.creator import Creator, JobOptions
from frameproof.localfarm import LocalFarm
from frameproof.manifest import ManifestEntry, SceneManifest
from frameproof.transfer import upload_bytes
from frameproof.v1 import farm_pb2 as pb

# Tiny renders keep the suite fast: 64x36 pixels, 4 samples.
TINY = {"resolution_percentage": 20, "samples": 4}


def submit_sample(client: FarmClient, scene: Path, frames: str, **overrides: object) -> pb.Job:
    # A generous budget: these tests are about rendering, not about the cost estimate.
    options = JobOptions(frames=frames, **{"max_cost_usd": 1.0, **TINY, **overrides})
    return Creator(client).submit_scene(scene, options)[0].job


def alive(pid: int) -> bool:
    """Is a process of ours with this pid still there (not yet reaped)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.2):  # type: ignore[no-untyped-def]
    """Poll until predicate() returns something truthy; fail with a clear message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate.__name__}")


def job(client: FarmClient, job_id: str) -> pb.Job:
    return client.jobs.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10, wait_for_ready=True)


def frames(client: FarmClient, job_id: str) -> list[pb.Frame]:
    request = pb.ListFramesRequest(job_id=job_id)
    return list(client.jobs.ListFrames(request, timeout=10, wait_for_ready=True).frames)


def wait_until_done(client: FarmClient, job_id: str, timeout: float = 180.0) -> pb.Job:
    def finished() -> pb.Job | None:
        current = job(client, job_id)
        return current if current.state in {pb.JOB_STATE_DONE, pb.JOB_STATE_FAILED} else None

    ended = wait_for(finished, timeout)
    assert ended.state == pb.JOB_STATE_DONE, f"job ended {ended.state}: {ended}"
    return ended


def wait_until_registered(farm: LocalFarm, names: list[str], timeout: float = 60.0) -> None:
    def registered() -> bool:
        logs = [farm.root / "logs" / f"{name}.log" for name in names]
        return all(log.exists() and "registered as" in log.read_text() for log in logs)

    wait_for(registered, timeout)


def render_reference(scene: Path, frame_numbers: list[int], out_dir: Path,
                     **overrides: int) -> dict[int, Path]:
    """The reference: the same frames rendered by plain bpy in a separate process."""
    samples = overrides.get("samples", TINY["samples"])
    percent = overrides.get("resolution_percentage", TINY["resolution_percentage"])
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, str(Path(__file__).with_name("reference_render.py")), str(scene),
         str(out_dir), str(samples), str(percent), *map(str, frame_numbers)],
        check=True, capture_output=True, timeout=300,
    )
    return {frame: out_dir / f"ref_{frame:06d}.png" for frame in frame_numbers}


def upload_raw_scene(client: FarmClient, files: dict[str, bytes], main_file: str) -> str:
    """Upload a hand-made scene, bypassing the creator's packer: the coordinator must cope."""
    entries = []
    for path, data in files.items():
        entries.append(ManifestEntry(path=path, sha256=upload_bytes(client.blobs, data),
                                     size=len(data)))
    manifest = SceneManifest(main_file=main_file, files=tuple(entries))
    return upload_bytes(client.blobs, manifest.to_bytes())


def make_scene_variant(source: Path, out: Path, script: str) -> Path:
    """Save a copy of a scene changed by a few lines of bpy (run in a child process)."""
    program = (
        "import bpy, sys\n"
        f"bpy.ops.wm.open_mainfile(filepath={str(source)!r}, use_scripts=False)\n"
        "scene = bpy.context.scene\n"
        f"{script}\n"
        f"bpy.ops.wm.save_as_mainfile(filepath={str(out)!r}, relative_remap=False)\n"
    )
    subprocess.run([sys.executable, "-c", program], check=True, capture_output=True,
                   timeout=120)
    return out


def settled_receipts(client: FarmClient, job_id: str) -> pb.Receipts:
    """Receipts once the job's refund has landed on chain (a moment after the job is done).

    The refund's signature is recorded before the transaction is sent, so waiting for the
    signature alone races the wallet's escrow balance.
    """
    def settled() -> pb.Receipts | None:
        receipts = client.jobs.GetReceipts(pb.ReceiptsRequest(job_id=job_id), timeout=30,
                                           wait_for_ready=True)
        return receipts if receipts.refund_state == "landed" else None

    return wait_for(settled, timeout=60)


def coordinator_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`render-coordinator ARGS` as an operator runs it, its exit status and output, run in
    this process: the command's own code (coordinator.cli.main) without a fresh interpreter,
    whose imports cost ~2.5 s of CPU per call."""
    from coordinator.cli import main

    return _in_process(main, "render-coordinator", args)


def render_node_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`render-node ARGS`, the same way (render_node.cli.main in this process)."""
    from render_node.cli import main

    return _in_process(main, "render-node", args)


def _in_process(main: Callable[[list[str]], int], program: str,
                args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(args))
        except SystemExit as exit_:  # argparse and parser.exit, as the process would exit
            status = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    return subprocess.CompletedProcess([program, *args], status, out.getvalue(), err.getvalue())


def drop_cached_pages(path: Path) -> None:
    """Make the kernel drop a file's pages, as after a restart; skip the test where that
    cannot be known to have happened (no O_DIRECT: tmpfs keeps every file in memory)."""
    import pytest

    from frameproof.pipeline import cached

    try:
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0)))
    except OSError:
        pytest.skip(f"{path.parent}'s file system has no O_DIRECT")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if cached(fd, 0):
            pytest.skip("the kernel kept the file's pages")
    finally:
        os.close(fd)

"""Time from delivery to approval of small Cycles frames behind a backlog of slow checks.

    .venv/bin/python bench/verification_queue_bench.py [--slow-frames 2] [--small-frames 8]

A real farm on this machine (coordinator, built-in verifier at one render thread, one node
at two): creator A submits a few Cycles frames of the sample scene saved with adaptive
sampling off and 2048 samples (slow to verify: the verifier re-renders three tiles of each at
one thread), creator B then submits small 4-sample frames of the sample scene. For B's
frames, the time from delivery (the node's CompleteTask) to approval (the verdict) is read
from the coordinator's database; with one verifier worker and with two.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from frameproof.client import FarmClient  # noqa: E402
from frameproof.creator import Creator, JobOptions  # noqa: E402
from frameproof.localfarm import LocalFarm  # noqa: E402
from frameproof.v1 import farm_pb2 as pb  # noqa: E402

SCENE = ROOT / "samples" / "spinning_cube.blend"
SLOW_SAMPLES = 2048
TINY = {"resolution_percentage": 20, "max_cost_usd": 1.0}  # 64x36


def slow_scene(folder: Path) -> Path:
    """The sample scene saved with adaptive sampling off: every pixel takes all its samples."""
    shutil.copytree(SCENE.parent / "textures", folder / "textures")
    out = folder / "spinning_cube_slow.blend"
    program = (
        "import bpy\n"
        f"bpy.ops.wm.open_mainfile(filepath={str(SCENE)!r}, use_scripts=False)\n"
        "bpy.context.scene.cycles.use_adaptive_sampling = False\n"
        f"bpy.context.scene.cycles.samples = {SLOW_SAMPLES}\n"
        f"bpy.ops.wm.save_as_mainfile(filepath={str(out)!r}, relative_remap=False)\n")
    subprocess.run([sys.executable, "-c", program], check=True, capture_output=True,
                   timeout=300)
    return out


def submit_job(client: FarmClient, scene: Path, frames: str, samples: int) -> str:
    options = JobOptions(frames=frames, samples=samples, **TINY)
    return Creator(client).submit_scene(scene, options)[0].job.job_id


def wait_done(client: FarmClient, job_id: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.jobs.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30)
        if job.state == pb.JOB_STATE_DONE:
            return
        if job.state in (pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED):
            raise RuntimeError(f"job {job_id} ended {job.state}")
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} not done after {timeout}s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(workers: int, slow_frames: int, small_frames: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, LocalFarm(Path(tmp) / "farm") as farm:
        farm.start_coordinator(extra_args=("--verifier-threads", "1",
                                           "--verifier-workers", str(workers)))
        farm.start_node("n1", threads=2)
        slow_creator = farm.client()
        small_creator = farm.client(Path(tmp) / "b-keypair.json")
        slow = submit_job(slow_creator, slow_scene(Path(tmp)), f"1-{slow_frames}",
                          SLOW_SAMPLES)
        small = submit_job(small_creator, SCENE, f"1-{small_frames}", 4)
        wait_done(small_creator, small)
        wait_done(slow_creator, slow)
        db = sqlite3.connect(farm.data_dir / "farm.db")
        rows = db.execute(
            "SELECT f.created_at, v.finished_at FROM frame_result f JOIN verification v "
            "ON v.job_id = f.job_id AND v.frame = f.frame AND v.state = 'done' "
            "WHERE f.job_id = ?", (small,)).fetchall()
        checks = [json.loads(d).get("render_seconds", 0.0) for (d,) in db.execute(
            "SELECT details_json FROM verification WHERE job_id = ? AND state = 'done'",
            (slow,))]
        db.close()
    waits = [finished - delivered for delivered, finished in rows]
    return {"p50": statistics.median(waits), "p99": percentile(waits, 0.99),
            "max": max(waits), "slow_check": statistics.median(checks), "n": len(waits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slow-frames", type=int, default=2)
    parser.add_argument("--small-frames", type=int, default=8)
    args = parser.parse_args()
    rows = ["| verifier workers | small frames | delivery → approval p50 | p99 | "
            "slow check (median) |", "|---|---|---|---|---|"]
    for workers in (1, 2):
        result = run(workers, args.slow_frames, args.small_frames)
        rows.append(f"| {workers} | {result['n']:.0f} | {result['p50']:.1f} s | "
                    f"{result['p99']:.1f} s | {result['slow_check']:.1f} s |")
        print(rows[-1], flush=True)
    body = (
        f"Creator A submits {args.slow_frames} frames of `samples/spinning_cube.blend` "
        f"saved with adaptive sampling off, at 64x36 and {SLOW_SAMPLES} samples (slow to "
        "verify: three tile re-renders each, the built-in verifier at one render thread), "
        f"creator B then {args.small_frames} frames of the plain sample at 64x36, 4 samples; "
        "one node at two threads. Time from B's delivery (CompleteTask) to approval (the "
        "verdict), from the coordinator's database. Fair order serves B's checks between "
        "A's instead of after all of them; a second worker takes them while the first is "
        "busy with a slow check:\n\n" + "\n".join(rows) + "\n\nWith 8 frames p99 is the "
        "slowest frame. A small frame waits at most for the slow check in progress, not for "
        "the backlog; checks of a cancelled job are dropped and the verifier stops the one "
        "it runs (tests/test_verification_backlog.py).")
    write_section("verification queue", ".venv/bin/python bench/verification_queue_bench.py",
                  body)


if __name__ == "__main__":
    main()

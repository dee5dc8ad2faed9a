"""Time from delivery to approval of small Cycles frames behind a backlog of slow checks.

    .venv/bin/python bench/verification_queue_bench.py [--slow-frames 2] [--small-frames 8]
    .venv/bin/python bench/verification_queue_bench.py --backlog eevee

A real farm on this machine (coordinator, built-in verifier at one render thread, one node
at two): creator A submits a few slow-to-verify frames, creator B then submits small
4-sample Cycles frames of the sample scene. For B's frames, the time from delivery (the
node's CompleteTask) to approval (the verdict) is read from the coordinator's database; with
one verifier worker and with two. A's frames are, with `--backlog cycles`, the sample saved
with adaptive sampling off and 2048 samples (the verifier re-renders three tiles of each at
one thread); with `--backlog eevee`, the sample saved as an EEVEE scene (issue 15's case: on a
CPU verifier EEVEE renders through software EGL, and its frames are checked by an exact
whole-frame re-render, so each check takes about as long as the frame did).
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


BACKLOGS = {
    # name: (what the saved scene changes, samples the job asks for: 0 = the scene's own)
    "cycles": ("bpy.context.scene.cycles.use_adaptive_sampling = False\n"
               f"bpy.context.scene.cycles.samples = {SLOW_SAMPLES}\n", SLOW_SAMPLES),
    "eevee": ("bpy.context.scene.render.engine = 'BLENDER_EEVEE'\n", 0),
}


def slow_scene(folder: Path, backlog: str) -> Path:
    """The sample scene saved slow to verify: Cycles with adaptive sampling off (every pixel
    takes all its samples), or as an EEVEE scene."""
    shutil.copytree(SCENE.parent / "textures", folder / "textures")
    out = folder / f"spinning_cube_{backlog}.blend"
    program = (
        "import bpy\n"
        f"bpy.ops.wm.open_mainfile(filepath={str(SCENE)!r}, use_scripts=False)\n"
        + BACKLOGS[backlog][0] +
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


def run(workers: int, slow_frames: int, small_frames: int,
        backlog: str = "cycles") -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, LocalFarm(Path(tmp) / "farm") as farm:
        farm.start_coordinator(extra_args=("--verifier-threads", "1",
                                           "--verifier-workers", str(workers)))
        farm.start_node("n1", threads=2)
        slow_creator = farm.client()
        small_creator = farm.client(Path(tmp) / "b-keypair.json")
        slow = submit_job(slow_creator, slow_scene(Path(tmp), backlog), f"1-{slow_frames}",
                          BACKLOGS[backlog][1])
        small = submit_job(small_creator, SCENE, f"1-{small_frames}", 4)
        wait_done(small_creator, small, timeout=3600)
        wait_done(slow_creator, slow, timeout=3600)
        db = sqlite3.connect(farm.data_dir / "farm.db")
        rows = db.execute(
            "SELECT f.created_at, v.finished_at FROM frame_result f JOIN verification v "
            "ON v.job_id = f.job_id AND v.frame = f.frame AND v.state = 'done' "
            "WHERE f.job_id = ?", (small,)).fetchall()
        checks = [json.loads(d).get("render_seconds", 0.0) for (d,) in db.execute(
            "SELECT details_json FROM verification WHERE job_id = ? AND state = 'done'",
            (slow,))]
        # For each small frame, how many slow checks ended while it waited: 1 means it
        # waited only for the check already running, never for the backlog behind it.
        passed_by = [db.execute(
            "SELECT COUNT(*) FROM verification WHERE job_id = ? AND state = 'done' "
            "AND finished_at > ? AND finished_at < ?", (slow, delivered, finished)).fetchone()[0]
            for delivered, finished in rows]
        slow_rows = db.execute(
            "SELECT f.created_at, v.finished_at, v.mode FROM frame_result f "
            "JOIN verification v ON v.job_id = f.job_id AND v.frame = f.frame "
            "AND v.state = 'done' WHERE f.job_id = ?", (slow,)).fetchall()
        db.close()
    waits = [finished - delivered for delivered, finished in rows]
    slow_waits = [finished - delivered for delivered, finished, _ in slow_rows]
    modes = sorted({mode or "?" for _, _, mode in slow_rows})
    return {"p50": statistics.median(waits), "p99": percentile(waits, 0.99),
            "max": max(waits), "slow_check": statistics.median(checks), "n": len(waits),
            "slow_wait": statistics.median(slow_waits), "slow_modes": ", ".join(modes),
            "passed_by": max(passed_by)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backlog", choices=sorted(BACKLOGS), default="cycles",
                        help="what makes creator A's checks slow (default cycles)")
    parser.add_argument("--slow-frames", type=int, default=2)
    parser.add_argument("--small-frames", type=int, default=8)
    args = parser.parse_args()
    rows = ["| verifier workers | small frames | delivery → approval p50 | p99 | "
            "slow check (median) | slow checks ended while a small frame waited (most) |",
            "|---|---|---|---|---|---|"]
    slow_lines = []
    for workers in (1, 2):
        result = run(workers, args.slow_frames, args.small_frames, args.backlog)
        rows.append(f"| {workers} | {result['n']:.0f} | {result['p50']:.1f} s | "
                    f"{result['p99']:.1f} s | {result['slow_check']:.1f} s | "
                    f"{result['passed_by']} |")
        slow_lines.append(f"{workers} worker(s): A's frames approved {result['slow_wait']:.0f} s "
                          f"after delivery (median; checked {result['slow_modes']})")
        print(rows[-1], slow_lines[-1], flush=True)
    if args.backlog == "eevee":
        write_section(
            "verification queue, EEVEE backlog",
            f".venv/bin/python bench/verification_queue_bench.py --backlog eevee "
            f"--slow-frames {args.slow_frames} --small-frames {args.small_frames}",
            f"Issue 15's case. Creator A submits {args.slow_frames} frames of "
            "`samples/spinning_cube.blend` saved as an EEVEE scene, at 64x36 (on this "
            "GPU-less machine EEVEE renders through software EGL; its frames are verified by "
            "an exact whole-frame re-render at one render thread), creator B then "
            f"{args.small_frames} frames of the plain Cycles sample at 64x36, 4 samples; one "
            "node at two threads. Time from B's delivery (CompleteTask) to approval (the "
            "verdict), from the coordinator's database:\n\n" + "\n".join(rows) + "\n\n"
            + "; ".join(slow_lines) + ". With one worker, B's frames delivered while an "
            "EEVEE check runs wait for that check to end: at most one slow check ended during "
            "any small frame's wait (last column), so p99 is about one check's whole duration "
            "(more than its render time alone), never the backlog; fair order serves B's "
            "checks before A's next one. A second worker takes B's checks while the first is "
            "busy. The machine was shared with other work during the run, so compare the rows "
            "with each other.")
        return
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
        "it runs (tests/e2e/test_verification_backlog.py).")
    write_section("verification queue", ".venv/bin/python bench/verification_queue_bench.py",
                  body)


if __name__ == "__main__":
    main()

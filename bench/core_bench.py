"""Core farm numbers: per-frame overhead of the warm Blender worker, blob transfer speed,
scheduling throughput over signed gRPC, and the speed-up of a second node.

    .venv/bin/python bench/core_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import median, write_section  # noqa: E402
from frameproof.blender.worker import BlenderWorker, RenderSettings  # noqa: E402
from frameproof.localfarm import LocalFarm  # noqa: E402
from frameproof.transfer import download_blob, upload_files  # noqa: E402
from frameproof.v1 import farm_pb2 as pb  # noqa: E402

SCENE = ROOT / "samples" / "spinning_cube.blend"
TINY = RenderSettings(samples=4, resolution_percentage=20)
COLD_SCRIPT = f"""
import sys, bpy
bpy.ops.wm.open_mainfile(filepath={str(SCENE)!r}, load_ui=False, use_scripts=False)
s = bpy.context.scene
s.cycles.samples = 4; s.render.resolution_percentage = 20
s.render.image_settings.media_type = 'IMAGE'; s.render.image_settings.file_format = 'PNG'
s.frame_set(int(sys.argv[1])); s.render.filepath = sys.argv[2]
bpy.ops.render.render(write_still=True)
"""


def frame_overhead(runs: int, work: Path) -> str:
    """A fresh Blender process per frame against the node's warm worker, same tiny frame."""
    cold, warm = [], []
    with BlenderWorker(threads=1, log_path=work / "bench-blender.log") as worker:
        worker.render_frame(SCENE, 1, work / "warmup.png", TINY)
        for run in range(runs):
            frame = 1 + run % 24
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", COLD_SCRIPT, str(frame), str(work / "c.png")],
                check=True,
                capture_output=True,
            )
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            worker.render_frame(SCENE, frame, work / "w.png", TINY)
            warm.append(time.perf_counter() - start)
    return (
        "Per-frame wall time of a 64x36, 4-sample Cycles frame of `samples/spinning_cube.blend`"
        f" ({runs} runs, interleaved):\n\n"
        "| how | median | \n|---|---|\n"
        f"| new Python + bpy process per frame | {median(cold) * 1000:.0f} ms |\n"
        f"| the node's warm Blender worker | {median(warm) * 1000:.0f} ms |\n\n"
        f"The warm worker's per-frame overhead is {median(cold) / median(warm):.0f}x smaller.\n"
    )


def transfer_speed(farm: LocalFarm, size_mb: int, runs: int, work: Path) -> str:
    ups, downs = [], []
    with farm.client() as client:
        for run in range(runs):
            blob = work / f"blob-{run}.bin"
            blob.write_bytes(os.urandom(size_mb * 2**20))
            import hashlib

            sha = hashlib.sha256(blob.read_bytes()).hexdigest()
            start = time.perf_counter()
            upload_files(client.blobs, {sha: blob})
            ups.append(time.perf_counter() - start)
            # Reading back needs a right to the blob: the admin socket has it.
            start = time.perf_counter()
            admin = _admin_client(farm)
            download_blob(admin.blobs, sha, work / f"down-{run}.bin")
            downs.append(time.perf_counter() - start)
            admin.close()
    return (
        f"Blob transfer over loopback gRPC, {size_mb} MiB random blob, {runs} runs "
        "(sha256 verified, fsynced into the store):\n\n| direction | median | throughput |\n"
        "|---|---|---|\n"
        f"| upload | {median(ups):.2f} s | {size_mb / median(ups):.0f} MiB/s |\n"
        f"| download | {median(downs):.2f} s | {size_mb / median(downs):.0f} MiB/s |\n"
    )


def _admin_client(farm: LocalFarm):  # type: ignore[no-untyped-def]
    from solders.keypair import Keypair

    from frameproof.client import FarmClient

    return FarmClient(f"unix:{farm.data_dir / 'admin.sock'}", Keypair())


def scheduling_throughput(farm: LocalFarm, frames: int, nodes: int) -> str:
    """Simulated nodes lease and complete tasks as fast as the coordinator lets them."""
    from solders.keypair import Keypair

    from frameproof.client import FarmClient
    from frameproof.receipts import sign_receipt
    from frameproof.transfer import upload_bytes

    with farm.client() as creator:
        from frameproof.creator import Creator, JobOptions

        job_ids = []
        remaining = frames
        while remaining > 0:
            count = min(24, remaining)
            options = JobOptions(frames=f"1-{count}")
            job_ids.append(Creator(creator).submit_scene(SCENE, options)[0].job.job_id)
            remaining -= count
    done = []
    lock = threading.Lock()

    def node_loop() -> None:
        keypair = Keypair()
        with FarmClient(farm.address, keypair) as client:
            node_id = str(keypair.pubkey())
            client.nodes.RegisterNode(pb.RegisterNodeRequest(node_id=node_id), timeout=10)
            image = os.urandom(64)
            sha = upload_bytes(client.blobs, image)
            while True:
                lease = client.nodes.LeaseTask(
                    pb.LeaseTaskRequest(node_id=node_id), timeout=3
                ).lease
                if not lease.lease_id:
                    return
                outputs = [
                    pb.FrameOutput(
                        frame=f, image=pb.BlobRef(sha256=sha, size=64), render_seconds=0.01,
                        receipt_signature=sign_receipt(keypair, lease.job_id, f, sha,
                                                       lease.settings),
                    )
                    for f in lease.frames
                ]
                client.nodes.CompleteTask(
                    pb.CompleteTaskRequest(
                        node_id=node_id, lease_id=lease.lease_id, outputs=outputs
                    ),
                    timeout=10,
                )
                with lock:
                    done.append(len(lease.frames))

    start = time.perf_counter()
    threads = [threading.Thread(target=node_loop) for _ in range(nodes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    total = sum(done)
    return (
        f"Scheduling: {nodes} simulated nodes (threads, signed calls) lease and complete "
        f"{total} one-frame tasks with no rendering: {total / elapsed:.0f} tasks/s "
        f"({elapsed:.1f} s; each task = LeaseTask + CompleteTask, SQLite WAL).\n"
    )


def node_speedup(work: Path, frames: str) -> str:
    times = {}
    for count in (1, 2):
        with LocalFarm(work / f"speedup-{count}") as farm:
            farm.start_coordinator()
            for index in range(count):
                farm.start_node(f"node-{index}")
            with farm.client() as client:
                from frameproof.cli.watch import watch_job
                from frameproof.creator import Creator, JobOptions

                start = time.perf_counter()
                job = Creator(client).submit_scene(SCENE, JobOptions(frames=frames))[0].job
                watch_job(client, job.job_id, quiet=True)
                times[count] = time.perf_counter() - start
    return (
        f"End to end, frames {frames} of the sample at its own settings (320x180, 16 samples), "
        "nodes with 1 render thread each, 2-core machine:\n\n| nodes | wall time |\n|---|---|\n"
        f"| 1 | {times[1]:.1f} s |\n| 2 | {times[2]:.1f} s |\n\n"
        f"Speed-up with a second node: {times[1] / times[2]:.2f}x.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    args = parser.parse_args()
    runs = 3 if args.quick else 9
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = [frame_overhead(runs, work)]
        with LocalFarm(work / "farm") as farm:
            # No verifier: the simulated nodes deliver random bytes, which it would reject.
            farm.start_coordinator(extra_args=("--no-verifier",))
            parts.append(transfer_speed(farm, 20 if args.quick else 100, 3, work))
            parts.append(scheduling_throughput(farm, 48 if args.quick else 480, 8))
        parts.append(node_speedup(work, "1-4" if args.quick else "1-12"))
    body = "\n".join(parts)
    print(body)
    command = ".venv/bin/python bench/core_bench.py" + (" --quick" if args.quick else "")
    write_section("core farm", command, body)


if __name__ == "__main__":
    main()

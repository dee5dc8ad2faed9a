"""Load run: hundreds of simulated render nodes speaking the real, signed protocol.

One real coordinator process (`--no-verifier`: the simulated nodes upload a few random bytes,
not images, so a Proof-of-Render check could only reject them; frames therefore stay
`verifying` after delivery, which is what the checks below expect). In this process, asyncio
`grpc.aio` clients play ``--nodes`` nodes, each with its own keypair and channel: register,
lease, heartbeat while "rendering" (1-5 s per frame), upload a tiny unique blob, complete.
Creators keep enough frames queued that nodes never run dry. Afterwards every frame of every
job is checked: exactly one accepted result per rendered frame, nothing lost. Memory: the
coordinator's RSS is sampled every 10 s from /proc and judged by its trend over the second
half of the run (the first half includes warm-up: connections, the replay cache filling its
window); the coordinator also logs what malloc, SQLite and the Python heap hold
(coordinator/diagnostics.py), which tells a leak from allocator noise.

    .venv/bin/python -m bench.load_bench --minutes 10 --nodes 500
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from solders.keypair import Keypair

from bench.report import write_section
from coordinator import diagnostics
from frameproof.auth import sign_call
from frameproof.receipts import sign_receipt
from frameproof.v1 import farm_pb2 as pb
from frameproof.v1 import farm_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SCENE = ROOT / "samples" / "spinning_cube.blend"
SCENE_FRAMES = (1, 24)  # the sample scene's range
CALL_TIMEOUT = 60.0
CREATORS = 4  # creator keys submitting jobs
RSS_INTERVAL = 10.0
MEMORY_LOG_SECONDS = 30.0  # the coordinator's own memory log (a gc pass each time)
STABLE_MIB_PER_MINUTE = 1.0  # RSS trend over the second half below which memory is "stable"


@dataclass
class Stats:
    """What the simulated farm saw: latencies per method, errors, accepted frames."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    accepted: dict[tuple[str, int], list[str]] = field(
        default_factory=lambda: collections.defaultdict(list))
    withdrawn: int = 0
    leases: int = 0
    # LeaseTask answers without a lease, by kind (see empty_answer)
    empty: collections.Counter[str] = field(default_factory=collections.Counter)
    submitted_frames: int = 0
    jobs: dict[str, Keypair] = field(default_factory=dict)

    @property
    def delivered(self) -> int:
        return len(self.accepted)


class Signed:
    """Signed unary/stream calls on one grpc.aio channel, as the real client makes them."""

    def __init__(self, channel: grpc.aio.Channel, keypair: Keypair, stats: Stats) -> None:
        self.keypair = keypair
        self.stats = stats
        self.jobs = farm_pb2_grpc.JobServiceStub(channel)
        self.nodes = farm_pb2_grpc.NodeServiceStub(channel)
        self.blobs = farm_pb2_grpc.BlobStoreStub(channel)

    async def unary(self, stub: Any, name: str, request: Any) -> Any:
        method = f"/frameproof.v1.{stub.__class__.__name__.removesuffix('Stub')}/{name}"
        metadata = sign_call(self.keypair, method, request.SerializeToString())
        start = time.perf_counter()
        try:
            return await getattr(stub, name)(request, metadata=metadata, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            self.stats.errors[f"{name}: {error.code().name}"] += 1
            raise
        finally:
            self.stats.latencies[name].append(time.perf_counter() - start)

    async def upload(self, data: bytes) -> pb.BlobRef:
        ref = pb.BlobRef(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        missing = await self.unary(self.blobs, "FindMissingBlobs",
                                   pb.FindMissingBlobsRequest(blobs=[ref]))
        if missing.missing:
            metadata = sign_call(self.keypair, "/frameproof.v1.BlobStore/UploadBlob", None)
            chunk = pb.UploadChunk(blob=ref, offset=0, data=data, crc32=zlib.crc32(data))
            start = time.perf_counter()
            try:
                await self.blobs.UploadBlob(iter([chunk]), metadata=metadata,
                                            timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                self.stats.errors[f"UploadBlob: {error.code().name}"] += 1
                raise
            finally:
                self.stats.latencies["UploadBlob"].append(time.perf_counter() - start)
        return ref


async def run_node(address: str, stats: Stats, stop: asyncio.Event, index: int) -> None:
    """One simulated node: register, then lease/heartbeat/upload/complete until stopped."""
    keypair = Keypair()
    node_id = str(keypair.pubkey())
    rng = random.Random(index)
    await asyncio.sleep(rng.uniform(0, 10))  # nodes join over the first seconds
    async with grpc.aio.insecure_channel(address) as channel:
        calls = Signed(channel, keypair, stats)
        registered = None
        while registered is None and not stop.is_set():
            try:
                registered = await calls.unary(calls.nodes, "RegisterNode", pb.RegisterNodeRequest(
                    node_id=node_id, name=f"sim-{index}",
                    capabilities=pb.NodeCapabilities(threads=1, devices=["CPU"])))
            except grpc.aio.AioRpcError:
                await asyncio.sleep(1)
        heartbeat = max(1, registered.heartbeat_seconds) if registered else 5
        while not stop.is_set():
            try:
                response = await calls.unary(calls.nodes, "LeaseTask",
                                             pb.LeaseTaskRequest(node_id=node_id))
            except grpc.aio.AioRpcError:
                await asyncio.sleep(1)
                continue
            if not response.HasField("lease"):
                await asyncio.sleep(response.retry_after_ms / 1000 * rng.uniform(0.8, 1.2))
                continue
            stats.leases += 1
            try:
                await _render_lease(calls, node_id, response.lease, heartbeat, rng, stats)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(1)


async def _render_lease(calls: Signed, node_id: str, lease: pb.Lease, heartbeat: float,
                        rng: random.Random, stats: Stats,
                        seconds: tuple[float, float] = (1.0, 5.0)) -> None:
    """"Render" the lease's frames, upload and complete (see the two steps below)."""
    outputs = await _render_and_upload(calls, node_id, lease, heartbeat, rng, stats, seconds)
    if outputs is not None:
        await _complete(calls, node_id, lease, outputs, stats)


async def _render_and_upload(calls: Signed, node_id: str, lease: pb.Lease, heartbeat: float,
                             rng: random.Random, stats: Stats,
                             seconds: tuple[float, float] = (1.0, 5.0)
                             ) -> list[pb.FrameOutput] | None:
    """"Render" each frame for a random time in `seconds` (heartbeating), upload the images;
    the outputs to complete with, or None if the coordinator withdrew the lease."""
    render_end = time.monotonic() + sum(rng.uniform(*seconds) for _ in lease.frames)
    while (left := render_end - time.monotonic()) > 0:
        await asyncio.sleep(min(left, heartbeat))
        if time.monotonic() < render_end:
            beat = await calls.unary(calls.nodes, "Heartbeat", pb.HeartbeatRequest(
                node_id=node_id, lease_id=lease.lease_id))
            if not beat.keep_going:
                stats.withdrawn += 1
                return None
    outputs = []
    for frame in lease.frames:
        image = f"{lease.job_id}:{frame}:{lease.lease_id}:{node_id}".encode() * 4
        ref = await calls.upload(image)
        outputs.append(pb.FrameOutput(
            frame=frame, image=ref, render_seconds=1.0, blender_version="sim", device="CPU",
            receipt_signature=sign_receipt(calls.keypair, lease.job_id, frame, ref.sha256,
                                           lease.settings)))
    return outputs


async def _complete(calls: Signed, node_id: str, lease: pb.Lease,
                    outputs: list[pb.FrameOutput], stats: Stats) -> None:
    """CompleteTask; idempotent, so a node whose call failed sends it again (elsewhere)."""
    try:
        await calls.unary(calls.nodes, "CompleteTask", pb.CompleteTaskRequest(
            node_id=node_id, lease_id=lease.lease_id, outputs=outputs))
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
            stats.withdrawn += 1
            return
        raise
    for frame in lease.frames:
        stats.accepted[(lease.job_id, frame)].append(node_id)


async def submit_paid(calls: Signed, request: pb.SubmitJobRequest,
                      estimate: pb.Estimate | None = None) -> pb.Job:
    """Escrow the job's maximum cost (PrepareDeposit, signed by the creator), then submit."""
    from coordinator.chain import signed_deposit

    if estimate is None:
        estimate = await calls.unary(calls.jobs, "EstimateJob", pb.EstimateRequest(
            scene_id=request.scene_id, frames=request.frames, settings=request.settings,
            tier=request.tier))
    deposit = await calls.unary(calls.jobs, "PrepareDeposit",
                                pb.PrepareDepositRequest(amount_usd=estimate.max_cost_usd))
    request.max_cost_usd = estimate.max_cost_usd
    request.signed_deposit = signed_deposit(deposit.message, calls.keypair)
    return (await calls.unary(calls.jobs, "SubmitJob", request)).job


async def run_creators(address: str, scene_id: str, stats: Stats, stop: asyncio.Event,
                       backlog: int, keypairs: list[Keypair]) -> None:
    """Creators submit paid 24-frame jobs whenever fewer than `backlog` frames wait."""
    creators = len(keypairs)
    channels = [grpc.aio.insecure_channel(address) for _ in range(creators)]
    everyone = [Signed(channel, keypair, stats) for channel, keypair in zip(channels, keypairs,
                                                                           strict=True)]
    spec = f"{SCENE_FRAMES[0]}-{SCENE_FRAMES[1]}"
    estimate = await everyone[0].unary(everyone[0].jobs, "EstimateJob", pb.EstimateRequest(
        scene_id=scene_id, frames=spec))
    try:
        turn = 0
        while not stop.is_set():
            if stats.submitted_frames - stats.delivered >= backlog:
                await asyncio.sleep(0.2)
                continue
            calls = everyone[turn % creators]
            turn += 1
            request = pb.SubmitJobRequest(scene_id=scene_id, frames=spec, name=f"load-{turn}")
            try:
                job = await submit_paid(calls, request, estimate)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION:  # out of tokens
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await calls.unary(calls.jobs, "Airdrop",
                                          pb.AirdropRequest(tokens=estimate.tokens * 1000))
                else:
                    await asyncio.sleep(1)
                continue
            stats.jobs[job.job_id] = calls.keypair
            stats.submitted_frames += job.frames.total
    finally:
        for channel in channels:
            await channel.close()


async def sample_rss(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    start = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - start, diagnostics.rss_kib(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_INTERVAL)


def rss_trend(samples: list[tuple[float, int]]) -> float:
    """RSS growth in MiB per minute over the second half of the samples (least squares)."""
    half = samples[len(samples) // 2:]
    if len(half) < 3:
        return 0.0
    fit = statistics.linear_regression([t / 60 for t, _ in half], [v / 1024 for _, v in half])
    return fit.slope


def start_coordinator(data_dir: Path, lease_seconds: float,
                      memory_log: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = open(data_dir.parent / "coordinator.log", "ab")  # noqa: SIM115
    env = {**os.environ}
    env.setdefault(diagnostics.LOG_ENV, str(memory_log))  # a caller's own folder wins
    env.setdefault(diagnostics.INTERVAL_ENV, str(MEMORY_LOG_SECONDS))
    process = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir), "--lease-seconds", str(lease_seconds),
         "--heartbeat-seconds", str(lease_seconds / 6), "--no-verifier"],
        stdout=subprocess.PIPE, stderr=log, cwd=ROOT, start_new_session=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("listening on "):
        raise RuntimeError(f"coordinator did not start; see {log.name}")
    return process, line.split()[-1]


def upload_scene(address: str, keypairs: list[Keypair]) -> str:
    """Pack the sample scene; each creator uploads it (a job needs its scene's files to be
    the creator's: the first stores them, the others prove they hold them). Inspected once
    by real Blender."""
    from frameproof.client import FarmClient
    from frameproof.packing import pack_scene
    from frameproof.transfer import upload_files

    with tempfile.TemporaryDirectory() as work:
        packed = pack_scene(SAMPLE_SCENE, Path(work))
        manifest = Path(work) / "scene-manifest.json"
        manifest.write_bytes(packed.manifest.to_bytes())
        for keypair in keypairs:
            with FarmClient(address, keypair) as client:
                upload_files(client.blobs, {**packed.files, packed.manifest.scene_id: manifest})
                client.jobs.InspectScene(pb.InspectSceneRequest(
                    scene_id=packed.manifest.scene_id), timeout=300)
        return packed.manifest.scene_id


async def verify(address: str, stats: Stats) -> dict[str, int]:
    """Every frame of every job: one result at most, matching the one accepted completion."""
    counts = collections.Counter[str]()
    problems: list[str] = []
    async with grpc.aio.insecure_channel(address) as channel:
        for job_id, keypair in stats.jobs.items():
            calls = Signed(channel, keypair, stats)
            frames = (await calls.unary(calls.jobs, "ListFrames",
                                        pb.ListFramesRequest(job_id=job_id))).frames
            numbers = [frame.frame for frame in frames]
            if sorted(numbers) != list(range(SCENE_FRAMES[0], SCENE_FRAMES[1] + 1)):
                problems.append(f"job {job_id}: frames {numbers}")
            for frame in frames:
                counts[pb.FrameState.Name(frame.state)] += 1
                accepted = stats.accepted.get((job_id, frame.frame), [])
                if len(accepted) > 1:
                    problems.append(f"job {job_id} frame {frame.frame} accepted twice")
                has_result = bool(frame.image.sha256)
                if has_result != bool(accepted):
                    problems.append(f"job {job_id} frame {frame.frame}: result {has_result} "
                                    f"but {len(accepted)} accepted completion(s)")
                elif accepted and frame.node_id != accepted[0]:
                    problems.append(f"job {job_id} frame {frame.frame}: credited to the wrong "
                                    "node")
    counts["problems"] = len(problems)
    for problem in problems[:20]:
        print("PROBLEM:", problem, flush=True)
    return dict(counts)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def main_async(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="frameproof-load-"))
    coordinator, address = start_coordinator(work / "coordinator", args.lease_seconds,
                                             work / "memory")
    print(f"coordinator pid {coordinator.pid} on {address}; data in {work}", flush=True)
    stats = Stats()
    rss: list[tuple[float, int]] = []
    try:
        creator_keys = [Keypair() for _ in range(CREATORS)]
        scene_id = await asyncio.to_thread(upload_scene, address, creator_keys)
        stop = asyncio.Event()
        monitor_stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(coordinator.pid, rss, monitor_stop))
        creators = asyncio.create_task(run_creators(address, scene_id, stats, stop,
                                                    backlog=args.nodes * 2,
                                                    keypairs=creator_keys))
        nodes = [asyncio.create_task(run_node(address, stats, stop, i))
                 for i in range(args.nodes)]
        started = time.monotonic()
        while time.monotonic() - started < args.minutes * 60:
            await asyncio.sleep(30)
            elapsed = time.monotonic() - started
            print(f"{elapsed:5.0f}s: {stats.delivered} frames delivered "
                  f"({stats.delivered / elapsed:.1f}/s), {len(stats.jobs)} jobs, "
                  f"RSS {rss[-1][1] / 1024:.0f} MiB, errors {dict(stats.errors)}", flush=True)
        stop.set()
        await creators
        # Nodes finish the frame in hand (at most a few seconds), then stop.
        await asyncio.wait_for(asyncio.gather(*nodes, return_exceptions=True), 120)
        elapsed = time.monotonic() - started
        monitor_stop.set()
        await sampler
        rpc_latencies = {name: list(values) for name, values in stats.latencies.items()}
        counts = await verify(address, stats)
        log_text = (work / "coordinator.log").read_text(errors="replace")
    finally:
        coordinator.terminate()
        coordinator.wait(30)
    tracebacks = log_text.count("Traceback")
    trend = rss_trend(rss)
    stable = "stable" if trend < STABLE_MIB_PER_MINUTE else "GROWING"
    rss_row = (f"{rss[0][1] / 1024:.0f} MiB / {rss[-1][1] / 1024:.0f} MiB / "
               f"{trend:+.1f} MiB per minute: {stable}")
    heap = diagnostics.read_memory_log(
        Path(os.environ.get(diagnostics.LOG_ENV, work / "memory")) / "memory.log")
    heap_row = (f"malloc in use {heap[0].malloc_used:.0f} → {heap[-1].malloc_used:.0f} MiB, "
                f"SQLite {heap[0].sqlite:.1f} → {heap[-1].sqlite:.1f} MiB, Python objects "
                f"{heap[0].objects} → {heap[-1].objects} ({heap[0].elapsed:.0f} s → "
                f"{heap[-1].elapsed:.0f} s)" if heap else "no memory log")
    total_rpcs = sum(len(v) for v in rpc_latencies.values())
    states = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "problems")
    rate = f"{stats.delivered / elapsed:.1f}/s"
    rss_series = " ".join(f"{v / 1024:.0f}" for _, v in rss)
    rows = "\n".join(
        f"| {name} | {len(values)} | {percentile(values, 0.5) * 1000:.1f} | "
        f"{percentile(values, 0.99) * 1000:.1f} | {max(values) * 1000:.0f} |"
        for name, values in sorted(rpc_latencies.items()))
    body = f"""{args.nodes} simulated nodes (asyncio `grpc.aio`, one keypair and channel each,
every call signed) against one real coordinator process (SQLite, `--no-verifier`,
lease {args.lease_seconds:g} s) for {elapsed / 60:.1f} min; 4 creators keep
{args.nodes * 2} frames queued (24-frame jobs of the sample scene); a "render" takes 1-5 s.
The load client and the coordinator share the machine's cores.

| figure | value |
|---|---|
| jobs submitted | {len(stats.jobs)} ({stats.submitted_frames} frames) |
| frames delivered (accepted `CompleteTask`) | {stats.delivered} ({rate}) |
| leases granted | {stats.leases} |
| leases withdrawn (expired before delivery) | {stats.withdrawn} |
| frames by state at the end | {states} |
| lost or duplicated frames | {counts.get('problems', 0)} |
| RPCs | {total_rpcs} ({total_rpcs / elapsed:.0f}/s) |
| RPC errors | {dict(stats.errors) or 'none'} |
| coordinator RSS, start / end / trend over the second half | {rss_row} |
| coordinator heap, first / last memory-log sample | {heap_row} |
| coordinator RSS samples (MiB, every {RSS_INTERVAL:.0f} s) | {rss_series} |
| tracebacks in the coordinator log | {tracebacks} |

| RPC | calls | p50 ms | p99 ms | max ms |
|---|---|---|---|---|
{rows}
"""
    print(body, flush=True)
    if args.write:
        write_section("load", f".venv/bin/python -m bench.load_bench --minutes {args.minutes:g} "
                              f"--nodes {args.nodes}", body + args.notes)
    return 0 if counts.get("problems", 0) == 0 and tracebacks == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--lease-seconds", type=float, default=30.0)
    parser.add_argument("--no-write", dest="write", action="store_false",
                        help="print only; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--notes", default="", help="text appended to the report section")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())

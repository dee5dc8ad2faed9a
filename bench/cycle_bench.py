"""Frame cycles against one coordinator: throughput, coordinator CPU per cycle, RPC latency.

A cycle is what a render node does for one frame, every call signed: LeaseTask, Heartbeat,
FindMissingBlobs, UploadBlob (a few unique bytes), CompleteTask. The coordinator runs in its
own process pinned to CPU 0 (`taskset -c 0`, `--no-verifier`); the load generator runs in
separate processes pinned to CPU 1, asyncio `grpc.aio` clients with one keypair and channel
per simulated node. Coordinator CPU is read from /proc (user + system time of the whole
process) over the measured window and divided by the cycles completed in it: that figure is
stable on a shared machine where wall-clock rates are not.

The farm is seeded straight into the database before the coordinator starts (the same
tables and store functions the coordinator uses): scene, jobs of one-frame tasks from 4
creators, and every simulated node registered, bonded and with a verified record (trusted),
so probation limits do not bound the run. Jobs carry no escrow rows (leases are not gated on
a budget; the budget query still runs).

`--batch`: a node renews what it holds with one HeartbeatLeases, then sends all their images
and results with one DeliverTasks, which also leases its next tasks (what `render-node run`
does, with one lease as with several). A coordinator without DeliverTasks
(UNIMPLEMENTED) gets one FindMissingBlobs, one BatchUploadBlobs and one CompleteTasks per batch
and a LeaseTask for the next; one without those gets one call per lease (per image) as
without `--batch`. DeliverTasks' receipts are signed as one tree where the coordinator's
proto knows receipt trees (frameproof.receipts), as render-node signs them. Each delivered
lease is still one cycle; "calls/cycle" says how many RPCs a cycle cost.

`--tree DIR` runs the coordinator of another checkout (e.g. the commit before the work,
extracted with `git archive`), the load generator staying this one, so both sides are
measured by the same client in one run:

    PYTHONPATH=$PWD .venv/bin/python -m bench.cycle_bench --tree /tmp/base --tree . \\
        --nodes 64 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CREATORS = 4
CALL_TIMEOUT = 60.0
COORDINATOR_CPU = "0"
CLIENT_CPU = "1"
IDLE_SECONDS = 5.0
PROFILE_WRAPPER = """
import cProfile, pstats, signal, sys, threading, time
sys.argv = ['coordinator'] + sys.argv[2:]
# CPU time per thread (waits excluded). The event loop is profiled between SIGUSR1 and
# SIGUSR2 (the measured window); worker threads (the storage thread, to_thread's pool) from
# their start, which is at the first call they serve.
main = cProfile.Profile(time.thread_time)
workers = []
thread_run = threading.Thread.run
def profiled_run(self):
    profile = cProfile.Profile(time.thread_time)
    workers.append(profile)
    profile.enable()
    try:
        thread_run(self)
    finally:
        profile.disable()
threading.Thread.run = profiled_run
signal.signal(signal.SIGUSR1, lambda *_: main.enable())
signal.signal(signal.SIGUSR2, lambda *_: main.disable())
try:
    from coordinator.cli import main as serve
    code = serve(sys.argv[1:])
finally:
    main.disable()
    stats = pstats.Stats(main)
    for profile in workers:
        profile.disable()
        stats.add(profile)
    stats.dump_stats(OUT)
"""


def node_keypair(index: int) -> Any:
    from solders.keypair import Keypair

    return Keypair.from_seed(hashlib.sha256(f"cycle-node-{index}".encode()).digest())


def creator_keypair(index: int) -> Any:
    from solders.keypair import Keypair

    return Keypair.from_seed(hashlib.sha256(f"cycle-creator-{index}".encode()).digest())


# ------------------------------------------------------------------ seeding (in the tree)

def seed(db_url: str, registered: int, frames: int, jobs: int) -> None:
    """Scene, jobs and trusted, bonded nodes, written with the tree's own models."""
    from sqlalchemy import insert

    try:
        from coordinator.storage.payment_models import BondRecord
    except ImportError:  # a checkout from before the models moved (d760101)
        from coordinator.payments.models import BondRecord  # type: ignore[no-redef]
    from coordinator.storage.database import open_database
    from coordinator.storage.models import (
        JobRecord,
        NodeRecord,
        NodeStandingRecord,
        SceneRecord,
        TaskRecord,
    )

    engine = open_database(db_url)
    now = time.time()
    with engine.begin() as connection:
        connection.execute(insert(SceneRecord).values(
            scene_id="ab" * 32, main_file="scene.blend", info_json="{}", created_at=now))
        per_job = max(1, frames // jobs)
        for j in range(jobs):
            job_id = f"job{j:06d}"
            connection.execute(insert(JobRecord).values(
                job_id=job_id, scene_id="ab" * 32, creator=str(creator_keypair(j % CREATORS)
                                                               .pubkey()),
                tier=3, frames_spec=f"1-{per_job}", settings_json="{}", created_at=now + j,
                updated_at=now))
            connection.execute(insert(TaskRecord), [
                {"task_id": f"{job_id}-{n}", "job_id": job_id, "first_frame": n,
                 "last_frame": n, "state": "queued", "queued_at": now + j, "updated_at": now}
                for n in range(1, per_job + 1)])
        nodes = [str(node_keypair(i).pubkey()) for i in range(registered)]
        for start in range(0, registered, 1000):
            batch = nodes[start:start + 1000]
            connection.execute(insert(NodeRecord), [
                {"node_id": n, "name": f"sim-{start + i}", "capabilities_json": "{}",
                 "benchmark_score": 1.0, "registered_at": now, "last_seen_at": now}
                for i, n in enumerate(batch)])
            connection.execute(insert(NodeStandingRecord), [
                {"node_id": n, "score": 0.99, "consecutive_verified": 1000, "verified": 1000,
                 "delivered": 1000, "frames_since_failure": 1000} for n in batch])
            connection.execute(insert(BondRecord), [
                {"node_id": n, "held": 10**15, "posted": 10**15, "slashed": 0, "returned": 0,
                 "created_at": now,
                 "updated_at": now} for n in batch])
    engine.dispose()


# ------------------------------------------------------------------ load generator

class Client:
    def __init__(self, address: str, index: int) -> None:
        import grpc

        from frameproof.v1 import farm_pb2_grpc

        self.keypair = node_keypair(index)
        self.node_id = str(self.keypair.pubkey())
        self.channel = grpc.aio.insecure_channel(address)
        self.nodes = farm_pb2_grpc.NodeServiceStub(self.channel)
        self.blobs = farm_pb2_grpc.BlobStoreStub(self.channel)
        self.window = (float("inf"), float("inf"))  # set by run_node
        self.batched = False  # the coordinator answers HeartbeatLeases and CompleteTasks
        self.batch_upload = True  # until the coordinator answers BatchUploadBlobs UNIMPLEMENTED
        self.deliver = True  # until the coordinator answers DeliverTasks UNIMPLEMENTED

    async def call(self, stub: Any, service: str, name: str, request: Any,
                   latencies: dict[str, list[float]] | None) -> Any:
        from frameproof.auth import sign_call

        metadata = sign_call(self.keypair, f"/frameproof.v1.{service}/{name}",
                             request.SerializeToString())
        start = time.perf_counter()
        inside = self.window[0] <= time.time() < self.window[1]
        response = await getattr(stub, name)(request, metadata=metadata, timeout=CALL_TIMEOUT)
        if latencies is not None and inside:  # calls made inside the measured window only
            latencies[name].append(time.perf_counter() - start)
        return response


async def run_node(client: Client, args: argparse.Namespace, window: tuple[float, float],
                   result: dict[str, Any]) -> None:
    """Cycles until the window closes; calls made and cycles completed inside it count."""
    import grpc

    from frameproof.v1 import farm_pb2 as pb

    node_id = client.node_id
    await client.call(client.nodes, "NodeService", "RegisterNode", pb.RegisterNodeRequest(
        node_id=node_id, name="sim", capabilities=pb.NodeCapabilities(threads=1,
                                                                     devices=["CPU"])), None)
    if args.batch:
        try:
            await client.call(client.nodes, "NodeService", "HeartbeatLeases",
                              pb.HeartbeatLeasesRequest(node_id=node_id), None)
            client.batched = True
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
    # Staggered (unless --burst): each node's first lease at a random moment of one render
    # period before the warm-up, as nodes of a running farm finish frames at scattered
    # times; started together, they would ask in lockstep once per render period.
    begin = window[0] - args.warmup
    if not args.burst:
        begin -= random.uniform(0, args.render_seconds)
    while time.time() < begin:
        await asyncio.sleep(0.05)
    serial = 0
    client.window = window
    lat = result["latencies"]
    leases: list[Any] = []  # leased by the last DeliverTasks
    while time.time() < window[1]:
        try:
            if not leases:
                response = await client.call(client.nodes, "NodeService", "LeaseTask",
                                             pb.LeaseTaskRequest(
                                                 node_id=node_id,
                                                 max_tasks=args.tasks_per_lease), lat)
                if not response.HasField("lease"):
                    result["empty"] += window[0] <= time.time() < window[1]
                    await asyncio.sleep(response.retry_after_ms / 1000)
                    continue
                leases = [response.lease, *response.more_leases]
            # As render-node: DeliverTasks for whatever it holds, one lease included; the
            # separate batched calls only for several.
            if client.batched and (len(leases) > 1 or client.deliver):
                serial, delivered, leases = await run_batch(client, leases, args, lat,
                                                            serial, result)
                if window[0] <= time.time() < window[1]:  # completed inside the window
                    result["cycles"] += len(delivered)
                    result["frames"] += sum(len(lease.frames) for lease in delivered)
                continue
            for lease in leases:
                serial = await run_lease(client, lease, args, lat, serial)
                if window[0] <= time.time() < window[1]:  # completed inside the window
                    result["cycles"] += 1
                    result["frames"] += len(lease.frames)
            leases = []
        except grpc.aio.AioRpcError as error:
            leases = []
            result["errors"][f"{error.code().name}: {error.details()[:80]}"] += 1
            await asyncio.sleep(0.5)


async def run_lease(client: Client, lease: Any, args: argparse.Namespace,
                    lat: dict[str, list[float]] | None, serial: int) -> int:
    """Render (sleep), heartbeat, check and upload the image, complete: one frame cycle."""
    from frameproof.receipts import sign_receipt
    from frameproof.v1 import farm_pb2 as pb

    node_id = client.node_id
    if args.render_seconds:
        await asyncio.sleep(args.render_seconds)
    await client.call(client.nodes, "NodeService", "Heartbeat", pb.HeartbeatRequest(
        node_id=node_id, lease_id=lease.lease_id), lat)
    outputs = []
    for frame in lease.frames:
        serial += 1
        data = f"{lease.lease_id}:{frame}:{serial}".encode()
        ref = pb.BlobRef(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        missing = await client.call(client.blobs, "BlobStore", "FindMissingBlobs",
                                    pb.FindMissingBlobsRequest(blobs=[ref]), lat)
        if missing.missing:
            await upload(client, ref, data, lat)
        outputs.append(pb.FrameOutput(
            frame=frame, image=ref, render_seconds=1.0, blender_version="sim",
            device="CPU", receipt_signature=sign_receipt(
                client.keypair, lease.job_id, frame, ref.sha256, lease.settings)))
    await client.call(client.nodes, "NodeService", "CompleteTask",
                      pb.CompleteTaskRequest(node_id=node_id, lease_id=lease.lease_id,
                                             outputs=outputs), lat)
    return serial


async def run_batch(client: Client, leases: list[Any], args: argparse.Namespace,
                    lat: dict[str, list[float]] | None, serial: int,
                    result: dict[str, Any]) -> tuple[int, list[Any], list[Any]]:
    """The cycles of several leases with the batched calls: one HeartbeatLeases, then one
    DeliverTasks carrying every image and result and leasing the next tasks (returned);
    where the coordinator lacks it, one FindMissingBlobs for every image, one
    BatchUploadBlobs for them (an upload stream per image where it lacks that too) and one
    CompleteTasks, the next tasks left to LeaseTask."""
    import grpc

    from frameproof.receipts import sign_outputs, sign_receipt
    from frameproof.v1 import farm_pb2 as pb

    node_id = client.node_id
    if args.render_seconds:  # rendered one after the other, as a node does
        await asyncio.sleep(args.render_seconds * len(leases))
    renewed = await client.call(client.nodes, "NodeService", "HeartbeatLeases",
                                pb.HeartbeatLeasesRequest(
                                    node_id=node_id,
                                    lease_ids=[lease.lease_id for lease in leases]), lat)
    for renewal in renewed.leases:
        if not renewal.keep_going:
            result["errors"][f"heartbeat: {renewal.reason[:80]}"] += 1
    images: dict[str, tuple[Any, bytes]] = {}
    results = []
    for lease in leases:
        outputs = []
        for frame in lease.frames:
            serial += 1
            data = f"{lease.lease_id}:{frame}:{serial}".encode()
            ref = pb.BlobRef(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            images[ref.sha256] = (ref, data)
            outputs.append(pb.FrameOutput(
                frame=frame, image=ref, render_seconds=1.0, blender_version="sim",
                device="CPU", receipt_signature=sign_receipt(
                    client.keypair, lease.job_id, frame, ref.sha256, lease.settings)))
        results.append(pb.LeaseResult(lease_id=lease.lease_id, outputs=outputs))
    if client.deliver:
        if args.receipt_trees:  # one signature for the call, as render-node signs them
            sign_outputs(client.keypair, [(lease, output) for lease, result in
                                          zip(leases, results, strict=True)
                                          for output in result.outputs])
        try:
            answer = await client.call(client.nodes, "NodeService", "DeliverTasks",
                                       pb.DeliverTasksRequest(
                                           node_id=node_id, results=results,
                                           max_tasks=args.tasks_per_lease,
                                           images=[pb.BlobData(blob=ref, data=data)
                                                   for ref, data in images.values()]), lat)
            for stored in answer.images:
                if stored.code:
                    result["errors"][f"upload: {stored.message[:80]}"] += 1
            return (serial, accepted(leases, answer.results, result),
                    [answer.next.lease, *answer.next.more_leases]
                    if answer.next.HasField("lease") else [])
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            client.deliver = False  # an older coordinator: the separate calls
    missing = await client.call(client.blobs, "BlobStore", "FindMissingBlobs",
                                pb.FindMissingBlobsRequest(
                                    blobs=[ref for ref, _ in images.values()]), lat)
    if missing.missing and client.batch_upload:
        try:
            stored = await client.call(client.blobs, "BlobStore", "BatchUploadBlobs",
                                       pb.BatchUploadBlobsRequest(blobs=[
                                           pb.BlobData(blob=images[s.blob.sha256][0],
                                                       data=images[s.blob.sha256][1])
                                           for s in missing.missing]), lat)
            for outcome in stored.results:
                if outcome.code:
                    result["errors"][f"upload: {outcome.message[:80]}"] += 1
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            client.batch_upload = False  # an older coordinator: one stream per image
    if not client.batch_upload:
        for status in missing.missing:
            ref, data = images[status.blob.sha256]
            await upload(client, ref, data, lat)
    answer = await client.call(client.nodes, "NodeService", "CompleteTasks",
                               pb.CompleteTasksRequest(node_id=node_id, results=results), lat)
    return serial, accepted(leases, answer.results, result), []


def accepted(leases: list[Any], outcomes: Any, result: dict[str, Any]) -> list[Any]:
    """The leases delivered; the others counted as errors by reason."""
    delivered = []
    for lease, outcome in zip(leases, outcomes, strict=True):
        if outcome.accepted:
            delivered.append(lease)
        else:
            result["errors"][f"{outcome.code}: {outcome.reason[:80]}"] += 1
    return delivered


async def upload(client: Client, ref: Any, data: bytes,
                 latencies: dict[str, list[float]] | None) -> None:
    from frameproof.auth import sign_call
    from frameproof.v1 import farm_pb2 as pb

    metadata = sign_call(client.keypair, "/frameproof.v1.BlobStore/UploadBlob", None)
    chunk = pb.UploadChunk(blob=ref, offset=0, data=data, crc32=zlib.crc32(data))
    start = time.perf_counter()
    inside = client.window[0] <= time.time() < client.window[1]
    await client.blobs.UploadBlob(iter([chunk]), metadata=metadata, timeout=CALL_TIMEOUT)
    if latencies is not None and inside:
        latencies["UploadBlob"].append(time.perf_counter() - start)


async def client_main(args: argparse.Namespace) -> None:
    result: dict[str, Any] = {"latencies": collections.defaultdict(list), "cycles": 0,
                              "frames": 0, "empty": 0, "errors": collections.Counter()}
    indexes = range(args.first, args.first + args.count)
    clients = [Client(args.address, i) for i in indexes]
    window = (args.start, args.start + args.seconds)
    await asyncio.gather(*(run_node(c, args, window, result) for c in clients))
    for c in clients:
        await c.channel.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["client_cpu"] = usage.ru_utime + usage.ru_stime
    Path(args.out).write_text(json.dumps({**result, "errors": dict(result["errors"])}))


# ------------------------------------------------------------------ orchestration

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_side(tree: Path, args: argparse.Namespace, work: Path,
             profile: Path | None) -> dict[str, Any]:
    """Seed, start the tree's coordinator, drive it, stop it; the figures of one side."""
    data = work / "coordinator"
    data.mkdir(parents=True)
    db_url = args.db or f"sqlite:///{data / 'farm.db'}"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if args.db:
        reset_postgres(args.db)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "seed", "--db", db_url,
                    "--registered", str(max(args.registered, args.nodes)),
                    "--frames", str(args.frames), "--jobs", str(args.jobs)],
                   env=env, cwd=tree, check=True)
    seeded = time.perf_counter() - started
    command = [sys.executable, "-m", "coordinator.cli"]
    if profile is not None:
        command = [sys.executable, "-c", f"OUT={str(profile)!r}\n{PROFILE_WRAPPER}", "--"]
    command += ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--no-verifier",
                "--lease-seconds", "120", "--heartbeat-seconds", "20"]
    if args.db:
        command += ["--db", args.db]
    log = open(work / "coordinator.log", "wb")  # noqa: SIM115
    coordinator = subprocess.Popen(["taskset", "-c", COORDINATOR_CPU, *command], cwd=tree,
                                   env=env, stdout=subprocess.PIPE, stderr=log,
                                   start_new_session=True)
    assert coordinator.stdout is not None
    line = coordinator.stdout.readline().decode()
    if not line.startswith("listening on "):
        raise RuntimeError(f"coordinator did not start; see {log.name}")
    address = line.split()[-1]
    # What the coordinator burns with no calls (settlement sweep, lease reaper, bond keeper):
    # subtracted for the net CPU per cycle.
    time.sleep(2.0)
    idle0 = cpu_seconds(coordinator.pid)
    time.sleep(IDLE_SECONDS)
    background = (cpu_seconds(coordinator.pid) - idle0) / IDLE_SECONDS
    start = time.time() + args.ramp
    per = -(-args.nodes // args.procs)
    clients = []
    for p in range(args.procs):
        first, count = p * per, min(per, args.nodes - p * per)
        if count <= 0:
            break
        clients.append(subprocess.Popen(
            ["taskset", "-c", CLIENT_CPU, sys.executable, "-m", "bench.cycle_bench", "client",
             "--address", address, "--first", str(first), "--count", str(count),
             "--start", str(start), "--seconds", str(args.seconds), "--warmup",
             str(args.warmup), "--render-seconds", str(args.render_seconds),
             "--tasks-per-lease", str(args.tasks_per_lease), *(["--batch"] if args.batch else []),
             *(["--burst"] if args.burst else []),
             # a coordinator that knows receipt trees gets them, as from render-node
             *(["--receipt-trees"] if args.batch and "receipt_proof" in (
                 tree / "proto" / "frameproof" / "v1" / "farm.proto").read_text() else []),
             "--out", str(work / f"client{p}.json")], cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}))
    time.sleep(max(0.0, start - time.time()))
    if profile is not None:
        coordinator.send_signal(signal.SIGUSR1)
    cpu0 = cpu_seconds(coordinator.pid)
    rss_peak = 0.0
    while time.time() < start + args.seconds:
        rss_peak = max(rss_peak, rss_mib(coordinator.pid))
        time.sleep(0.5)
    cpu1 = cpu_seconds(coordinator.pid)
    if profile is not None:
        coordinator.send_signal(signal.SIGUSR2)
    rss_end = rss_mib(coordinator.pid)
    for client in clients:
        client.wait(timeout=args.seconds + 300)
    coordinator.send_signal(signal.SIGTERM)
    coordinator.wait(timeout=120)
    latencies: dict[str, list[float]] = collections.defaultdict(list)
    cycles = frames = empty = 0
    client_cpu = 0.0
    errors: collections.Counter[str] = collections.Counter()
    for p in range(len(clients)):
        part = json.loads((work / f"client{p}.json").read_text())
        for name, values in part["latencies"].items():
            latencies[name].extend(values)
        cycles += part["cycles"]
        frames += part["frames"]
        empty += part["empty"]
        client_cpu += part["client_cpu"]
        errors.update(part["errors"])
    if os.environ.get("KEEPLOG"):
        __import__("shutil").copy(work / "coordinator.log", os.environ["KEEPLOG"])
    return {"cycles": cycles, "frames": frames, "empty": empty, "errors": dict(errors),
            "cpu": cpu1 - cpu0, "seconds": args.seconds, "background": background,
            "rss_peak": max(rss_peak, rss_end),
            "latencies": latencies, "seeded_s": seeded, "client_cpu": client_cpu,
            "tracebacks": (work / "coordinator.log").read_text(errors="replace")
            .count("Traceback")}


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


# Where the event loop's CPU goes: (row, function name, file suffix); cumulative times.
PROFILE_ROWS = (
    ("LeaseTask handler", "LeaseTask", "node_service.py"),
    ("Heartbeat handler", "Heartbeat HeartbeatLeases", "node_service.py"),
    ("CompleteTask handler", "CompleteTask CompleteTasks", "node_service.py"),
    ("FindMissingBlobs handler", "FindMissingBlobs", "blob_service.py"),
    ("UploadBlob handler", "UploadBlob", "blob_service.py"),
    ("signature, freshness, nonce (verify_call)", "verify_call", "auth.py"),
    ("nonce journal write", "record", "nonce_journal.py"),
    ("lease (storage thread)", "_lease_once", "node_service.py"),
    ("complete (storage thread)", "complete complete_many", "leasing.py"),
    ("completion checks: task, blobs, owners (storage thread)", "_completion_facts _delivered",
     "node_service.py"),
    ("heartbeat (storage thread)", "extend extend_many", "leasing.py"),
    ("SQL in the database driver (sqlite3 / psycopg)", "do_execute do_executemany",
     "default.py"),
    ("settlement sweep (thread)", "sweep", "settlement.py"),
)


def profile_table(path: Path, cycles: int) -> dict[str, tuple[float, float]]:
    """Row -> (µs of event-loop CPU per cycle, share of the loop's profiled CPU)."""
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    found: dict[str, tuple[float, float]] = {}
    for label, name, suffix in PROFILE_ROWS:
        cumulative = sum(entry[3] for (file, _, function), entry in
                         stats.stats.items()  # type: ignore[attr-defined]
                         if function in name.split() and file.endswith(suffix))
        found[label] = (cumulative / max(1, cycles) * 1e6, cumulative / total)
    found["all profiled threads"] = (total / max(1, cycles) * 1e6, 1.0)
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def describe(label: str, side: dict[str, Any]) -> str:
    cycles = side["cycles"]
    per_cycle = side["cpu"] / cycles * 1000 if cycles else float("nan")
    net = ((side["cpu"] - side["background"] * side["seconds"]) / cycles * 1000 if cycles
           else float("nan"))
    lat = side["latencies"]
    lat = {**lat, "CompleteTask": lat.get("CompleteTask", []) + lat.get("CompleteTasks", [])}
    calls = sum(len(values) for values in side["latencies"].values())
    return (f"| {label} | {cycles / side['seconds']:.0f} | {per_cycle:.2f} | {net:.2f} | "
            f"{side['background'] * 1000:.0f} ms/s | "
            f"{side['cpu'] / side['seconds'] * 100:.0f}% | "
            f"{percentile(lat.get('LeaseTask', []), 0.5):.1f} / "
            f"{percentile(lat.get('LeaseTask', []), 0.99):.1f} | "
            f"{percentile(lat.get('CompleteTask', []), 0.5):.1f} / "
            f"{percentile(lat.get('CompleteTask', []), 0.99):.1f} | "
            f"{percentile(lat.get('DeliverTasks', []), 0.5):.1f} / "
            f"{percentile(lat.get('DeliverTasks', []), 0.99):.1f} | "
            f"{side['rss_peak']:.0f} | {side['frames'] / max(1, cycles):.1f} | "
            f"{calls / max(1, cycles):.2f} | {sum(side['errors'].values())} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    seeding = commands.add_parser("seed")
    seeding.add_argument("--db", required=True)
    seeding.add_argument("--registered", type=int, required=True)
    seeding.add_argument("--frames", type=int, required=True)
    seeding.add_argument("--jobs", type=int, required=True)
    client = commands.add_parser("client")
    client.add_argument("--address", required=True)
    client.add_argument("--first", type=int, required=True)
    client.add_argument("--count", type=int, required=True)
    client.add_argument("--start", type=float, required=True)
    client.add_argument("--seconds", type=float, required=True)
    client.add_argument("--warmup", type=float, required=True)
    client.add_argument("--render-seconds", type=float, required=True)
    client.add_argument("--tasks-per-lease", type=int, required=True)
    client.add_argument("--batch", action="store_true")
    client.add_argument("--receipt-trees", action="store_true",
                        help="DeliverTasks' receipts signed as one tree (frameproof.receipts)")
    client.add_argument("--burst", action="store_true")
    client.add_argument("--out", required=True)
    run = commands.add_parser("run")
    run.add_argument("--tree", type=Path, action="append", required=True,
                     help="checkout whose coordinator runs (repeat: side by side)")
    run.add_argument("--label", action="append", help="name of each --tree in the table")
    run.add_argument("--nodes", type=int, default=64, help="simulated nodes cycling")
    run.add_argument("--registered", type=int, default=0,
                     help="nodes registered in the database (at least --nodes)")
    run.add_argument("--frames", type=int, default=100_000, help="frames queued at the start")
    run.add_argument("--jobs", type=int, default=100)
    run.add_argument("--seconds", type=float, default=30.0, help="measured window")
    run.add_argument("--warmup", type=float, default=5.0)
    run.add_argument("--ramp", type=float, default=15.0,
                     help="seconds for the clients to start and register before the warm-up")
    run.add_argument("--render-seconds", type=float, default=0.0,
                     help="a node's pause between lease and completion")
    run.add_argument("--burst", action="store_true",
                     help="every node starts cycling at the same moment (by default each "
                     "starts at a random moment of one render period, so requests arrive "
                     "spread out as in a running farm; --ramp must leave room for it)")
    run.add_argument("--procs", type=int, default=2, help="load generator processes")
    run.add_argument("--tasks-per-lease", type=int, default=1,
                     help="LeaseTaskRequest.max_tasks (an old coordinator gives one)")
    run.add_argument("--max-tasks", type=int, nargs="+", metavar="N",
                     help="run each tree once per N, side by side, with LeaseTaskRequest."
                     "max_tasks N (overrides --tasks-per-lease); each leased task is still a "
                     "cycle of its own (heartbeat, blob check, upload, complete)")
    run.add_argument("--batch", action="store_true",
                     help="a node holding several leases renews, checks and delivers them "
                     "with one call each (HeartbeatLeases, FindMissingBlobs, CompleteTasks); "
                     "a coordinator without them gets one call per lease")
    run.add_argument("--db", help="PostgreSQL URL (dropped and re-created per side)")
    run.add_argument("--profile", type=Path, help="folder for each side's cProfile output")
    run.add_argument("--write", metavar="SECTION", help="write the table into BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.command == "seed":
        seed(args.db, args.registered, args.frames, args.jobs)
        return 0
    if args.command == "client":
        asyncio.run(client_main(args))
        return 0
    if args.command != "run":
        parser.error("choose seed, client or run")
    labels = args.label or [str(tree) for tree in args.tree]
    sides = [(tree, label, args.tasks_per_lease)
             for tree, label in zip(args.tree, labels, strict=True)]
    if args.max_tasks:
        sides = [(tree, f"{label}, max_tasks {n}", n)
                 for tree, label, _ in sides for n in args.max_tasks]
    rows = []
    profiles: dict[str, dict[str, tuple[float, float]]] = {}
    # Every side's data dir is deleted at the end, not before the next side: on ext4 without
    # a journal (this VM) a file created soon after many deletions costs more CPU (the
    # inode allocator skips recently deleted inodes), which would tax the later sides.
    keep = contextlib.ExitStack()
    for tree, label, max_tasks in sides:
        args.tasks_per_lease = max_tasks
        work = keep.enter_context(tempfile.TemporaryDirectory(prefix="cycle-bench-"))
        profile = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            profile = args.profile / f"{label}.prof"
        side = run_side(tree.resolve(), args, Path(work), profile)
        row = describe(label, side)
        if profile is not None:
            profiles[label] = profile_table(profile, side["cycles"])
        print(row, json.dumps({"errors": side["errors"], "empty": side["empty"],
                               "tracebacks": side["tracebacks"],
                               "seeded_s": round(side["seeded_s"], 1),
                               "client_cpu_s": round(side["client_cpu"], 1)}), flush=True)
        rows.append(row)
    keep.close()
    table = ("| coordinator | cycles/s | coordinator CPU ms/cycle | same, idle background "
             "taken off | idle background | coordinator CPU busy | "
             "LeaseTask p50 / p99 ms | CompleteTask(s) p50 / p99 ms | "
             "DeliverTasks p50 / p99 ms | RSS peak MiB | "
             "frames/cycle | calls/cycle | errors |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
             + "\n".join(rows))
    if profiles:
        names = list(profiles)
        table += ("\n\nCPU per cycle under cProfile (`--profile`: CPU time of each thread, "
                  "cumulative per function; rows overlap; the profiler inflates absolute "
                  "figures, compare the shares):\n\n"
                  "| where | " + " | ".join(f"{n} µs/cycle (share)" for n in names) + " |\n|---|"
                  + "---|" * len(names) + "\n")
        for label in profiles[names[0]]:
            cells = (f"{profiles[n][label][0]:.0f} ({profiles[n][label][1]:.0%})" for n in names)
            table += f"| {label} | " + " | ".join(cells) + " |\n"
    print(table)
    if args.write:
        from bench.report import write_section

        write_section(args.write, "PYTHONPATH=$PWD .venv/bin/python -m bench.cycle_bench "
                      + " ".join(sys.argv[1:] if argv is None else argv), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

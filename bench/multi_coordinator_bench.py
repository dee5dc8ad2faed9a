"""Two coordinators on one PostgreSQL database, many simulated nodes, one coordinator SIGKILLed.

Two real coordinator processes (`--no-verifier`) share a fresh PostgreSQL database, one blob
folder and one token chain (`TestRpcServer`, LiteSVM behind a loopback JSON-RPC endpoint, in
a process of its own). In this process, asyncio `grpc.aio` clients play ``--nodes`` nodes
(as in bench/load_bench.py: register, lease, heartbeat while "rendering" 1-5 s a frame,
upload a tiny unique blob, complete), half preferring each coordinator and switching to the
other when a call fails; creators submit paid 24-frame jobs through coordinator B; a
simulated verifier (a key both coordinators trust, `--verifier-pubkey`) approves every
delivered frame through either coordinator, so settlement charges and burns them for real.
Halfway, coordinator A (the leader: it starts first) is SIGKILLed and restarted on the same
port a few seconds later.

At the end, once every approved frame is charged: every frame of every job is checked (one
accepted result per rendered frame, nothing lost or duplicated), each charged frame has one
charge and one landed burn, and `render-coordinator ledger check` reconciles the ledger with
the chain (every landed signature, the escrow account and the token supply).

    .venv/bin/python -m bench.multi_coordinator_bench --minutes 10 --nodes 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from solders.keypair import Keypair

from bench.load_bench import (
    CREATORS,
    Signed,
    Stats,
    _complete,
    _render_and_upload,
    percentile,
    run_creators,
    upload_scene,
    verify,
)
from bench.report import write_section
from coordinator.chain.keys import save_keypair
from coordinator.storage.database import create_database, drop_database
from frameproof.v1 import farm_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432"
CHAIN_SERVER = """
import sys, time
from solders.keypair import Keypair
from coordinator.chain.keys import load_keypair
from coordinator.chain.rpc import RpcChain
from coordinator.chain.testrpc import TestRpcServer
treasury = load_keypair(sys.argv[1])
server = TestRpcServer()
url = server.start()
server.svm.airdrop(treasury.pubkey(), 10_000 * 10**9)
chain = RpcChain.create_mint(url, treasury, poll_interval_s=0.01)
print(url, chain.mint, flush=True)
chain.close()
sys.stdin.read()  # until the bench closes our stdin
"""


class Coordinator:
    """One coordinator process, restartable on the same port."""

    def __init__(self, name: str, work: Path, args: list[str], pin: str | None) -> None:
        self.name, self.work, self.args, self.pin = name, work, args, pin
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self, port: int = 0) -> str:
        log = open(self.work / f"{self.name}.log", "ab")  # noqa: SIM115
        command = [sys.executable, "-m", "coordinator.cli", "serve", "--listen",
                   f"127.0.0.1:{port}", "--data-dir", str(self.work / self.name), *self.args]
        if self.pin:
            command = ["taskset", "-c", self.pin, *command]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
                                        start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"coordinator {self.name} did not start; see {log.name}")
        self.address = line.split()[-1]
        return self.address

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def cpu_seconds(self) -> float:
        """User+system CPU of the running process (the restarted one after the kill)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FailoverCalls:
    """A simulated client's channels to both coordinators: a call that fails with
    UNAVAILABLE or DEADLINE_EXCEEDED moves it to the other one."""

    def __init__(self, addresses: list[str], keypair: Keypair, stats: Stats,
                 prefer: int) -> None:
        self.channels = [grpc.aio.insecure_channel(address) for address in addresses]
        self.calls = [Signed(channel, keypair, stats) for channel in self.channels]
        for calls, channel in zip(self.calls, self.channels, strict=True):
            calls.verifier = farm_pb2_grpc.VerifierServiceStub(channel)  # type: ignore[attr-defined]
        self.current = prefer % len(addresses)
        self.switches = 0

    @property
    def now(self) -> Signed:
        return self.calls[self.current]

    def failed(self, error: grpc.aio.AioRpcError) -> None:
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            self.current = (self.current + 1) % len(self.calls)
            self.switches += 1

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def run_node(addresses: list[str], stats: Stats, stop: asyncio.Event, index: int,
                   switches: list[int], render: tuple[float, float]) -> None:
    """bench/load_bench.py's node, with a second coordinator to fail over to."""
    from frameproof.v1 import farm_pb2 as pb

    keypair = Keypair()
    node_id = str(keypair.pubkey())
    rng = random.Random(index)
    await asyncio.sleep(rng.uniform(0, 10))
    link = FailoverCalls(addresses, keypair, stats, prefer=index)
    try:
        registered = None
        while registered is None and not stop.is_set():
            try:
                registered = await link.now.unary(link.now.nodes, "RegisterNode",
                                                  pb.RegisterNodeRequest(
                    node_id=node_id, name=f"sim-{index}",
                    capabilities=pb.NodeCapabilities(threads=1, devices=["CPU"])))
            except grpc.aio.AioRpcError as error:
                link.failed(error)
                await asyncio.sleep(1)
        heartbeat = max(1, registered.heartbeat_seconds) if registered else 5
        while not stop.is_set():
            try:
                response = await link.now.unary(link.now.nodes, "LeaseTask",
                                                pb.LeaseTaskRequest(node_id=node_id))
            except grpc.aio.AioRpcError as error:
                link.failed(error)
                await asyncio.sleep(rng.uniform(0.5, 1.5))
                continue
            if not response.HasField("lease"):
                stats.empty[empty_answer(response.retry_after_ms)] += 1
                await asyncio.sleep(response.retry_after_ms / 1000 * rng.uniform(0.8, 1.2))
                continue
            stats.leases += 1
            lease = response.lease
            outputs = None
            for _ in range(3):  # the result survives a coordinator's death: deliver elsewhere
                try:
                    if outputs is None:
                        outputs = await _render_and_upload(link.now, node_id, lease,
                                                           heartbeat, rng, stats, render)
                        if outputs is None:  # withdrawn
                            break
                    # Sent again as it was if the call failed: the first may have been
                    # recorded before the coordinator died, and a retry is answered alike.
                    await _complete(link.now, node_id, lease, outputs, stats)
                    break
                except grpc.aio.AioRpcError as error:
                    link.failed(error)
                    if error.code() not in (grpc.StatusCode.UNAVAILABLE,
                                            grpc.StatusCode.DEADLINE_EXCEEDED):
                        break
                    await asyncio.sleep(rng.uniform(0.5, 1.5))
    finally:
        switches.append(link.switches)
        await link.close()


def empty_answer(retry_after_ms: int) -> str:
    """What a LeaseTask answer without a lease was, by the wait it asks for
    (coordinator/api/node_service.py)."""
    from coordinator.api.node_service import QUARANTINED_RETRY_MS, SHED_RETRY_MS

    if retry_after_ms >= QUARANTINED_RETRY_MS:
        return "quarantined"
    if retry_after_ms >= SHED_RETRY_MS[0]:
        return "shed (storage backlog)"
    return "the long poll ended empty"


async def run_verifier(addresses: list[str], keypair: Keypair, stats: Stats,
                       stop: asyncio.Event, approved: list[int], worker: int) -> None:
    """Lease checks from either coordinator and pass them (the nodes' bytes are not images:
    this stands for a verifier that found them right, so settlement charges them)."""
    from frameproof.v1 import farm_pb2 as pb

    link = FailoverCalls(addresses, keypair, stats, prefer=worker)
    verifier_id = str(keypair.pubkey())
    try:
        while not stop.is_set():
            try:
                leased = await link.now.unary(link.now.verifier, "LeaseVerification",
                                              pb.LeaseVerificationRequest(
                                                  verifier_id=verifier_id,
                                                  blender_version="sim", device="CPU"))
                if not leased.HasField("task"):
                    await asyncio.sleep(max(0.2, leased.retry_after_ms / 1000))
                    continue
                await link.now.unary(link.now.verifier, "SubmitVerification",
                                     pb.SubmitVerificationRequest(
                                         verifier_id=verifier_id,
                                         verification_id=leased.task.verification_id,
                                         passed=True, mode="exact", reason="simulated pass"))
                approved.append(1)
            except grpc.aio.AioRpcError as error:
                link.failed(error)
                await asyncio.sleep(0.5)
    finally:
        await link.close()


def warm_estimate(address: str, keypair: Keypair, scene_id: str) -> None:
    """The first estimate probes the scene with Blender (tens of seconds on a busy machine);
    done before the clock starts, later estimates reuse its measurement."""
    from frameproof.client import FarmClient
    from frameproof.v1 import farm_pb2 as pb

    with FarmClient(address, keypair) as client:
        client.jobs.EstimateJob(pb.EstimateRequest(scene_id=scene_id, frames="1-24"),
                                timeout=600)


def query(url: str, sql: str) -> list[tuple]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql)).all()]
    finally:
        engine.dispose()


async def wait_settled(url: str, timeout: float) -> float:
    """Until no check waits and every approved frame is charged; seconds it took. Gives up
    after `timeout` seconds without progress (the checks left over from the run drain at the
    simulated verifiers' pace, minutes when delivery outran them)."""
    started = last_progress = time.monotonic()
    left = None
    while time.monotonic() - last_progress < timeout:
        waiting = query(url, "SELECT count(*) FROM verification WHERE state IN "
                             "('queued', 'leased')")[0][0]
        uncharged = query(url, "SELECT count(*) FROM frame_result r WHERE r.verdict = 'approved' "
                               "AND NOT EXISTS (SELECT 1 FROM pay_frame_charge c WHERE "
                               "c.job_id = r.job_id AND c.frame = r.frame)")[0][0]
        if waiting == 0 and uncharged == 0:
            return time.monotonic() - started
        if left is None or waiting + uncharged < left:
            left, last_progress = waiting + uncharged, time.monotonic()
        await asyncio.sleep(1)
    raise TimeoutError(f"not settled: {left} checks or charges left, none done in "
                       f"{timeout:.0f}s")


async def main_async(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="frameproof-multi-"))
    url = create_database(POSTGRES, prefix="fp_bench")
    db_name = url.rsplit("/", 1)[1]
    treasury, verifier = Keypair(), Keypair()
    save_keypair(treasury, work / "treasury.json")
    chain = subprocess.Popen([sys.executable, "-c", CHAIN_SERVER, str(work / "treasury.json")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True)
    assert chain.stdout is not None
    chain_url, mint = chain.stdout.readline().split()
    shared = ["--db", url, "--blobs-dir", str(work / "blobs"), "--cluster", chain_url,
              "--treasury-keypair", str(work / "treasury.json"), "--mint", mint,
              "--no-verifier", "--verifier-pubkey", str(verifier.pubkey()),
              "--lease-seconds", str(args.lease_seconds),
              "--heartbeat-seconds", str(args.lease_seconds / 6), "--rate-limit", "0"]
    first = Coordinator("a", work, shared, args.pin_coordinators)
    second = Coordinator("b", work, shared, args.pin_coordinators)
    stats = Stats()
    approved: list[int] = []
    switches: list[int] = []
    events: list[str] = []
    try:
        first.start()
        second.start()
        addresses = [first.address, second.address]
        print(f"coordinators {addresses}, database {db_name}, data in {work}", flush=True)
        creator_keys = [Keypair() for _ in range(CREATORS)]
        scene_id = await asyncio.to_thread(upload_scene, second.address, creator_keys)
        await asyncio.to_thread(warm_estimate, second.address, creator_keys[0], scene_id)
        stop, checks_stop = asyncio.Event(), asyncio.Event()
        creators = asyncio.create_task(run_creators(second.address, scene_id, stats, stop,
                                                    backlog=args.nodes * 2,
                                                    keypairs=creator_keys))
        nodes = [asyncio.create_task(run_node(addresses, stats, stop, i, switches,
                                                tuple(args.render_seconds)))
                 for i in range(args.nodes)]
        verifiers = [asyncio.create_task(run_verifier(addresses, verifier, stats, checks_stop,
                                                      approved, i))
                     for i in range(args.verifiers)]
        started = time.monotonic()
        cpu = {"a": 0.0, "b": 0.0}
        base = {"a": first.cpu_seconds(), "b": second.cpu_seconds()}
        killed = False
        delivered_at_kill = 0
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            await asyncio.sleep(5)
            if not killed and elapsed >= args.minutes * 30:
                cpu["a"] += first.cpu_seconds() - base["a"]
                delivered_at_kill = stats.delivered
                first.kill()
                killed, killed_at = True, time.monotonic()
                events.append(f"{elapsed:.0f} s: coordinator A SIGKILLed "
                              f"({delivered_at_kill} frames delivered so far)")
                print(events[-1], flush=True)
                await asyncio.sleep(args.down_seconds)
                first.start(port=first.port)
                base["a"] = first.cpu_seconds()
                events.append(f"{time.monotonic() - started:.0f} s: coordinator A restarted on "
                              f"the same port; {stats.delivered - delivered_at_kill} frames "
                              f"delivered while it was down "
                              f"({time.monotonic() - killed_at:.0f} s)")
                print(events[-1], flush=True)
            elif elapsed >= 10 and int(elapsed) % 30 < 5:
                print(f"{elapsed:5.0f}s: {stats.delivered} frames delivered "
                      f"({stats.delivered / elapsed:.1f}/s), {len(approved)} approved, "
                      f"errors {dict(stats.errors)}", flush=True)
        stop.set()
        await creators
        await asyncio.wait_for(asyncio.gather(*nodes, return_exceptions=True), 120)
        elapsed = time.monotonic() - started
        cpu["a"] += first.cpu_seconds() - base["a"]
        cpu["b"] += second.cpu_seconds() - base["b"]
        settle_seconds = await wait_settled(url, 120)
        checks_stop.set()
        await asyncio.gather(*verifiers, return_exceptions=True)
        counts = await verify(second.address, stats)
        charges = query(url, "SELECT count(*), count(DISTINCT (job_id, frame)) "
                             "FROM pay_frame_charge")[0]
        burns = query(url, "SELECT count(*) FROM pay_chain_op WHERE kind = 'burn' "
                           "AND state = 'landed'")[0][0]
        passed = query(url, "SELECT count(*) FROM frame_result WHERE verdict = 'approved'")[0][0]
        leaders = [line for c in (first, second)
                   for line in (work / f"{c.name}.log").read_text(errors="replace").splitlines()
                   if "now runs settlement" in line]
        check = subprocess.run([sys.executable, "-m", "coordinator.cli", "ledger", "check",
                                "--data-dir", str(work / "b")], capture_output=True, text=True,
                               timeout=600, cwd=ROOT)
        tracebacks = sum((work / f"{name}.log").read_text(errors="replace").count("Traceback")
                         for name in ("a", "b"))
    finally:
        for coordinator in (first, second):
            coordinator.stop()
        if chain.stdin is not None:
            chain.stdin.close()
        chain.wait(30)
        drop_database(url)
    rpc_rows = "\n".join(
        f"| {name} | {len(values)} | {percentile(values, 0.5) * 1000:.1f} | "
        f"{percentile(values, 0.99) * 1000:.1f} | {max(values) * 1000:.0f} |"
        for name, values in sorted(stats.latencies.items()))
    ok = (counts.get("problems", 0) == 0 and check.returncode == 0 and charges[0] == charges[1]
          == burns == passed)
    pinned = (f"coordinators pinned to CPU {args.pin_coordinators} with `taskset`, the load "
              "generator and PostgreSQL not pinned" if args.pin_coordinators
              else "nothing pinned: coordinators, load generator and PostgreSQL share the cores")
    rate = f"{stats.delivered / elapsed:.1f}/s"
    elections = ", ".join(line[:19] for line in leaders)
    states = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "problems")
    money = f"{passed} / {charges[0]} / {charges[1]} / {burns}"
    moved = f"{sum(switches)} by {sum(1 for s in switches if s)} nodes"
    empty = ", ".join(f"{n} {kind}" for kind, n in stats.empty.most_common())
    per_frame = (cpu["a"] + cpu["b"]) / max(1, stats.delivered) * 1000
    body = f"""{args.nodes} simulated nodes (asyncio `grpc.aio`, one keypair each, every call
signed; half prefer each coordinator and switch on UNAVAILABLE/DEADLINE_EXCEEDED) against two
coordinator processes on one fresh PostgreSQL database, one blob folder and one chain
(`TestRpcServer` in its own process), `--no-verifier`, lease {args.lease_seconds:g} s, for
{elapsed / 60:.1f} min; 4 creators keep {args.nodes * 2} frames queued through coordinator B;
{args.verifiers} simulated verifier workers pass every delivered frame, so each is charged and
burned on chain. Coordinator A was SIGKILLed halfway and restarted {args.down_seconds:g} s
later. {pinned}.

| figure | value |
|---|---|
| frames delivered (accepted `CompleteTask`) | {stats.delivered} ({rate}) |
| events | {'; '.join(events)} |
| leader (settlement, epochs, bonds, reaper) | {len(leaders)} elections: {elections} |
| lost or duplicated frames | {counts.get('problems', 0)} |
| frames by state at the end | {states} |
| approved frames / charges / distinct charged frames / landed burns | {money} |
| `ledger check` (ledger against the chain) | {'ok' if check.returncode == 0 else 'FAILED'} |
| settled after the load stopped | {settle_seconds:.0f} s |
| node failovers (calls moved to the other coordinator) | {moved} |
| LeaseTask answers | {stats.leases} leases; {empty or 'no empty answers'} |
| RPC errors | {dict(stats.errors) or 'none'} |
| coordinator CPU over the run (A before + after the kill, B) | {cpu['a']:.0f} s, {cpu['b']:.0f} s |
| coordinator CPU per delivered frame (both) | {per_frame:.1f} ms |
| tracebacks in the coordinator logs | {tracebacks} |

| RPC | calls | p50 ms | p99 ms | max ms |
|---|---|---|---|---|
{rpc_rows}
"""
    print(body, flush=True)
    if not ok:
        print(check.stdout[-3000:], check.stderr[-3000:], flush=True)
    if args.write:
        write_section("multi-coordinator",
                      f".venv/bin/python -m bench.multi_coordinator_bench --minutes "
                      f"{args.minutes:g} --nodes {args.nodes}"
                      + (f" --render-seconds {args.render_seconds[0]:g} "
                         f"{args.render_seconds[1]:g}"
                         if args.render_seconds != [1.0, 5.0] else "")
                      + (f" --pin-coordinators {args.pin_coordinators}"
                         if args.pin_coordinators else ""), body + args.notes)
    return 0 if ok and tracebacks == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--verifiers", type=int, default=8,
                        help="simulated verifier workers (concurrent checks)")
    parser.add_argument("--lease-seconds", type=float, default=30.0)
    parser.add_argument("--render-seconds", type=float, nargs=2, default=[1.0, 5.0],
                        metavar=("LOW", "HIGH"),
                        help="each simulated frame 'renders' for a random time in this range "
                        "(1,000 nodes at 1-5 s offer ~330 frames/s, more than two "
                        "coordinators on one core take; at 15-25 s, ~50/s)")
    parser.add_argument("--down-seconds", type=float, default=5.0,
                        help="how long the killed coordinator stays down")
    parser.add_argument("--pin-coordinators", metavar="CPUS",
                        help="taskset CPU list for both coordinators, e.g. 0")
    parser.add_argument("--no-write", dest="write", action="store_false",
                        help="print only; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--notes", default="", help="text appended to the report section")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main_async(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())

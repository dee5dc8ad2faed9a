"""The coordinator process: wires storage, intake and servicers into one grpc.aio server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from coordinator import diagnostics
from coordinator.access import AccessPolicy
from coordinator.api.admin_service import AdminServicer, close_epoch_now
from coordinator.api.auth import LOCAL_ADMIN, SignedCallInterceptor
from coordinator.api.blob_http import BlobHttpServer, server_tls
from coordinator.api.blob_service import BlobStoreServicer
from coordinator.api.job_service import JobServicer
from coordinator.api.node_service import NodeServicer
from coordinator.api.nonce_journal import NonceJournal
from coordinator.api.rate_limit import DEFAULT_BURST, DEFAULT_CALLS_PER_SECOND, CallRateLimiter
from coordinator.api.verifier_service import VerifierServicer
from coordinator.blobstore import BlobStore
from coordinator.bonding import BondKeeper
from coordinator.chain import open_chain
from coordinator.domain.epochs import EpochConfig
from coordinator.domain.reputation import NodeEvent
from coordinator.events import JobEvents
from coordinator.intake import SUPPORTED_ENGINES, SceneIntake
from coordinator.metrics import CountingChain, RpcMetricsInterceptor, coordinator_registry
from coordinator.payments import Payments
from coordinator.payments.bonds import BondPolicy
from coordinator.probe import PROBE_MEMORY_BYTES, MachineScore, Prober
from coordinator.settlement import Settlement
from coordinator.storage.cluster import (
    DifferentChain,
    LeaderLock,
    SharedNonceLog,
    claim_chain,
    is_shared,
)
from coordinator.storage.database import (
    WalCheckpointer,
    analyze_changed_tables,
    open_database,
    sqlite_url,
)
from coordinator.storage.executor import StorageExecutor
from coordinator.storage.models import TaskRecord
from coordinator.storage.notifications import SharedJobEvents
from coordinator.storage.owners import BlobOwners
from coordinator.storage.pricing_store import PricingStore
from coordinator.storage.proof import PEER_AUDIT_RATE, ProofStore
from coordinator.storage.store import FarmStore, SchedulingPolicy
from coordinator.warm_blender import WarmBlender
from frameproof.auth import NONCE_WINDOW_SECONDS, NonceCache
from frameproof.identity import load_or_create_keypair
from frameproof.v1 import farm_pb2, farm_pb2_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_UNIX_SOCKET_PATH = 100  # sun_path holds 108 bytes
SERVICE_NAMES = tuple(
    farm_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("JobService", "NodeService", "BlobStore", "VerifierService", "AdminService")
)
SETTLE_SECONDS = 1.0
LEADER_SECONDS = 1.0  # how often a coordinator beside others checks or competes for the lock
BOND_SECONDS = 2.0
SHARED_WORKER_THREADS = 32
STATISTICS_SECONDS = 10.0  # how often the leader looks for PostgreSQL tables to ANALYZE


@dataclass(frozen=True)
class CoordinatorConfig:
    listen: str = "127.0.0.1:50051"
    data_dir: Path = Path(".farm")
    db_url: str | None = None  # default: SQLite under data_dir
    # Where blobs are stored (default: data_dir/blobs). Coordinators sharing one PostgreSQL
    # database share this folder too (NFS or similar in production; see docs/DEPLOY.md).
    blobs_dir: Path | None = None
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 10.0
    max_attempts: int = 3
    engines: tuple[str, ...] = field(default=SUPPORTED_ENGINES)
    admins: tuple[str, ...] = ()  # public keys with admin rights, besides the data dir's own
    tls_cert: Path | None = None
    tls_key: Path | None = None
    admin_socket: bool = True  # unix:DATA_DIR/admin.sock, where the OS vouches for the caller
    verifiers: tuple[str, ...] = ()  # public keys allowed to verify, besides the admins
    run_verifier: bool = True  # start a verifier worker beside the coordinator
    verifier_threads: int = 0
    verifier_workers: int = 1  # checks the built-in verifier runs at once
    peer_audit_rate: float = PEER_AUDIT_RATE  # share of peer verifiers' passes checked again
    calls_per_second: float = DEFAULT_CALLS_PER_SECOND  # per caller key; 0: no limit
    call_burst: float = DEFAULT_BURST
    cluster: str | None = None  # None: the embedded chain under data_dir/chain
    treasury_keypair: Path | None = None  # RPC clusters: the mint authority's keypair
    mint: str | None = None  # RPC clusters: the farm token's mint address
    epoch_seconds: float = 86_400.0
    http_listen: str | None = None  # HOST:PORT of /metrics (and the dashboard); None: off
    # HOST:PORT of the blobs over HTTP (coordinator/api/blob_http.py); "": listen's host, any
    # port; None: off
    blob_http_listen: str | None = ""
    machine_score: float | None = None  # this machine's benchmark score; None: measure it once
    spare_blender: bool = True  # a Blender child started ahead of a new scene's intake and probe
    bonds: BondPolicy = field(default_factory=BondPolicy)  # bonds, new identities, slashing


def admin_keypair_path(data_dir: Path) -> Path:
    return data_dir / "admin-keypair.json"


def admin_socket_path(data_dir: Path) -> Path:
    return data_dir / "admin.sock"


@dataclass
class RunningCoordinator:
    servers: list[grpc.aio.Server]
    port: int
    store: FarmStore
    background: list[asyncio.Task]
    admin_address: str
    payments: Payments
    nonce_journal: NonceJournal | SharedNonceLog
    storage: StorageExecutor = field(default_factory=StorageExecutor)
    verification: StorageExecutor | None = None  # the verifier servicer's database thread
    http_port: int | None = None  # where /metrics is served, when --http is given
    leader: LeaderLock = field(default_factory=LeaderLock.always)
    events: JobEvents = field(default_factory=JobEvents)
    blob_http: BlobHttpServer | None = None
    warm: WarmBlender | None = None
    checkpointer: WalCheckpointer | None = None  # SQLite files only

    async def stop(self, grace: float = 5.0) -> None:
        if self.blob_http is not None:
            await asyncio.to_thread(self.blob_http.stop)
        if self.warm is not None:
            await asyncio.to_thread(self.warm.close)
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await asyncio.gather(*(server.stop(grace) for server in self.servers))
        if isinstance(self.events, SharedJobEvents):
            await self.events.stop()
        await asyncio.to_thread(self.leader.release)
        self.storage.close()
        if self.verification is not None:
            self.verification.close()
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.close)
        self.payments.chain.close()
        self.nonce_journal.close()


async def start_coordinator(config: CoordinatorConfig) -> RunningCoordinator:
    """Open (or resume) the farm under config.data_dir and start serving."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db_url = config.db_url or sqlite_url(config.data_dir)
    engine = open_database(db_url)
    shared = is_shared(db_url)  # other coordinators may serve from the same database
    if shared:
        # Every signed call waits in a worker thread for its nonce's round trip to the shared
        # journal (calls arriving together share one transaction): the default six threads
        # would cap a transaction at six calls and keep blob work waiting behind them.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=SHARED_WORKER_THREADS, thread_name_prefix="worker"))
    policy = SchedulingPolicy(lease_seconds=config.lease_seconds, max_attempts=config.max_attempts)
    store = FarmStore(engine, policy)
    resumed = store.grant_grace(time.time())
    if resumed:
        log.info("resumed %d live lease(s) with a fresh grace period", resumed)
    proof = ProofStore(engine, policy, peer_audit_rate=config.peer_audit_rate)
    admin_key = load_or_create_keypair(admin_keypair_path(config.data_dir))
    # Checks in flight died with the old process (the built-in verifier is its child): not
    # their fault, so no failure is counted. Beside other coordinators, only our verifier's.
    proof.requeue_expired_verifications(
        float("inf"), count_failures=False,
        verifier_id=str(admin_key.pubkey()) if shared else None)
    blobs = BlobStore(config.blobs_dir or config.data_dir / "blobs")
    events: JobEvents = SharedJobEvents(db_url) if shared else JobEvents()
    if isinstance(events, SharedJobEvents):
        await events.start()
    owners = BlobOwners(engine)
    adopted = owners.adopt_existing_jobs()
    if adopted:
        log.info("recorded %d blob owner(s) from existing jobs", adopted)
    storage = StorageExecutor()
    verification = StorageExecutor(name="verification")
    intake = SceneIntake(store, blobs, config.data_dir / "scenes", engines=config.engines,
                         owners=owners)
    intake.scenes_dir.mkdir(parents=True, exist_ok=True)
    warm = WarmBlender(memory_limit_bytes=PROBE_MEMORY_BYTES, spare=config.spare_blender,
                       log_path=intake.scenes_dir / "spare-blender.log")

    admins = frozenset({*config.admins, str(admin_key.pubkey()), LOCAL_ADMIN.pubkey})
    access = AccessPolicy(store, admins, frozenset(config.verifiers), proof, owners)
    payments = open_payments(config, engine)
    if shared:
        try:
            claim_chain(engine, str(payments.chain.mint), time.time())
        except DifferentChain:
            payments.chain.close()
            raise
    # Settlement, epochs, bonds and the reaper run in one coordinator at a time; whoever takes
    # them over first finishes the chain operations a dead one left half-done.
    leader = (LeaderLock(engine, on_elected=payments.reconcile_pending) if shared
              else LeaderLock.always())
    if not shared:
        await asyncio.to_thread(payments.reconcile_pending)
    await asyncio.to_thread(leader.hold)
    loop = asyncio.get_running_loop()
    # The sweep runs in a worker thread: asyncio events may only be set from the loop.
    settlement = Settlement(store, proof, payments,
                            on_change=lambda job_id: loop.call_soon_threadsafe(events.changed,
                                                                               job_id),
                            on_work=lambda: loop.call_soon_threadsafe(events.work_queued))
    blob_servicer = BlobStoreServicer(blobs, may_download=access.may_read_blob, owners=owners)
    servicers = (
        JobServicer(store, intake, events, access, payments, allow_airdrop=config.cluster in (
            None, "embedded", "localnet", "devnet", "testnet") or _is_local_url(config.cluster),
            prober=Prober(PricingStore(engine),
                          MachineScore(config.data_dir, config.machine_score),
                          logs_dir=config.data_dir / "scenes"),
            proof=proof, warm=warm),
        NodeServicer(store, proof, blobs, events, payments,
                     heartbeat_seconds=config.heartbeat_seconds, access=access, owners=owners,
                     storage=storage),
        blob_servicer,
        VerifierServicer(store, proof, access, events, proof.quarantine, storage=verification),
        AdminServicer(store, proof, access, payments,
                      close_epoch=functools.partial(close_epoch_now, store, proof, payments)),
    )
    nonce_journal: NonceJournal | SharedNonceLog = (
        SharedNonceLog(engine, NONCE_WINDOW_SECONDS) if shared
        else NonceJournal(config.data_dir / "nonces", NONCE_WINDOW_SECONDS))
    nonces = NonceCache(NONCE_WINDOW_SECONDS, log=nonce_journal)
    limiter = None
    if config.calls_per_second > 0:
        limiter = CallRateLimiter(config.calls_per_second, config.call_burst,
                                  exempt=frozenset({*admins, *config.verifiers}))
    server, health = _build_server(servicers, SignedCallInterceptor(nonces, limiter=limiter))
    port = _listen(server, config)
    blob_http = _blob_http(config, blobs, nonces, access, owners, limiter)
    if blob_http is not None:
        blob_servicer.set_http_endpoint(blob_http.port, tls=blob_http.tls is not None)
        blob_http.start()
        log.info("blobs over HTTP on port %d", blob_http.port)
    http_socket = None
    if config.http_listen:
        from coordinator import web

        http_socket = web.bind(config.http_listen)
    servers = [server]
    socket_path = admin_socket_path(config.data_dir)
    if config.admin_socket and len(str(socket_path.resolve())) < MAX_UNIX_SOCKET_PATH:
        socket_path.unlink(missing_ok=True)
        admin_server, _ = _build_server(servicers, SignedCallInterceptor(trust_all_as=LOCAL_ADMIN))
        admin_server.add_insecure_port(f"unix:{socket_path.resolve()}")
        servers.append(admin_server)
    for each in servers:
        await each.start()
    if len(servers) > 1:
        os.chmod(socket_path, 0o600)
    for name in ["", *SERVICE_NAMES]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    reaper = asyncio.create_task(_reap_expired_leases(store, proof, events,
                                                      config.lease_seconds, leader, storage))
    admin_address = (f"unix:{socket_path.resolve()}" if len(servers) > 1
                     else f"{_loopback(config.listen)}:{port}")
    background = [reaper, asyncio.create_task(_settle(settlement, leader, events)),
                  asyncio.create_task(_keep_bonds(BondKeeper(store, proof, payments.bonds),
                                                  leader))]
    if shared:
        background.append(asyncio.create_task(_keep_leadership(leader)))
    if engine.dialect.name == "postgresql":
        background.append(asyncio.create_task(_keep_statistics(engine, leader)))
    if config.run_verifier:
        background.append(asyncio.create_task(_supervise_verifier(config, admin_address)))
    if (tracing := diagnostics.start_from_env()) is not None:
        background.append(tracing)
    http_port = None
    if http_socket is not None:
        from coordinator.dashboard import dashboard_routes

        app = web.build_app(coordinator_registry(engine), dashboard_routes(
            engine, blobs, payments, config.data_dir / "thumbnails"))
        background.append(asyncio.create_task(web.serve_http(app, http_socket)))
        http_port = http_socket.getsockname()[1]
    warm.prepare()  # in the background, ready for the first scene
    checkpointer = WalCheckpointer(db_url).start() if WalCheckpointer.wanted(db_url) else None
    return RunningCoordinator(servers=servers, port=port, store=store, background=background,
                              admin_address=admin_address, payments=payments,
                              nonce_journal=nonce_journal, http_port=http_port,
                              leader=leader, events=events, blob_http=blob_http,
                              storage=storage, verification=verification, warm=warm,
                              checkpointer=checkpointer)


def _blob_http(config: CoordinatorConfig, blobs: BlobStore, nonces: NonceCache,
               access: AccessPolicy, owners: BlobOwners,
               limiter: CallRateLimiter | None) -> BlobHttpServer | None:
    """The blob store's HTTP endpoint, bound (not yet serving); None when turned off."""
    if config.blob_http_listen is None or config.listen.startswith("unix:"):
        return None
    where = config.blob_http_listen or f"{config.listen.rsplit(':', 1)[0]}:0"
    host, _, port = where.rpartition(":")
    tls = (server_tls(config.tls_cert, config.tls_key)
           if config.tls_cert and config.tls_key else None)
    return BlobHttpServer((host.strip("[]") or "0.0.0.0", int(port)), blobs, nonces,
                          may_download=access.may_read_blob, owners=owners, limiter=limiter,
                          tls=tls)


def open_payments(config: CoordinatorConfig, engine: Any) -> Payments:
    """The chain (embedded by default) and the payments ledger over the farm's database."""
    chain = CountingChain(open_chain(config.cluster, data_dir=config.data_dir,
                                     treasury_keypair=config.treasury_keypair, mint=config.mint))
    return Payments(engine, chain, epochs=EpochConfig(length_seconds=config.epoch_seconds),
                    bonds=config.bonds)


def _is_local_url(cluster: str | None) -> bool:
    return bool(cluster) and any(h in str(cluster) for h in ("127.0.0.1", "localhost"))


async def _keep_leadership(leader: LeaderLock) -> None:
    """Keep the leader lock, or take it when its holder died (coordinator/storage/cluster.py)."""
    while True:
        await asyncio.sleep(LEADER_SECONDS)
        try:
            await asyncio.to_thread(leader.hold)
        except Exception:  # the next pass retries
            log.exception("leader lock check failed")


async def _settle(settlement: Settlement, leader: LeaderLock, events: JobEvents) -> None:
    """Book charges, refunds and epochs every second, and at once when a task's frames are
    all approved here (see coordinator.settlement)."""
    while True:
        await events.settle_due(SETTLE_SECONDS)
        if not leader.held:
            continue
        try:
            await asyncio.to_thread(settlement.sweep)
        except Exception:  # a chain outage must not stop the loop: the next sweep retries
            log.exception("settlement sweep failed")


async def _keep_statistics(engine: Any, leader: LeaderLock) -> None:
    """Keep PostgreSQL's table statistics fresh (storage/database.py analyze_changed_tables)."""
    while True:
        if leader.held:
            try:
                analyzed = await asyncio.to_thread(analyze_changed_tables, engine)
                if analyzed:
                    log.debug("analyzed %s", ", ".join(analyzed))
            except Exception:  # the next pass retries
                log.exception("analyzing tables failed")
        await asyncio.sleep(STATISTICS_SECONDS)


async def _keep_bonds(keeper: BondKeeper, leader: LeaderLock) -> None:
    """Slash quarantined cheaters' bonds and return bonds that are due (coordinator/bonding.py)."""
    while True:
        await asyncio.sleep(BOND_SECONDS)
        if not leader.held:
            continue
        try:
            await asyncio.to_thread(keeper.sweep)
        except Exception:  # the next pass retries
            log.exception("bond pass failed")


def _loopback(listen: str) -> str:
    host = listen.rsplit(":", 1)[0]
    return "127.0.0.1" if host in ("0.0.0.0", "[::]", "") else host


async def _supervise_verifier(config: CoordinatorConfig, address: str) -> None:
    """Run the built-in verifier as a child process; restart it if it dies."""
    work_dir = config.data_dir / "verifier"
    work_dir.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "verifier.cli", "--coordinator", address,
               "--work-dir", str(work_dir), "--keypair",
               str(admin_keypair_path(config.data_dir)), "--threads",
               str(config.verifier_threads), "--workers", str(config.verifier_workers),
               "--parent-pid", str(os.getpid())]
    if config.tls_cert and not address.startswith("unix:"):
        command += ["--tls-ca", str(config.tls_cert)]
    delay = 1.0
    while True:
        with open(work_dir / "verifier.log", "ab") as log_file:
            child = await asyncio.create_subprocess_exec(*command, stdout=log_file,
                                                         stderr=log_file)
        try:
            code = await child.wait()
        except asyncio.CancelledError:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), 15)
            except TimeoutError:
                child.kill()
            raise
        log.warning("verifier exited with %s; restarting in %.0fs", code, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 60)


def _build_server(
    servicers: tuple[Any, ...], interceptor: SignedCallInterceptor
) -> tuple[grpc.aio.Server, health_aio.HealthServicer]:
    server = grpc.aio.server(
        interceptors=[RpcMetricsInterceptor(), interceptor],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Nodes keep long streams open; answer their keepalive pings.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )
    jobs, nodes, blobs, verifier, admin = servicers
    farm_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
    farm_pb2_grpc.add_NodeServiceServicer_to_server(nodes, server)
    farm_pb2_grpc.add_BlobStoreServicer_to_server(blobs, server)
    farm_pb2_grpc.add_VerifierServiceServicer_to_server(verifier, server)
    farm_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [*SERVICE_NAMES, "grpc.health.v1.Health", reflection.SERVICE_NAME], server
    )
    return server, health


def _listen(server: grpc.aio.Server, config: CoordinatorConfig) -> int:
    if config.tls_cert and config.tls_key:
        credentials = grpc.ssl_server_credentials(
            [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
        )
        port = server.add_secure_port(config.listen, credentials)
    else:
        port = server.add_insecure_port(config.listen)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    return port


@dataclass
class _Reaped:
    """What one reaper pass changed, for the loop to announce."""

    requeued: list[TaskRecord]
    checks_requeued: int
    cancelled_jobs: list[str]


def _reap_once(store: FarmStore, proof: ProofStore, now: float) -> _Reaped:
    """(storage thread) One reaper pass: its queries walk every live lease and open check,
    milliseconds that must not stall the event loop (every call waits behind it there)."""
    requeued = store.requeue_expired(now)
    for task in requeued:
        if task.node_id:
            proof.record_event(task.node_id, NodeEvent.TIMEOUT, now, job_id=task.job_id,
                               frame=task.first_frame)
    return _Reaped(requeued, proof.requeue_expired_verifications(now),
                   proof.drop_cancelled_checks(now))


async def _reap_expired_leases(store: FarmStore, proof: ProofStore, events: JobEvents,
                               lease_seconds: float, leader: LeaderLock,
                               storage: StorageExecutor) -> None:
    """Put the tasks of nodes that stopped heartbeating (and stale checks) back in the queue."""
    interval = max(0.5, min(5.0, lease_seconds / 4))
    while True:
        await asyncio.sleep(interval)
        if not leader.held:
            continue
        try:
            reaped = await storage.run(_reap_once, store, proof, time.time())
            for task in reaped.requeued:
                log.warning("lease of task %s expired: job %s frames %d-%d back in the queue",
                            task.task_id, task.job_id, task.first_frame, task.last_frame)
                events.changed(task.job_id)
                events.work_queued()
            if reaped.checks_requeued:
                events.checks_queued()
            for job_id in reaped.cancelled_jobs:
                log.info("job %s cancelled: its checks are dropped, unverified frames are "
                         "not charged", job_id)
                events.changed(job_id)
        except Exception:  # the reaper must outlive a transient database error
            log.exception("reaping expired leases failed")


async def serve(config: CoordinatorConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully: in-flight calls finish."""
    running = await start_coordinator(config)
    # Everything loaded so far lives as long as the process: the collector skips it from now
    # on, in each full collection while serving and in the ones Python runs at exit (~1 CPU s
    # of a stopping coordinator's 1.7 s, measured here).
    gc.freeze()
    host = config.listen.rsplit(":", 1)[0]
    scheme = "TLS" if config.tls_cert else "plaintext"
    log.info("coordinator listening on %s:%d (%s), data in %s", host, running.port, scheme,
             config.data_dir)
    print(f"listening on {host}:{running.port}", flush=True)
    if running.http_port is not None:
        http_host = (config.http_listen or "").rpartition(":")[0]
        log.info("HTTP (/metrics) on %s:%d", http_host, running.http_port)
        print(f"http on {http_host}:{running.http_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down")
    await running.stop()

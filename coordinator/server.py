"""The coordinator process: wires storage, intake and servicers into one grpc.aio server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from coordinator.api.blob_service import BlobStoreServicer
from coordinator.api.job_service import JobServicer
from coordinator.api.node_service import NodeServicer
from coordinator.blobstore import BlobStore
from coordinator.events import JobEvents
from coordinator.intake import SUPPORTED_ENGINES, SceneIntake
from coordinator.storage.database import open_database, sqlite_url
from coordinator.storage.store import FarmStore, SchedulingPolicy
from frameproof.v1 import farm_pb2, farm_pb2_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
SERVICES = ("JobService", "NodeService", "BlobStore")


@dataclass(frozen=True)
class CoordinatorConfig:
    listen: str = "127.0.0.1:50051"
    data_dir: Path = Path(".farm")
    db_url: str | None = None  # default: SQLite under data_dir
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 10.0
    max_attempts: int = 3
    engines: tuple[str, ...] = field(default=SUPPORTED_ENGINES)


@dataclass
class RunningCoordinator:
    server: grpc.aio.Server
    port: int
    store: FarmStore
    reaper: asyncio.Task

    async def stop(self, grace: float = 5.0) -> None:
        self.reaper.cancel()
        await self.server.stop(grace)


async def start_coordinator(config: CoordinatorConfig) -> RunningCoordinator:
    """Open (or resume) the farm under config.data_dir and start serving."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    engine = open_database(config.db_url or sqlite_url(config.data_dir))
    policy = SchedulingPolicy(lease_seconds=config.lease_seconds, max_attempts=config.max_attempts)
    store = FarmStore(engine, policy)
    resumed = store.grant_grace(time.time())
    if resumed:
        log.info("resumed %d live lease(s) with a fresh grace period", resumed)
    blobs = BlobStore(config.data_dir / "blobs")
    events = JobEvents()
    intake = SceneIntake(store, blobs, config.data_dir / "scenes", engines=config.engines)

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Nodes keep long streams open; answer their keepalive pings.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
    )
    farm_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(store, intake, events), server)
    farm_pb2_grpc.add_NodeServiceServicer_to_server(
        NodeServicer(store, blobs, events, heartbeat_seconds=config.heartbeat_seconds), server
    )
    farm_pb2_grpc.add_BlobStoreServicer_to_server(BlobStoreServicer(blobs), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [farm_pb2.DESCRIPTOR.services_by_name[name].full_name for name in SERVICES]
    reflection.enable_server_reflection([*names, "grpc.health.v1.Health", reflection.SERVICE_NAME],
                                        server)
    port = server.add_insecure_port(config.listen)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    await server.start()
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    reaper = asyncio.create_task(_reap_expired_leases(store, events, config.lease_seconds))
    return RunningCoordinator(server=server, port=port, store=store, reaper=reaper)


async def _reap_expired_leases(store: FarmStore, events: JobEvents, lease_seconds: float) -> None:
    """Put the tasks of nodes that stopped heartbeating back in the queue."""
    interval = max(0.5, min(5.0, lease_seconds / 4))
    while True:
        await asyncio.sleep(interval)
        try:
            for task in store.requeue_expired(time.time()):
                log.warning("lease %s expired: job %s frames %d-%d back in the queue",
                            task.task_id, task.job_id, task.first_frame, task.last_frame)
                events.changed(task.job_id)
        except Exception:  # the reaper must outlive a transient database error
            log.exception("reaping expired leases failed")


async def serve(config: CoordinatorConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully: in-flight calls finish."""
    running = await start_coordinator(config)
    host = config.listen.rsplit(":", 1)[0]
    log.info("coordinator listening on %s:%d, data in %s", host, running.port, config.data_dir)
    print(f"listening on {host}:{running.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down")
    await running.stop()

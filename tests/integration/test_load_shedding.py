"""An overloaded coordinator answers new lease requests "retry later" at once.

A real coordinator in this process (its own gRPC server on loopback, signed calls), whose
storage thread the test holds busy: once SHED_BACKLOG calls wait there, LeaseTask answers
at once with a spread retry_after and no lease, while the queued work still completes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from coordinator.api.node_service import SHED_BACKLOG, SHED_RETRY_MS
from coordinator.metrics import EVENTS
from coordinator.server import CoordinatorConfig, start_coordinator
from frameproof.client import FarmClient
from frameproof.identity import load_or_create_keypair
from frameproof.v1 import farm_pb2 as pb


def test_a_backlogged_storage_thread_sheds_lease_requests(tmp_path: Path):
    async def scenario() -> None:
        running = await start_coordinator(CoordinatorConfig(
            listen="127.0.0.1:0", data_dir=tmp_path / "farm", run_verifier=False,
            admin_socket=False, blob_http_listen=None, machine_score=1.0,
            calls_per_second=0))
        keypair = load_or_create_keypair(tmp_path / "node.json")
        node_id = str(keypair.pubkey())
        client = FarmClient(f"127.0.0.1:{running.port}", keypair)

        async def lease(timeout: float) -> pb.LeaseTaskResponse:
            return await asyncio.to_thread(client.nodes.LeaseTask,
                                           pb.LeaseTaskRequest(node_id=node_id), timeout=timeout)
        release = threading.Event()
        held: list[asyncio.Task[None]] = []
        try:
            await asyncio.to_thread(client.nodes.RegisterNode,
                                    pb.RegisterNodeRequest(node_id=node_id, name="n"), timeout=30)
            # Nothing queued: an idle lease request long-polls (answered empty near its
            # deadline), it is not shed.
            started = time.monotonic()
            idle = await lease(3.5)
            assert not idle.HasField("lease") and time.monotonic() - started > 1.0

            held = [asyncio.create_task(running.storage.run(release.wait, 30))
                    for _ in range(SHED_BACKLOG)]
            while running.storage.backlog < SHED_BACKLOG:
                await asyncio.sleep(0.01)
            shed_before = EVENTS.get_sample_value("frameproof_leases_shed_total") or 0.0
            started = time.monotonic()
            answer = await lease(10)
            assert time.monotonic() - started < 2.0, "answered at once, not after the backlog"
            assert not answer.HasField("lease")
            assert SHED_RETRY_MS[0] <= answer.retry_after_ms <= SHED_RETRY_MS[1]
            assert EVENTS.get_sample_value("frameproof_leases_shed_total") == shed_before + 1
            # A delivery is never shed (its results keep leased work alive) but the lease it
            # asks for is, decided as it arrives.
            delivery = asyncio.create_task(asyncio.to_thread(
                client.nodes.DeliverTasks, pb.DeliverTasksRequest(
                    node_id=node_id, max_tasks=2, results=[pb.LeaseResult(
                        lease_id="ab" * 16, outputs=[pb.FrameOutput(frame=1)])]), timeout=30))
            while running.storage.backlog <= SHED_BACKLOG:
                await asyncio.sleep(0.01)

            release.set()  # the queued calls all finish; then leases are served again
            await asyncio.gather(*held)
            delivered = await delivery
            assert [o.accepted for o in delivered.results] == [False], delivered  # answered
            assert not delivered.next.HasField("lease")
            assert SHED_RETRY_MS[0] <= delivered.next.retry_after_ms <= SHED_RETRY_MS[1]
            assert EVENTS.get_sample_value("frameproof_leases_shed_total") == shed_before + 2
            assert running.storage.backlog == 0
            started = time.monotonic()
            again = await lease(3.5)
            assert not again.HasField("lease") and time.monotonic() - started > 1.0
        finally:
            release.set()
            await asyncio.gather(*held, return_exceptions=True)
            client.close()
            await running.stop()

    asyncio.run(scenario())

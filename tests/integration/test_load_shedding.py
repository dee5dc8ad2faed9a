"""An overloaded coordinator holds new lease requests back instead of queueing them.

A real coordinator in this process (its own gRPC server on loopback, signed calls), whose
storage thread the test holds busy: once SHED_BACKLOG calls wait there, a LeaseTask waits on
the event loop without adding to them, is served once they finish, and is answered "retry
later" (a spread retry_after, no lease) when its long poll ends first; the queued work still
completes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from coordinator.api.node_service import LONG_POLL_MARGIN, SHED_BACKLOG, SHED_RETRY_MS
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
            # A deadline too short to wait (the long poll keeps LONG_POLL_MARGIN): at once.
            started = time.monotonic()
            answer = await lease(LONG_POLL_MARGIN)
            assert time.monotonic() - started < LONG_POLL_MARGIN, "answered at once"
            assert not answer.HasField("lease")
            assert SHED_RETRY_MS[0] <= answer.retry_after_ms <= SHED_RETRY_MS[1]
            assert EVENTS.get_sample_value("frameproof_leases_shed_total") == shed_before + 1
            # With time to wait: parked on the loop, not queued behind the backlog, and
            # answered "retry later" when its long poll ends with the backlog still there.
            started = time.monotonic()
            parked = asyncio.create_task(lease(LONG_POLL_MARGIN + 1.5))
            await asyncio.sleep(0.5)
            assert running.storage.backlog == SHED_BACKLOG, "waits without adding to it"
            answer = await parked
            assert time.monotonic() - started >= 1.0, "waited for room first"
            assert not answer.HasField("lease")
            assert SHED_RETRY_MS[0] <= answer.retry_after_ms <= SHED_RETRY_MS[1]
            assert EVENTS.get_sample_value("frameproof_leases_shed_total") == shed_before + 2
            # A request parked when the backlog clears is let in and long-polls as usual.
            waiting = asyncio.create_task(lease(6.0))
            await asyncio.sleep(0.5)
            assert running.storage.backlog == SHED_BACKLOG
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
            waited = await waiting
            assert not waited.HasField("lease") and waited.retry_after_ms < SHED_RETRY_MS[0], (
                "let in, it long-polled an empty queue: not shed")
            assert EVENTS.get_sample_value("frameproof_leases_shed_total") == shed_before + 3
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

"""AdminService: what only the coordinator's operator may do."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from coordinator.access import AccessPolicy
from coordinator.api.auth import current_caller
from coordinator.api.errors import maps_domain_errors, require_id
from coordinator.api.node_service import standing_message
from coordinator.domain.errors import Forbidden, NotFound
from coordinator.domain.pricing import MS_PER_HOUR
from coordinator.payments import Payments
from coordinator.payments.results import EpochSummary
from coordinator.settlement import screened_participants
from coordinator.storage.interfaces import NodeStore, ReputationStore
from coordinator.storage.proof import ProofStore
from coordinator.storage.quarantine import Quarantine
from coordinator.storage.store import FarmStore
from frameproof.v1 import farm_pb2 as pb
from frameproof.v1 import farm_pb2_grpc

log = logging.getLogger(__name__)


@maps_domain_errors
class AdminServicer(farm_pb2_grpc.AdminServiceServicer):
    def __init__(self, store: NodeStore, proof: ReputationStore, access: AccessPolicy,
                 payments: Payments, *, close_epoch: Callable[[float], EpochSummary]) -> None:
        self.store = store
        self.proof = proof
        self.access = access
        self.payments = payments
        self.close_epoch = close_epoch  # the epoch close at a time (`close_epoch_now`, bound)

    async def CloseEpoch(self, request, context):
        await self._admin(context)
        summary = await asyncio.to_thread(self.close_epoch, time.time())
        return epoch_message(summary)

    async def CheckLedger(self, request, context):
        await self._admin(context)
        report = await asyncio.to_thread(self.payments.check)
        return pb.LedgerReport(ok=report.ok, lines=report.lines)

    async def SetQuarantine(self, request, context):
        await self._admin(context)
        node_id = await require_id(context, request.node_id, "node_id")
        node = self.store.get_node(node_id)
        if node is None:
            raise NotFound(f"no node {node_id}")
        reason = request.reason[:500] or "set by the operator"
        self.proof.set_quarantine(node_id, request.quarantined, reason, time.time())
        log.warning("node %s %s by the operator: %s", node_id[:12],
                    "quarantined" if request.quarantined else "released", reason)
        return standing_message(node, self.proof.standing_record(node_id))

    async def _admin(self, context: grpc.aio.ServicerContext) -> None:
        if not self.access.is_admin(current_caller()):
            raise Forbidden("administration needs the coordinator's admin key or its "
                            "local admin socket")


def close_epoch_now(store: FarmStore, proof: ProofStore, payments: Payments,
                    now: float) -> EpochSummary:
    """Close the open epoch at once (the operator's `render-coordinator epoch close`)."""
    nodes, weights = screened_participants(store, proof, payments, Quarantine(payments.engine),
                                           now)
    return payments.close_epoch(now, nodes, weights)


def epoch_message(summary: EpochSummary) -> pb.EpochSummary:
    return pb.EpochSummary(
        epoch=summary.epoch,
        emission=summary.emission,
        fee=summary.fee,
        availability=summary.availability_pool,
        payouts=[pb.EpochEarning(epoch=summary.epoch, credits=p.credits / MS_PER_HOUR,
                                 minted=p.amount, signature=p.signature or "",
                                 closed_unix_ms=int(summary.ended_at * 1000))
                 for p in summary.payouts],
        node_ids=[p.node_id for p in summary.payouts],
        closed_unix_ms=int(summary.ended_at * 1000),
    )

"""AdminService: what only the coordinator's operator may do."""

from __future__ import annotations

import logging
import time

import grpc

from coordinator.access import AccessPolicy
from coordinator.api.auth import current_caller
from coordinator.api.errors import require_id
from coordinator.api.node_service import standing_message
from coordinator.storage.proof import ProofStore
from coordinator.storage.store import FarmStore
from frameproof.v1 import farm_pb2_grpc

log = logging.getLogger(__name__)


class AdminServicer(farm_pb2_grpc.AdminServiceServicer):
    def __init__(self, store: FarmStore, proof: ProofStore, access: AccessPolicy) -> None:
        self.store = store
        self.proof = proof
        self.access = access

    async def SetQuarantine(self, request, context):
        await self._admin(context)
        node_id = await require_id(context, request.node_id, "node_id")
        node = self.store.get_node(node_id)
        if node is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no node {node_id}")
        reason = request.reason[:500] or "set by the operator"
        self.proof.set_quarantine(node_id, request.quarantined, reason, time.time())
        log.warning("node %s %s by the operator: %s", node_id[:12],
                    "quarantined" if request.quarantined else "released", reason)
        return standing_message(node, self.proof.standing_record(node_id))

    async def _admin(self, context: grpc.aio.ServicerContext) -> None:
        if not self.access.is_admin(current_caller()):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "administration needs the coordinator's admin key or its "
                                "local admin socket")

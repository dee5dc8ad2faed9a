"""NodeService: what render nodes call to register, lease, heartbeat and report."""

from __future__ import annotations

import json
import logging
import time

import grpc
from google.protobuf.json_format import MessageToDict

from coordinator.api import convert
from coordinator.api.auth import current_caller
from coordinator.api.errors import require_id
from coordinator.blobstore import BlobStore
from coordinator.events import JobEvents
from coordinator.storage.models import TaskRecord
from coordinator.storage.store import FarmStore, FrameOutputRecord, LeaseLost
from frameproof.v1 import farm_pb2 as pb
from frameproof.v1 import farm_pb2_grpc

log = logging.getLogger(__name__)

IDLE_RETRY_MS = 1000
MAX_REASON_LENGTH = 4000


class NodeServicer(farm_pb2_grpc.NodeServiceServicer):
    def __init__(
        self, store: FarmStore, blobs: BlobStore, events: JobEvents, *, heartbeat_seconds: float
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.events = events
        self.heartbeat_seconds = heartbeat_seconds

    async def RegisterNode(self, request, context):
        node_id = await self._own_node_id(request.node_id, context)
        capabilities = json.dumps(MessageToDict(request.capabilities))
        self.store.register_node(node_id, request.name[:200], capabilities, time.time())
        log.info("node %s registered (%s)", node_id[:12], request.name)
        return pb.RegisterNodeResponse(
            node_id=node_id,
            lease_seconds=int(self.store.policy.lease_seconds),
            heartbeat_seconds=max(1, int(self.heartbeat_seconds)),
        )

    async def LeaseTask(self, request, context):
        node_id = await self._known_node(request.node_id, context)
        now = time.time()
        self.store.touch_node(node_id, now)
        task = self.store.lease_next_task(node_id, now)
        if task is None:
            return pb.LeaseTaskResponse(retry_after_ms=IDLE_RETRY_MS)
        self.events.changed(task.job_id)
        log.info("lease %s: job %s frames %d-%d to node %s", task.lease_id, task.job_id,
                 task.first_frame, task.last_frame, node_id[:12])
        return pb.LeaseTaskResponse(lease=self._lease_message(task))

    async def Heartbeat(self, request, context):
        node_id = await self._known_node(request.node_id, context)
        lease_id = await require_id(context, request.lease_id, "lease_id")
        try:
            task = self.store.extend_lease(lease_id, node_id, time.time())
        except LeaseLost as error:
            return pb.HeartbeatResponse(keep_going=False, reason=str(error))
        return pb.HeartbeatResponse(
            keep_going=True, expires_unix_ms=int((task.lease_expires_at or 0) * 1000)
        )

    async def CompleteTask(self, request, context):
        node_id = await self._known_node(request.node_id, context)
        lease_id = await require_id(context, request.lease_id, "lease_id")
        outputs = []
        for output in request.outputs:
            sha = output.image.sha256
            if not self.blobs.has(sha) or self.blobs.size(sha) != output.image.size:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"frame {output.frame}: image {sha[:12]} was not uploaded; upload it first",
                )
            outputs.append(
                FrameOutputRecord(
                    frame=output.frame,
                    sha256=sha,
                    size=output.image.size,
                    extension=self._extension_for(lease_id),
                    render_seconds=max(0.0, output.render_seconds),
                    blender_version=output.blender_version[:64],
                    device=output.device[:64],
                )
            )
        try:
            task = self.store.complete_task(lease_id, node_id, outputs, time.time())
        except LeaseLost as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"lease lost: {error}")
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        self.events.changed(task.job_id)
        log.info("lease %s done: job %s frames %d-%d", lease_id, task.job_id,
                 task.first_frame, task.last_frame)
        return pb.CompleteTaskResponse(accepted=True)

    async def FailTask(self, request, context):
        node_id = await self._known_node(request.node_id, context)
        lease_id = await require_id(context, request.lease_id, "lease_id")
        reason = request.reason[:MAX_REASON_LENGTH] or "no reason given"
        try:
            task = self.store.fail_task(lease_id, node_id, reason, time.time())
        except LeaseLost as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"lease lost: {error}")
        self.events.changed(task.job_id)
        log.warning("lease %s failed on node %s: %s", lease_id, node_id[:12], reason)
        return pb.FailTaskResponse(will_retry=task.state == "queued")

    # ------------------------------------------------------------ helpers

    async def _own_node_id(self, node_id: str, context: grpc.aio.ServicerContext) -> str:
        """A node speaks only for itself: node_id must be the key that signed the call."""
        node_id = await require_id(context, node_id, "node_id")
        if node_id != current_caller().pubkey:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "node_id is not the public key that signed this call")
        return node_id

    async def _known_node(self, node_id: str, context: grpc.aio.ServicerContext) -> str:
        node_id = await self._own_node_id(node_id, context)
        if self.store.get_node(node_id) is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "unknown node: call RegisterNode first"
            )
        return node_id

    def _extension_for(self, lease_id: str) -> str:
        task = self.store.task_for_lease(lease_id)
        job = self.store.get_job(task.job_id) if task else None
        if job is None:
            return "png"
        return convert.extension_of(convert.settings_from_json(job.settings_json))

    def _lease_message(self, task: TaskRecord) -> pb.Lease:
        job = self.store.get_job(task.job_id)
        assert job is not None
        scene = self.store.get_scene(job.scene_id)
        assert scene is not None
        return pb.Lease(
            lease_id=task.lease_id or "",
            task_id=task.task_id,
            job_id=task.job_id,
            scene_id=job.scene_id,
            main_file=scene.main_file,
            frames=list(range(task.first_frame, task.last_frame + 1)),
            settings=convert.settings_from_json(job.settings_json),
            expires_unix_ms=int((task.lease_expires_at or 0) * 1000),
        )

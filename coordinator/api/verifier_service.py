"""VerifierService: hands out Proof-of-Render checks and applies their verdicts.

Two kinds of verifier call it: the coordinator's own (its key in ``--verifier-pubkey``, or the
built-in child) and *peers*, Tier 1 nodes that verify other nodes' frames with the same
`render-verifier` and their node key, so verification grows with the network
(:class:`coordinator.storage.proof.Peer` says what a peer may check, and how it is audited).
"""

from __future__ import annotations

import logging
import time

import grpc

from coordinator.access import AccessPolicy
from coordinator.api import convert
from coordinator.api.auth import LOCAL_ADMIN, current_caller
from coordinator.api.errors import maps_domain_errors, require_id
from coordinator.domain.errors import Forbidden, InvalidRequest, Refused
from coordinator.events import JobEvents
from coordinator.storage.executor import StorageExecutor
from coordinator.storage.interfaces import JobStore, VerificationStore
from coordinator.storage.proof import (
    FinishedVerification,
    LeasedCheck,
    Peer,
    VerificationGone,
    VerificationResult,
)
from coordinator.storage.quarantine import TRANSIENT, VERIFICATION, Quarantine
from frameproof.v1 import farm_pb2 as pb
from frameproof.v1 import farm_pb2_grpc

log = logging.getLogger(__name__)

TILES_PER_CHECK = 3
IDLE_RETRY_MS = 100  # after a long poll came back empty: ask again soon
LONG_POLL_SECONDS = 20.0  # an idle verifier waits this long for a check at most (as nodes)
LONG_POLL_MARGIN = 2.0  # answer this long before the caller's deadline


@maps_domain_errors
class VerifierServicer(farm_pb2_grpc.VerifierServiceServicer):
    """Database work runs on a thread of its own (``storage``), never on the event loop:
    with PostgreSQL each call is several round trips, which on the loop held up every other
    call, nodes' heartbeats most (docs/BENCHMARKS.md, "verifier calls off the event loop
    (stop 26)"). Events are still raised on the loop."""

    def __init__(self, store: JobStore, proof: VerificationStore, access: AccessPolicy,
                 events: JobEvents, quarantine: Quarantine, *,
                 lease_seconds: float | None = None,
                 storage: StorageExecutor | None = None) -> None:
        self.store = store
        self.proof = proof
        self.access = access
        self.events = events
        self.lease_seconds = lease_seconds  # None: sized from the check's measured cost
        self.quarantine = quarantine
        self.storage = storage or StorageExecutor(name="verification")

    async def LeaseVerification(self, request, context):
        """Long poll: an idle verifier waits here (up to LONG_POLL_SECONDS, within its
        deadline) until checks are queued; a frame delivered meanwhile is leased for its
        check at once instead of at the verifier's next ask."""
        verifier_id, is_peer = await self._verifier(request.verifier_id, context)
        peer = None
        if is_peer:
            if not request.blender_version or not request.device:
                raise InvalidRequest("a peer verifier must say its blender_version and device")
            peer = Peer(verifier_id, request.blender_version[:64], request.device[:64])
        remaining = context.time_remaining()
        deadline = time.monotonic() + min(LONG_POLL_SECONDS,
                                          max(0.0, (remaining or 0.0) - LONG_POLL_MARGIN))
        while True:
            queued = self.events.subscribe_checks()
            leased = await self.storage.run(self._lease_on_storage, verifier_id, peer)
            left = deadline - time.monotonic()
            if leased is not None or left <= 0:
                break
            await self.events.wait(queued, left)
        if leased is None:
            return pb.LeaseVerificationResponse(retry_after_ms=IDLE_RETRY_MS)
        check, job, frame = leased
        if job is None or frame is None:
            log.warning("verification %s has no frame to check", check.verification_id)
            return pb.LeaseVerificationResponse(retry_after_ms=IDLE_RETRY_MS)
        # The node's passes file, for a denoised frame checked on its noisy pass.
        passes = (pb.BlobRef(sha256=frame.passes_sha256, size=frame.passes_size or 0)
                  if frame.passes_sha256 else None)
        return pb.LeaseVerificationResponse(task=pb.VerificationTask(
            verification_id=check.verification_id,
            job_id=check.job_id,
            frame=check.frame,
            scene_id=job.scene_id,
            main_file=job.main_file,
            settings=convert.settings_from_json(job.settings_json),
            image=pb.BlobRef(sha256=frame.blob_sha256, size=frame.blob_size),
            node_id=check.node_id,
            node_blender_version=check.blender_version,
            node_device=check.device,
            render_tiles=check.render_tiles,
            tile_count=TILES_PER_CHECK,
            expires_unix_ms=int((check.lease_expires_at or 0) * 1000),
            passes=passes,
        ))

    def _lease_on_storage(self, verifier_id: str, peer: Peer | None) -> LeasedCheck | None:
        """(verification thread) A check for the verifier, with its job's facts and frame."""
        return self.proof.lease_check(verifier_id, time.time(), self.lease_seconds, peer)

    async def SubmitVerification(self, request, context):
        verifier_id, is_peer = await self._verifier(request.verifier_id, context)
        verification_id = await require_id(context, request.verification_id, "verification_id")
        details = {
            "render_seconds": request.render_seconds,
            "tiles": [
                {"x": t.x, "y": t.y, "w": t.width, "h": t.height, "mode": t.mode,
                 "outcome": t.outcome, "scores": dict(t.scores), "reason": t.reason}
                for t in request.tiles[:64]
            ],
        }
        result = VerificationResult(passed=request.passed, reason=request.reason[:2000],
                                    mode=request.mode[:32], pixel_sha256=request.pixel_sha256[:64],
                                    details=details)
        try:
            finished = await self.storage.run(self._finish_on_storage, verification_id,
                                              verifier_id, result, is_peer)
        except VerificationGone as error:
            raise Refused(str(error)) from error
        if finished is None:  # it raised: quarantined, its frame waits for the operator
            raise Refused(f"verification {verification_id} could not be applied; it is "
                          "held for the operator (render-coordinator doctor)")
        self.events.changed(finished.job_id)
        self.events.node_changed(finished.node_id)  # a bounded node's limits may have lifted
        if finished.task_done:
            self.events.settle_soon()
        if finished.audit:
            self.events.checks_queued()  # a coordinator verifier checks the peer's pass
            log.info("job %s frame %d: peer %s said %s; a coordinator verifier decides",
                     finished.job_id, finished.frame, verifier_id[:12],
                     "pass" if request.passed else "FAIL")
        if finished.contradicted_peer:
            peer_id, change = finished.contradicted_peer
            log.warning("peer verifier %s contradicted by the audit of job %s frame %d: now %s",
                        peer_id[:12], finished.job_id, finished.frame, change.tier_after)
        if finished.rejected:
            self.events.work_queued()  # the task is back in the queue for another node
            log.warning("job %s frame %d from node %s REJECTED: %s", finished.job_id,
                        finished.frame, finished.node_id[:12], request.reason)
        if finished.change and finished.change.tier_after != finished.change.tier_before:
            log.info("node %s: %s -> %s", finished.node_id[:12], finished.change.tier_before,
                     finished.change.tier_after)
        return pb.SubmitVerificationResponse(accepted=True)

    def _finish_on_storage(self, verification_id: str, verifier_id: str,
                           result: VerificationResult,
                           is_peer: bool) -> FinishedVerification | None:
        """(verification thread) Apply the verdict; None when applying it raised, and the
        check is then held for the operator (quarantined)."""
        finished = None
        with self.quarantine.isolated(VERIFICATION, verification_id,
                                      expected=(VerificationGone, *TRANSIENT)):
            finished = self.proof.finish_verification(verification_id, verifier_id, result,
                                                      time.time(), peer=is_peer)
        if finished is None:
            self.proof.hold_verification(verification_id)
        return finished

    async def ExtendVerification(self, request, context):
        verifier_id, _ = await self._verifier(request.verifier_id, context)
        verification_id = await require_id(context, request.verification_id, "verification_id")
        renewal = await self.storage.run(self.proof.extend_verification, verification_id,
                                         verifier_id, time.time())
        if not renewal.keep:
            log.info("verifier %s told to stop: %s", verifier_id[:12], renewal.reason)
        return pb.ExtendVerificationResponse(keep_going=renewal.keep,
                                             expires_unix_ms=int(renewal.expires_at * 1000),
                                             reason=renewal.reason)

    async def ReleaseVerification(self, request, context):
        verifier_id, _ = await self._verifier(request.verifier_id, context)
        verification_id = await require_id(context, request.verification_id, "verification_id")
        released = await self.storage.run(self.proof.release_verification, verification_id,
                                          verifier_id,
                                          request.reason[:500] or "no reason given",
                                          time.time())
        if released:
            self.events.checks_queued()
            log.warning("verifier %s could not run verification %s: %s", verifier_id[:12],
                        verification_id, request.reason[:200])
        return pb.ReleaseVerificationResponse(released=released)

    async def _verifier(self, verifier_id: str,
                        context: grpc.aio.ServicerContext) -> tuple[str, bool]:
        """The calling verifier's id, and whether it is a peer (a Tier 1 node)."""
        caller = current_caller()
        if caller == LOCAL_ADMIN:  # the local socket: the OS vouched, the id is the verifier's
            return await require_id(context, verifier_id, "verifier_id"), False
        if verifier_id and verifier_id != caller.pubkey:
            raise Forbidden("verifier_id is not the public key that signed this call")
        if self.access.is_verifier(caller):
            return caller.pubkey, False
        if await self.storage.run(self.proof.peer_may_verify, caller.pubkey):
            return caller.pubkey, True
        raise Forbidden("this key is neither a verifier of this coordinator nor a Tier 1 node")

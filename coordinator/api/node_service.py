"""NodeService: what render nodes call to register, lease, heartbeat and report."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import grpc
from cachetools import LRUCache
from google.protobuf.json_format import MessageToDict

from coordinator.access import AccessPolicy
from coordinator.api import convert
from coordinator.api.auth import current_caller
from coordinator.api.blob_service import write_blobs
from coordinator.api.errors import maps_domain_errors, require_id, status_of
from coordinator.blobstore import BlobNotFound, BlobStore
from coordinator.bonding import release_if_due
from coordinator.domain.errors import DomainError, InvalidRequest, NotFound, Refused
from coordinator.domain.nodes import (
    benchmark_score,
    check_own_node,
    failure_event,
    history_limit,
)
from coordinator.domain.pricing import MS_PER_HOUR
from coordinator.domain.reputation import check_probability
from coordinator.domain.sampling import sample_frames
from coordinator.domain.states import TaskState
from coordinator.events import JobEvents
from coordinator.metrics import LEASES_SHED
from coordinator.payments import Payments
from coordinator.payments.results import InsufficientBalance, PaymentError
from coordinator.storage.executor import StorageExecutor
from coordinator.storage.interfaces import NodeWorkStore
from coordinator.storage.leasing import (
    Completion,
    Grant,
    LeasedTask,
    LeaseHotPath,
    LeaseResult,
    NodeGate,
)
from coordinator.storage.models import (
    NodeRecord,
    NodeStandingRecord,
    ReputationEventRecord,
    TaskRecord,
)
from coordinator.storage.owners import BlobOwners
from coordinator.storage.pricing_store import PricingStore
from coordinator.storage.proof import ProofStore, standing_of
from coordinator.storage.store import FarmStore, FrameOutputRecord, JobFacts, LeaseLost
from frameproof.limits import BATCH_UPLOAD_BLOBS, FRAME_LOG_BYTES
from frameproof.manifest import is_sha256
from frameproof.receipts import (
    PROOF_STEP,
    TREE_DEPTH,
    TREES_FEATURE,
    settings_digest,
    verify_receipt,
)
from frameproof.render_settings import passes_limit
from frameproof.v1 import farm_pb2 as pb
from frameproof.v1 import farm_pb2_grpc

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

TOUCH_SECONDS = 5.0
IDLE_RETRY_MS = 100  # after a long poll came back empty: ask again soon
LONG_POLL_SECONDS = 20.0
LONG_POLL_MARGIN = 2.0  # answer this long before the caller's deadline
QUARANTINED_RETRY_MS = 30_000
# Storage calls waiting at which new lease requests wait on the event loop (StorageExecutor.
# room) until there is room, and are answered "retry later" if their long poll ends first:
# heartbeats and completions (work already leased) go first, and a request that would wait
# past its deadline costs nothing (the two-coordinator bench at 1,000 nodes: queued leases
# timed out by thousands, and leases expired because their heartbeats queued behind them).
SHED_BACKLOG = 32
# Spread, so shed nodes do not come back together; long enough that the calls of shed nodes
# (each signed, its nonce journalled) do not become the load: a shed node has no work anyway.
SHED_RETRY_MS = (5_000, 15_000)
# A new identity waiting on its own verifications is woken by them (events.node_changed);
# it also re-asks this often, for a limit lifted by something not signalled.
BOUNDED_RECHECK_SECONDS = 10.0
MAX_REASON_LENGTH = 4000
KNOWN_NODES_CACHED = 10_000  # registered nodes remembered without a database read
JOB_SETTINGS_CACHED = 2_000  # jobs whose parsed render settings are kept
SCENES_REMEMBERED = 4  # scenes per node taken to be in its cache (scene affinity)
MAX_BOND_BASE_UNITS = 2**63 - 1  # what the wire's int64 and the ledger's BIGINT hold
MAX_SIGNED_BOND_BYTES = 1232  # a Solana transaction's size limit
MAX_OUTPUTS_PER_CALL = 1000  # CompleteTasks: frames of all its leases (one transaction's size)

@maps_domain_errors
class NodeServicer(farm_pb2_grpc.NodeServiceServicer):
    def __init__(
        self,
        store: FarmStore,
        proof: ProofStore,
        blobs: BlobStore,
        events: JobEvents,
        payments: Payments,
        *,
        heartbeat_seconds: float,
        access: AccessPolicy | None = None,
        owners: BlobOwners | None = None,
        storage: StorageExecutor | None = None,
        shed_backlog: int = SHED_BACKLOG,
    ) -> None:
        self.store = store
        self.shed_backlog = shed_backlog
        self.access = access  # who sees which job ids in a node's history; None: everyone
        self.owners = owners  # a node delivers only images it uploaded; None: any stored one
        self.proof = proof
        self.blobs = blobs
        self.events = events
        self.payments = payments
        self.heartbeat_seconds = heartbeat_seconds
        # Bounded: the coordinator runs for months while nodes and jobs keep coming.
        self._touched: dict[str, float] = {}  # node id -> last liveness write (recent only)
        self._last_prune = 0.0
        self._registered: LRUCache[str, bool] = LRUCache(maxsize=KNOWN_NODES_CACHED)
        self._settings: LRUCache[str, pb.RenderSettings] = LRUCache(maxsize=JOB_SETTINGS_CACHED)
        self._settings_lock = threading.Lock()
        # storage thread only: the digest every receipt of a job's frames signs
        self._digests: LRUCache[str, str] = LRUCache(maxsize=JOB_SETTINGS_CACHED)
        # The network's own clock on each lease: node speed measured here, not claimed.
        self.pricing = PricingStore(store.engine)
        self.storage = storage or StorageExecutor()  # database work runs off the event loop
        self.leasing: NodeWorkStore = LeaseHotPath(
            store, payments.bonds.minimum if payments else 0,
            payments.bonds.policy if payments else None)
        # The scenes each node recently leased, so probably holds (scene affinity).
        self._scenes: LRUCache[str, tuple[str, ...]] = LRUCache(maxsize=KNOWN_NODES_CACHED)

    async def RegisterNode(self, request, context):
        node_id = await self._own_node_id(request.node_id, context)
        capabilities = json.dumps(MessageToDict(request.capabilities))
        score = benchmark_score(request.capabilities.benchmark_score)
        await self.storage.run(self.store.register_node, node_id, request.name[:200],
                               capabilities, time.time(), score)
        log.info("node %s registered (%s)", node_id[:12], request.name)
        return pb.RegisterNodeResponse(
            node_id=node_id,
            lease_seconds=int(self.store.policy.lease_seconds),
            heartbeat_seconds=max(1, int(self.heartbeat_seconds)),
            features=[TREES_FEATURE],
        )

    async def LeaseTask(self, request, context):
        """Long poll: an idle node waits here (up to LONG_POLL_SECONDS) until work appears.

        Idle nodes then cost no requests; they wake only when tasks become leasable.
        """
        node_id = await self._known_node(request.node_id, context)
        remaining = context.time_remaining()
        wait = min(LONG_POLL_SECONDS, max(0.0, (remaining or 0.0) - LONG_POLL_MARGIN))
        deadline = time.monotonic() + wait
        first = True
        while True:
            # Parked, not queued, while the storage thread is backlogged; "retry later" only
            # when the long poll ends first.
            if not await self.storage.room(self.shed_backlog, deadline - time.monotonic()):
                LEASES_SHED.inc()
                return pb.LeaseTaskResponse(retry_after_ms=random.randint(*SHED_RETRY_MS))
            # Both taken before the look, so no change between the look and the wait is lost.
            wake = [self.events.subscribe_work(), self.events.subscribe_node(node_id)]
            grants, gate = await self.storage.run(self._lease_once, node_id, first,
                                                  request.max_tasks)
            first = False
            if gate.quarantined:
                return pb.LeaseTaskResponse(retry_after_ms=QUARANTINED_RETRY_MS)
            if grants:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                return pb.LeaseTaskResponse(retry_after_ms=IDLE_RETRY_MS)
            if gate.limits.bounded:  # its limits may lift when its frames are verified: the
                # verifier's event wakes it; the timer only covers a change nothing signalled
                left = min(left, BOUNDED_RECHECK_SECONDS)
            await self.events.wait_any(wake, left)
        return self._granted(node_id, grants)

    def _granted(self, node_id: str, grants: list[Grant]) -> pb.LeaseTaskResponse:
        """The answer that hands the node its new leases (at least one)."""
        for grant in grants:
            self.events.changed(grant.job_id)
            log.debug("lease %s: job %s frames %d-%d to node %s", grant.lease_id,
                      grant.job_id, grant.first_frame, grant.last_frame, node_id[:12])
        return pb.LeaseTaskResponse(lease=self._lease_message(grants[0]),
                                    more_leases=[self._lease_message(g) for g in grants[1:]])

    def _lease_once(self, node_id: str, touch: bool, max_tasks: int
                    ) -> tuple[list[Grant], NodeGate]:
        """One look at the queue for the node (storage thread): its gate, then a claim."""
        now = time.time()
        return self._leased(node_id, self.leasing.lease(
            node_id, now, self._scenes.get(node_id, ()), max_tasks,
            seen=touch and self._touch_due(node_id, now)))

    def _leased(self, node_id: str, leased: tuple[list[Grant], NodeGate]
                ) -> tuple[list[Grant], NodeGate]:
        """The leases granted, with the scenes they make the node hold (for affinity)."""
        for grant in leased[0]:
            held = self._scenes.get(node_id, ())
            if grant.job.scene_id not in held:  # the node downloads it for this lease
                self._scenes[node_id] = (grant.job.scene_id, *held)[:SCENES_REMEMBERED]
        return leased

    async def Heartbeat(self, request, context):
        node_id = await self._known_node(request.node_id, context)
        lease_id = await require_id(context, request.lease_id, "lease_id")
        try:
            expires = await self.storage.run(self.leasing.extend, lease_id, node_id,
                                             time.time())
        except LeaseLost as error:
            return pb.HeartbeatResponse(keep_going=False, reason=str(error))
        return pb.HeartbeatResponse(keep_going=True, expires_unix_ms=int(expires * 1000))

    async def HeartbeatLeases(self, request, context):
        """Heartbeat for each of the node's leases in one call (one transaction)."""
        node_id = await self._known_node(request.node_id, context)
        lease_ids = list(request.lease_ids)
        found = await self.storage.run(self.leasing.extend_many, lease_ids, node_id,
                                       time.time())
        return pb.HeartbeatLeasesResponse(leases=[
            pb.LeaseRenewal(lease_id=lease_id, keep_going=False, reason=str(renewal))
            if isinstance(renewal, LeaseLost) else
            pb.LeaseRenewal(lease_id=lease_id, keep_going=True,
                            expires_unix_ms=int(renewal * 1000))
            for lease_id, renewal in zip(lease_ids, found, strict=True)])

    async def CompleteTask(self, request, context):
        node_id = await self._known_node(request.node_id, context)
        lease_id = await require_id(context, request.lease_id, "lease_id")
        (done,) = await self._deliver(node_id, [lease_result(lease_id, request.outputs)])
        if done.error is not None:
            raise refusal(done.error)
        return pb.CompleteTaskResponse(accepted=True)

    async def CompleteTasks(self, request, context):
        """CompleteTask for several leases in one call: one transaction, each lease checked
        and answered on its own (a refused lease never refuses the others)."""
        node_id = await self._known_node(request.node_id, context)
        if sum(len(result.outputs) for result in request.results) > MAX_OUTPUTS_PER_CALL:
            raise InvalidRequest(f"at most {MAX_OUTPUTS_PER_CALL} outputs in one call")
        done = await self._deliver(node_id, [lease_result(r.lease_id, r.outputs)
                                             for r in request.results])
        return pb.CompleteTasksResponse(results=[outcome(d) for d in done])

    async def DeliverTasks(self, request, context):
        """A batch's images, results and next lease request in one call (farm.proto): the
        images' files written on a worker thread, then their ownership, the results and
        the next tasks' claim in one trip to the storage thread and one transaction. Each
        part answers as its own call would; the lease never waits for work (LeaseTask
        does)."""
        node_id = await self._known_node(request.node_id, context)
        if sum(len(result.outputs) for result in request.results) > MAX_OUTPUTS_PER_CALL:
            raise InvalidRequest(f"at most {MAX_OUTPUTS_PER_CALL} outputs in one call")
        if len(request.images) > BATCH_UPLOAD_BLOBS:  # the validator's bound, for bare servicers
            raise InvalidRequest(f"at most {BATCH_UPLOAD_BLOBS} images in one call")
        images, stored_shas = ((await asyncio.to_thread(write_blobs, self.blobs,
                                                        list(request.images)))
                               if request.images else ([], []))
        want = max(0, request.max_tasks)
        shed = want > 0 and self.storage.backlog >= self.shed_backlog
        results = [lease_result(r.lease_id, r.outputs) for r in request.results]
        sizes = {image.blob.sha256: image.blob.size for image in request.images}
        stored = {sha: sizes[sha] for sha in stored_shas}
        done, leased = (await self.storage.run(self._deliver_and_lease, node_id, stored,
                                               results, time.time(), 0 if shed else want)
                        if stored or results or (want and not shed) else ([], None))
        self._announce(done)
        response = pb.DeliverTasksResponse(images=images, results=[outcome(d) for d in done])
        if shed:
            LEASES_SHED.inc()
            response.next.retry_after_ms = random.randint(*SHED_RETRY_MS)
        elif leased is not None:
            grants, gate = leased
            if gate.quarantined:
                response.next.retry_after_ms = QUARANTINED_RETRY_MS
            elif grants:
                response.next.CopyFrom(self._granted(node_id, grants))
            else:
                response.next.SetInParent()  # no work now: LeaseTask waits for it
        return response

    def _deliver_and_lease(self, node_id: str, stored: dict[str, int],
                           results: list[LeaseResult], now: float, max_tasks: int
                           ) -> tuple[list[Completion], tuple[list[Grant], NodeGate] | None]:
        """(storage thread) DeliverTasks' one transaction: the images just stored (sha256 ->
        size) are the node's, the results are recorded, the next tasks claimed. Here rather
        than beside the files on a worker thread: on SQLite, another connection's write makes
        this thread's page cache stale. A lease on the general path (a bounded identity,
        creators' priorities) is claimed after the commit, in its own."""
        leased = None
        with self.leasing.transaction() as connection:
            if self.owners is not None and stored:
                self.owners.add_many(node_id, stored, connection)
            done = (self._complete_on_storage(node_id, results, now, connection, stored)
                    if results else [])
            if max_tasks > 0:
                leased = self.leasing.claim(connection, node_id, now,
                                            self._scenes.get(node_id, ()), max_tasks,
                                            seen=self._touch_due(node_id, now))
        if max_tasks > 0 and leased is None:
            leased = self.leasing.lease_general(node_id, now)
        return done, (self._leased(node_id, leased) if leased is not None else None)

    async def _deliver(self, node_id: str, results: list[LeaseResult]) -> list[Completion]:
        """Record the node's results: one round trip to the storage thread, one transaction."""
        done = await self.storage.run(self._complete_on_storage, node_id, results,
                                      time.time())
        self._announce(done)
        return done

    def _announce(self, done: list[Completion]) -> None:
        """Wake what waits on newly recorded results: the checks, the jobs' watchers."""
        if any(completion.recorded for completion in done):
            self.events.checks_queued()  # each delivered frame waits for its check
        for completion in done:
            if completion.recorded and completion.task is not None:
                self.events.changed(completion.task.job_id)
                log.debug("lease %s delivered: job %s frames %d-%d, %d sampled for tiles",
                          completion.lease_id, completion.task.job_id,
                          completion.task.first_frame, completion.task.last_frame,
                          len(completion.tiles))

    def _complete_on_storage(self, node_id: str, results: list[LeaseResult], now: float,
                             connection: Connection | None = None,
                             stored: Mapping[str, int] | None = None) -> list[Completion]:
        """(storage thread) Which images are stored at their size and the node's own, then
        every lease recorded or refused in one transaction (`connection`'s, if given).
        `stored`: images this call just stored as the node's (sha256 -> size)."""
        images = [(o.image.sha256, o.image.size) for r in results for o in r.outputs]
        images += [(o.passes.sha256, o.passes.size) for r in results for o in r.outputs
                   if has_passes(o)]
        delivered = self._delivered(node_id, images, connection, stored or {})
        verified: dict[tuple[str, str, bytes], bool] = {}  # a tree's signature: checked once

        def prepare(result: LeaseResult, leased: LeasedTask | None, facts: JobFacts | None
                    ) -> list[FrameOutputRecord]:
            return self._records(node_id, result, leased, facts, delivered, verified)

        def draw(gate: NodeGate, frames: Sequence[int]) -> frozenset[int]:
            # unbonded nodes: every frame
            return sample_frames(frames, check_probability(gate.standing))

        return self.leasing.complete_many(node_id, results, now, prepare, draw, connection)

    def _records(self, node_id: str, result: LeaseResult, leased: LeasedTask | None,
                 facts: JobFacts | None, delivered: set[tuple[str, int]],
                 verified: dict[tuple[str, str, bytes], bool]) -> list[FrameOutputRecord]:
        """A lease's outputs as records, or the refusal of this lease (a DomainError)."""
        if not result.lease_id:
            raise InvalidRequest("lease_id is required")
        settings = self._parsed_settings(leased.job_id, facts) if leased and facts else None
        extension = convert.extension_of(settings) if settings else "png"
        outputs = []
        for output in result.outputs:
            sha = output.image.sha256
            if not is_sha256(sha):
                raise InvalidRequest(f"frame {output.frame}: image is not a sha256")
            if leased is not None and leased.node_id == node_id and settings is not None and (
                    not verify_receipt(node_id, output.receipt_signature, leased.job_id,
                                       output.frame, sha, settings, output.receipt_proof,
                                       verified, self._settings_digest(leased.job_id,
                                                                       settings))):
                raise InvalidRequest(f"frame {output.frame}: the receipt signature does not "
                                     "verify (sign job, frame, image sha256 and settings)")
            # The node must hold the image itself (uploaded or proven): naming a stored
            # blob it only knows the sha256 of (another creator's texture, say) would make
            # that blob this job's frame, readable by this job's creator.
            if (sha, output.image.size) not in delivered:
                raise Refused(f"frame {output.frame}: image {sha[:12]} was not uploaded; "
                              "upload it first")
            if has_passes(output):
                check_passes(output, settings, delivered)
            outputs.append(
                FrameOutputRecord(
                    frame=output.frame,
                    sha256=sha,
                    size=output.image.size,
                    extension=extension,
                    render_seconds=max(0.0, output.render_seconds),
                    blender_version=output.blender_version[:64],
                    device=output.device[:64],
                    receipt_signature=output.receipt_signature[:128],
                    receipt_proof=output.receipt_proof[:TREE_DEPTH * PROOF_STEP],
                    passes_sha256=output.passes.sha256 if has_passes(output) else "",
                    passes_size=output.passes.size if has_passes(output) else 0,
                )
            )
        return outputs

    def _delivered(self, node_id: str, images: list[tuple[str, int]],
                   connection: Connection | None, stored: Mapping[str, int]
                   ) -> set[tuple[str, int]]:
        """(storage thread) Which of the images (sha256, size) are stored at that size and
        the node's own: those `stored` by this call are; the others are looked up."""
        found = set()
        for sha, size in images:
            if sha in stored or not is_sha256(sha):
                continue
            try:
                if self.blobs.size(sha) == size:
                    found.add(sha)
            except BlobNotFound:
                continue
        owned = (self.owners.owned(node_id, found, connection) if self.owners is not None
                 else found)
        return {(sha, size) for sha, size in images
                if sha in owned or stored.get(sha, -1) == size}

    async def FailTask(self, request, context):
        node_id = await self._known_node(request.node_id, context)
        lease_id = await require_id(context, request.lease_id, "lease_id")
        reason = request.reason[:MAX_REASON_LENGTH] or "no reason given"
        try:
            task = await self.storage.run(self._fail, lease_id, node_id, reason)
        except LeaseLost as error:
            raise Refused(f"lease lost: {error}") from error
        if task.state == TaskState.QUEUED:
            self.events.work_queued()
        self.events.changed(task.job_id)
        log.warning("lease %s failed on node %s: %s", lease_id, node_id[:12], reason)
        return pb.FailTaskResponse(will_retry=task.state == TaskState.QUEUED)

    def _fail(self, lease_id: str, node_id: str, reason: str) -> TaskRecord:
        task = self.store.fail_task(lease_id, node_id, reason, time.time())
        event = failure_event(reason)
        self.proof.record_event(node_id, event, time.time(), job_id=task.job_id,
                                frame=task.first_frame, details={"reason": reason})
        return task

    async def ListNodes(self, request, context):
        standings = self.proof.standings()
        return pb.ListNodesResponse(nodes=[
            standing_message(node, standings.get(node.node_id),
                             self.pricing.node_speed(node.node_id))
            for node in self.store.list_nodes()
        ])

    async def GetNodeStanding(self, request, context):
        node_id = await require_id(context, request.node_id, "node_id")
        node = self.store.get_node(node_id)
        if node is None:
            raise NotFound(f"no node {node_id}")
        limit = history_limit(request.history_limit)
        events = self.proof.history(node_id, limit)
        creators = self.store.job_creators(event.job_id for event in events if event.job_id)
        caller = current_caller()
        return pb.NodeStandingResponse(
            standing=standing_message(node, self.proof.standing_record(node_id),
                                      self.pricing.node_speed(node_id)),
            history=[event_message(event, named=self.access is None or self.access.may_see_job_id(
                caller, node_id, creators.get(event.job_id, ""))) for event in events],
        )

    async def GetEarnings(self, request, context):
        node_id = await require_id(context, request.node_id, "node_id")
        earnings = await asyncio.to_thread(self.payments.earnings, node_id)
        return pb.Earnings(
            node_id=node_id,
            epochs=[pb.EpochEarning(epoch=e.epoch, credits=e.credits / MS_PER_HOUR,
                                    minted=e.minted, signature=e.signature or "",
                                    closed_unix_ms=int(e.ended_at * 1000))
                    for e in earnings.epochs],
            total_minted=earnings.total_minted,
            open_credits=earnings.open_credits / MS_PER_HOUR,
            decimals=self.payments.pricing.decimals,
            token_price_usd=float(self.payments.pricing.token_price_usd),
        )

    # ------------------------------------------------------------ bonds

    async def PrepareBond(self, request, context):
        node_id = await self._own_node_id(request.node_id, context)
        if not 0 < request.tokens <= MAX_BOND_BASE_UNITS:
            raise InvalidRequest(f"tokens must be in (0, {MAX_BOND_BASE_UNITS}] base units")
        try:
            message = await asyncio.to_thread(self.payments.bonds.bond_message, node_id,
                                              request.tokens)
        except PaymentError as error:
            raise Refused(str(error)) from error
        return pb.PrepareBondResponse(message=message, tokens=request.tokens)

    async def PostBond(self, request, context):
        node_id = await self._own_node_id(request.node_id, context)
        if not 0 < request.tokens <= MAX_BOND_BASE_UNITS:
            raise InvalidRequest(f"tokens must be in (0, {MAX_BOND_BASE_UNITS}] base units")
        if not request.signed_bond or len(request.signed_bond) > MAX_SIGNED_BOND_BYTES:
            raise InvalidRequest("signed_bond must be the signed PrepareBond message")
        try:
            await asyncio.to_thread(self.payments.bonds.post_bond, node_id,
                                    request.signed_bond, request.tokens)
        except InsufficientBalance as error:
            raise Refused(str(error)) from error
        except PaymentError as error:
            raise InvalidRequest(str(error)) from error
        log.info("node %s bonded %d base units", node_id[:12], request.tokens)
        self.events.work_queued()  # its limits may have lifted
        return await self._bond(node_id)

    async def Unbond(self, request, context):
        node_id = await self._own_node_id(request.node_id, context)
        standing = self.proof.standing(node_id)
        try:
            await asyncio.to_thread(self.payments.bonds.request_unbond, node_id,
                                    quarantined=standing.quarantined)
        except PaymentError as error:
            raise Refused(str(error)) from error
        await asyncio.to_thread(release_if_due, self.store, self.proof, self.payments.bonds,
                                node_id)
        return await self._bond(node_id)

    async def GetBond(self, request, context):
        node_id = await require_id(context, request.node_id, "node_id")
        return await self._bond(node_id)

    async def _bond(self, node_id: str) -> pb.Bond:
        bonds = self.payments.bonds
        status = await asyncio.to_thread(bonds.status, node_id)
        limits, _ = bonds.gate(node_id, self.proof.standing(node_id))
        return pb.Bond(
            node_id=node_id, held=status.held, minimum=status.minimum, state=status.state,
            posted=status.posted, slashed=status.slashed, returned=status.returned,
            release_after_unix_ms=int((status.release_after or 0) * 1000),
            last_signature=status.last_signature, last_state=status.last_state,
            decimals=self.payments.pricing.decimals, bounded=limits.bounded,
            limits=limits.reason, max_leases=limits.max_leases or 0,
            max_frames_per_job=limits.max_frames_per_job or 0,
            token_price_usd=float(self.payments.pricing.token_price_usd),
        )

    # ------------------------------------------------------------ helpers

    def _touch_due(self, node_id: str, now: float) -> bool:
        """Whether to note now that the node is alive (its lease's transaction writes it): at
        most every TOUCH_SECONDS, since a write per call is waste.

        Entries older than TOUCH_SECONDS no longer save a write, so they are dropped: the map
        holds the nodes seen in the last few seconds, not every node that ever called.
        """
        if now - self._last_prune >= TOUCH_SECONDS:
            self._touched = {n: at for n, at in self._touched.items() if now - at < TOUCH_SECONDS}
            self._last_prune = now
        if now - self._touched.get(node_id, 0.0) < TOUCH_SECONDS:
            return False
        self._touched[node_id] = now
        return True

    def _job_settings(self, job_id: str) -> pb.RenderSettings | None:
        """A job's render settings; jobs never change after submit, so the recently used ones
        are kept (a bounded cache: an evicted job is read again from the database)."""
        settings = self._settings.get(job_id)
        if settings is None:
            job = self.store.get_job(job_id)
            if job is None:
                return None
            settings = convert.settings_from_json(job.settings_json)
            self._settings[job_id] = settings
        return settings

    async def _own_node_id(self, node_id: str, context: grpc.aio.ServicerContext) -> str:
        """A node speaks only for itself: node_id must be the key that signed the call."""
        node_id = await require_id(context, node_id, "node_id")
        return check_own_node(node_id, current_caller().pubkey)

    async def _known_node(self, node_id: str, context: grpc.aio.ServicerContext) -> str:
        node_id = await self._own_node_id(node_id, context)
        # Nodes are never deleted: remember who exists (the recently active ones; a node
        # evicted from the cache is looked up again).
        if self._registered.get(node_id) is None:
            if await self.storage.run(self.store.get_node, node_id) is None:
                raise Refused("unknown node: call RegisterNode first")
            self._registered[node_id] = True
        return node_id

    def _parsed_settings(self, job_id: str, facts: JobFacts) -> pb.RenderSettings:
        # Both threads read it: the loop (leases) and the storage thread (receipts).
        with self._settings_lock:
            settings = self._settings.get(job_id)
            if settings is None:
                settings = self._settings[job_id] = convert.settings_from_json(
                    facts.settings_json)
            return settings

    def _settings_digest(self, job_id: str, settings: pb.RenderSettings) -> str:
        digest = self._digests.get(job_id)
        if digest is None:
            digest = self._digests[job_id] = settings_digest(settings)
        return digest

    def _lease_message(self, grant: Grant) -> pb.Lease:
        return pb.Lease(
            lease_id=grant.lease_id,
            task_id=grant.task_id,
            job_id=grant.job_id,
            scene_id=grant.job.scene_id,
            main_file=grant.job.main_file,
            frames=list(range(grant.first_frame, grant.last_frame + 1)),
            settings=self._parsed_settings(grant.job_id, grant.job),
            expires_unix_ms=int(grant.expires_at * 1000),
        )


def lease_result(lease_id: str, outputs: Sequence[pb.FrameOutput]) -> LeaseResult:
    """One lease's delivery as the store takes it (the accepted render's logs kept)."""
    return LeaseResult(lease_id=lease_id, outputs=outputs,
                       logs={o.frame: o.log[:FRAME_LOG_BYTES] for o in outputs if o.log})


def refusal(error: Exception) -> DomainError:
    """A lease's refusal as CompleteTask answers it alone."""
    if isinstance(error, DomainError):
        return error
    if isinstance(error, LeaseLost):
        return Refused(f"lease lost: {error}")
    return InvalidRequest(str(error))  # ValueError: the result does not fit the task


def outcome(done: Completion) -> pb.LeaseOutcome:
    """A lease's line in CompleteTasksResponse: the code and message CompleteTask would give."""
    if done.error is None:
        return pb.LeaseOutcome(lease_id=done.lease_id, accepted=True)
    error = refusal(done.error)
    return pb.LeaseOutcome(lease_id=done.lease_id, accepted=False,
                           code=status_of(error).name, reason=str(error))


def has_passes(output: pb.FrameOutput) -> bool:
    """Whether the node names a passes file for this frame (any part of the ref set)."""
    return bool(output.passes.sha256 or output.passes.size)


def check_passes(output: pb.FrameOutput, settings: pb.RenderSettings | None,
                 delivered: set[tuple[str, int]]) -> None:
    """A frame's passes file obeys the image's rules: a sha256, stored at that size and
    uploaded (or proven) by this node, so a node never hands the verifier another key's blob,
    and no larger than a passes file of the job's frame size can be (the node's upload
    would otherwise cost the verifier's disk and bandwidth whatever it holds)."""
    sha, size = output.passes.sha256, output.passes.size
    if not is_sha256(sha):
        raise InvalidRequest(f"frame {output.frame}: passes is not a sha256")
    if settings is not None:  # None: the lease is unknown, which the completion refuses
        limit = passes_limit(settings)
        if size > limit:
            raise InvalidRequest(f"frame {output.frame}: passes of {size} bytes exceed "
                                 f"{limit} bytes, the bound for the job's frame size")
    if (sha, size) not in delivered:
        raise Refused(f"frame {output.frame}: passes {sha[:12]} was not uploaded; "
                      "upload it first")


def standing_message(node: NodeRecord, record: NodeStandingRecord | None,
                     measured_speed: float | None = None) -> pb.NodeStanding:
    standing = standing_of(record)
    capabilities = json.loads(node.capabilities_json or "{}")
    return pb.NodeStanding(
        node_id=node.node_id,
        name=node.name,
        reputation=round(standing.score, 6),
        tier=standing.tier,
        frames_verified=standing.verified,
        frames_failed=standing.failed,
        frames_approved=standing.delivered - standing.failed,
        quarantined=standing.quarantined,
        check_probability=check_probability(standing),
        consecutive_verified=standing.consecutive_verified,
        leases_completed=record.leases_completed if record else 0,
        leases_abandoned=record.leases_abandoned if record else 0,
        last_seen_unix_ms=int(node.last_seen_at * 1000),
        benchmark_score=node.benchmark_score,
        devices=capabilities.get("devices", []),
        measured_speed=round(measured_speed, 4) if measured_speed else 0.0,
    )


# What anyone may see of an event's details: how it was checked, not what or for whom.
PUBLIC_EVENT_DETAILS = ("mode", "tiles_checked")


def event_message(event: ReputationEventRecord, *, named: bool = True) -> pb.ReputationEvent:
    """One reputation event; unless ``named``, without whose job it was.

    Scores and counts are public (creators choose tiers by them); which jobs a node rendered
    is the node's, the job's creator's and the operator's business: others get the event with
    no job id, and details cut to PUBLIC_EVENT_DETAILS (a failure reason or a verifier's words
    may name files or paths of the creator's scene).
    """
    details_json = event.details_json
    if not named:
        try:
            details = json.loads(event.details_json or "{}")
        except ValueError:
            details = {}
        public = ({key: details[key] for key in PUBLIC_EVENT_DETAILS if key in details}
                  if isinstance(details, dict) else {})
        details_json = json.dumps(public)
    return pb.ReputationEvent(
        at_unix_ms=int(event.at * 1000),
        kind=event.kind,
        reputation_before=event.score_before,
        reputation_after=event.score_after,
        tier_after=event.tier_after,
        reason=event.reason,
        job_id=event.job_id if named else "",
        frame=event.frame,
        details_json=details_json,
    )

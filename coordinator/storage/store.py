"""Data access for the farm: every state change is one short transaction.

Leasing uses compare-and-set updates (`... WHERE state = 'queued'`), so two
coordinators or threads can never lease the same task twice.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from cachetools import LRUCache
from sqlalchemy import (
    Exists,
    ScalarSelect,
    Select,
    exists,
    false,
    func,
    or_,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from coordinator.domain.budget import LEASE_SHORT, BudgetView, frame_price, may_lease
from coordinator.domain.control import check_cancellable
from coordinator.domain.ledger import EscrowState
from coordinator.domain.nodes import counts_as_attempt
from coordinator.domain.scheduling import queue_keys
from coordinator.domain.states import (
    UNKNOWN_LEASE,
    JobState,
    TaskEvent,
    TaskState,
    VerificationState,
    job_state_from_frames,
    lease_refusal,
    next_task_state,
)
from coordinator.domain.verdicts import FrameVerdict
from coordinator.storage import driver
from coordinator.storage.limits import STORED_LIMITS, clip_stored
from coordinator.storage.models import (
    FrameResultRecord,
    JobBudgetRecord,
    JobControlRecord,
    JobRecord,
    NodeRecord,
    SceneFileRecord,
    SceneRecord,
    TaskFailureRecord,
    TaskRecord,
    VerificationRecord,
)

JOB_ERROR_BYTES = STORED_LIMITS[JobRecord]["error"]
# Where a new job's tasks join the queue: its head, and the creator's own tail.
_QUEUE_ENDS = text(f"""
SELECT (SELECT min(queued_at) FROM task WHERE state = '{TaskState.QUEUED}'),
       (SELECT max(t.queued_at) FROM task t JOIN job j ON j.job_id = t.job_id
        WHERE j.creator = :creator AND t.state = '{TaskState.QUEUED}')
""")


@dataclass(frozen=True)
class SchedulingPolicy:
    lease_seconds: float = 60.0
    max_attempts: int = 3  # failed leases before a task (frame) is given up
    max_failures_per_node: int = 2  # failures on one job before a node stops getting it


class FrameOutputRecord(NamedTuple):
    frame: int
    sha256: str
    size: int
    extension: str
    render_seconds: float
    blender_version: str = ""
    device: str = ""
    receipt_signature: str = ""
    receipt_proof: str = ""  # the receipt's path to its signed tree root (frameproof.receipts)
    # the node's passes file of a denoised frame (FrameOutput.passes); "" when none
    passes_sha256: str = ""
    passes_size: int = 0


LEASE_EXPIRED = "lease expired: the node stopped answering"


class LeaseLost(Exception):
    """The lease is no longer the node's: expired and re-leased, cancelled or unknown."""


class FarmStore:
    """The coordinator's persistence behind one narrow interface."""

    def __init__(self, engine: Engine, policy: SchedulingPolicy | None = None) -> None:
        self.engine = engine
        self.policy = policy or SchedulingPolicy()

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------ scenes

    def get_scene(self, scene_id: str) -> SceneRecord | None:
        with self._session() as session:
            return session.get(SceneRecord, scene_id)

    def save_scene(self, scene: SceneRecord, file_shas: Iterable[str] = ()) -> None:
        with self._session() as session:
            session.merge(scene)
            for sha in set(file_shas):
                session.merge(SceneFileRecord(scene_id=scene.scene_id, sha256=sha))
            session.commit()

    # ------------------------------------------------------------ jobs

    def create_job(self, job: JobRecord, chunks: Sequence[Sequence[int]], now: float,
                   frame_price_tokens: int | None = None) -> None:
        """Store a job and its tasks in one transaction: all or nothing.

        Its tasks join the queue where fair share puts them (scheduling.queue_keys): after
        the creator's own queued tasks, interleaved with other creators' from the head on.

        `frame_price_tokens`: the estimate's price of one frame; given, the job's leases are
        gated on its escrow (coordinator.domain.budget).
        """
        with self._session() as session:
            head, tail = session.execute(_QUEUE_ENDS, {"creator": job.creator}).one()
            keys = queue_keys(len(chunks), now, head, tail)
            session.add(job)
            if frame_price_tokens is not None:
                session.flush()  # the job row first: the budget row refers to it
                session.add(JobBudgetRecord(job_id=job.job_id, updated_at=now,
                                            frame_price_tokens=max(0, frame_price_tokens)))
            for chunk, key in zip(chunks, keys, strict=True):
                session.add(
                    TaskRecord(
                        task_id=uuid.uuid4().hex,
                        job_id=job.job_id,
                        first_frame=chunk[0],
                        last_frame=chunk[-1],
                        state=TaskState.QUEUED,
                        queued_at=key,  # fair share: see coordinator/domain/scheduling.py
                        updated_at=now,
                    )
                )
            session.commit()

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._session() as session:
            return session.get(JobRecord, job_id)

    def list_jobs(self, creator: str | None = None,
                  limit: int | None = None) -> tuple[list[JobRecord], int]:
        """The newest `limit` jobs (all, or one creator's), oldest first, and how many exist.

        Bounded so that a creator with years of jobs gets a small answer and one short query.
        """
        newest = select(JobRecord).order_by(col(JobRecord.created_at).desc(),
                                            col(JobRecord.job_id).desc())
        total = select(func.count()).select_from(JobRecord)
        if creator is not None:
            newest = newest.where(JobRecord.creator == creator)
            total = total.where(JobRecord.creator == creator)
        if limit is not None:
            newest = newest.limit(limit)
        with self._session() as session:
            jobs = list(session.exec(newest))
            count = session.exec(total).one()
        return jobs[::-1], int(count)

    def frame_counts(self, job_ids: Iterable[str]) -> dict[str, dict[TaskState, int]]:
        """Frames per task state for each job, in one query."""
        ids = list(job_ids)
        counts: dict[str, dict[TaskState, int]] = {job_id: {} for job_id in ids}
        if not ids:
            return counts
        frames = func.sum(TaskRecord.last_frame - TaskRecord.first_frame + 1)
        query = (
            select(TaskRecord.job_id, TaskRecord.state, frames)
            .where(col(TaskRecord.job_id).in_(ids))
            .group_by(TaskRecord.job_id, TaskRecord.state)
        )
        with self._session() as session:
            for job_id, state, n in session.exec(query):
                counts[job_id][TaskState(state)] = int(n)
        return counts

    def cancel_job(self, job_id: str, now: float) -> bool:
        """Cancel a job: unfinished tasks are dropped, finished frames kept.

        The job must not be done (domain.control.check_cancellable), checked in the same
        transaction: a last frame approved just before the cancel leaves the job done."""
        with self._session() as session:
            job = session.get(JobRecord, job_id)
            if job is None:
                return False
            # Locked on PostgreSQL, where a completion locks its task row too.
            states = session.exec(select(TaskRecord.state)
                                  .where(col(TaskRecord.job_id) == job_id)
                                  .with_for_update()).all()
            counts = Counter(TaskState(state) for state in states)
            check_cancellable(job_id, done=job_state_from_frames(
                counts, cancelled=job.cancelled) == JobState.DONE)
            job.cancelled = True
            job.updated_at = now
            session.add(job)
            session.execute(
                update(TaskRecord)
                .where(col(TaskRecord.job_id) == job_id)
                .where(col(TaskRecord.state).in_([TaskState.QUEUED, TaskState.LEASED]))
                .values(state=TaskState.CANCELLED, lease_expires_at=None, updated_at=now)
            )
            session.commit()
            return True

    def list_tasks(self, job_id: str) -> list[TaskRecord]:
        with self._session() as session:
            query = select(TaskRecord).where(TaskRecord.job_id == job_id)
            return list(session.exec(query.order_by(col(TaskRecord.first_frame))))

    def list_frame_results(self, job_id: str) -> list[FrameResultRecord]:
        with self._session() as session:
            query = select(FrameResultRecord).where(FrameResultRecord.job_id == job_id)
            return list(session.exec(query.order_by(col(FrameResultRecord.frame))))

    def frame_result(self, job_id: str, frame: int) -> FrameResultRecord | None:
        """One frame's accepted result (a primary-key read, not the job's whole list)."""
        with self._session() as session:
            return session.get(FrameResultRecord, (job_id, frame))

    def failures_by_task(self, job_id: str) -> dict[str, str]:
        """The latest failure reason of each task of a job."""
        with self._session() as session:
            query = (
                select(TaskFailureRecord)
                .where(TaskFailureRecord.job_id == job_id)
                .order_by(col(TaskFailureRecord.at))
            )
            return {failure.task_id: failure.reason for failure in session.exec(query)}

    # ------------------------------------------------------------ billing

    def uncharged_frames(self, limit: int = 100) -> list[tuple[FrameResultRecord, int, float]]:
        """Approved frames whose charge is not booked yet, with the job's tier and node score."""
        query = (
            select(FrameResultRecord, JobRecord.tier, NodeRecord.benchmark_score)
            .join(JobRecord, col(JobRecord.job_id) == col(FrameResultRecord.job_id))
            .join(NodeRecord, col(NodeRecord.node_id) == col(FrameResultRecord.node_id))
            .where(FrameResultRecord.verdict == FrameVerdict.APPROVED)
            .where(col(FrameResultRecord.charged).is_(False))
            # A paused job's frames wait for money: the sweep revisits those jobs on their own
            # (waiting_frames), so they never crowd the others' charges out of this batch.
            .where(col(FrameResultRecord.job_id).not_in(_paused_jobs()))
            .order_by(col(FrameResultRecord.job_id), col(FrameResultRecord.frame))
            .limit(limit)
        )
        with self._session() as session:
            return [(frame, tier, score) for frame, tier, score in session.exec(query)]

    def uncharged_frames_of(self, job_id: str) -> bool:
        with self._session() as session:
            return session.exec(
                select(FrameResultRecord.frame)
                .where(FrameResultRecord.job_id == job_id)
                .where(FrameResultRecord.verdict == FrameVerdict.APPROVED)
                .where(col(FrameResultRecord.charged).is_(False))
            ).first() is not None

    def mark_charged(self, job_id: str, frame: int) -> None:
        with self._session() as session:
            session.execute(
                update(FrameResultRecord)
                .where(col(FrameResultRecord.job_id) == job_id)
                .where(col(FrameResultRecord.frame) == frame)
                .values(charged=True)
            )
            session.commit()

    def waiting_frames(self, job_id: str) -> list[tuple[FrameResultRecord, int, float]]:
        """One job's approved, uncharged frames (in frame order) with its tier and node score."""
        query = (
            select(FrameResultRecord, JobRecord.tier, NodeRecord.benchmark_score)
            .join(JobRecord, col(JobRecord.job_id) == col(FrameResultRecord.job_id))
            .join(NodeRecord, col(NodeRecord.node_id) == col(FrameResultRecord.node_id))
            .where(FrameResultRecord.job_id == job_id)
            .where(FrameResultRecord.verdict == FrameVerdict.APPROVED)
            .where(col(FrameResultRecord.charged).is_(False))
            .order_by(col(FrameResultRecord.frame))
        )
        with self._session() as session:
            return [(frame, tier, score) for frame, tier, score in session.exec(query)]

    def mark_unpaid(self, job_id: str, frame: int) -> None:
        """A cancelled job's approved frame its escrow cannot pay: never charged, never served."""
        with self._session() as session:
            session.execute(
                update(FrameResultRecord)
                .where(col(FrameResultRecord.job_id) == job_id)
                .where(col(FrameResultRecord.frame) == frame)
                .where(col(FrameResultRecord.charged).is_(False))
                .values(verdict=FrameVerdict.UNPAID)
            )
            session.commit()

    # ------------------------------------------------------------ budget

    def budget_view(self, job_id: str) -> BudgetView | None:
        """The job's escrow and frames in flight (None: a job without a budget row)."""
        with self._session() as session:
            return _budget_view(session, job_id)

    def budget_record(self, job_id: str) -> JobBudgetRecord | None:
        with self._session() as session:
            return session.get(JobBudgetRecord, job_id)

    def paused_jobs(self) -> list[tuple[JobRecord, JobBudgetRecord]]:
        """Unsettled paused jobs (with their budget rows), the longest-paused first."""
        query = (
            select(JobRecord, JobBudgetRecord)
            .join(JobBudgetRecord, col(JobBudgetRecord.job_id) == col(JobRecord.job_id))
            .where(col(JobBudgetRecord.paused).is_(True))
            .where(col(JobRecord.settled).is_(False))
            .order_by(col(JobBudgetRecord.updated_at))
        )
        with self._session() as session:
            return [(job, budget) for job, budget in session.exec(query)]

    def budget_flags(self, job_ids: Iterable[str]) -> tuple[set[str], set[str]]:
        """Of these jobs: those paused, and those with approved frames not charged yet."""
        ids = list(job_ids)
        if not ids:
            return set(), set()
        with self._session() as session:
            paused = session.exec(
                select(JobBudgetRecord.job_id).where(col(JobBudgetRecord.job_id).in_(ids))
                .where(col(JobBudgetRecord.paused).is_(True))
            ).all()
            awaiting = session.exec(
                select(FrameResultRecord.job_id).where(col(FrameResultRecord.job_id).in_(ids))
                .where(FrameResultRecord.verdict == FrameVerdict.APPROVED)
                .where(col(FrameResultRecord.charged).is_(False))
                .distinct()
            ).all()
        return set(paused), set(awaiting)

    def pause_job(self, job_id: str, cause: str, now: float, waiting_cost: int = 0) -> bool:
        """Stop leasing the job's frames; True when it was running until now.

        `waiting_cost`: the charge of the approved frame the escrow could not cover.
        """
        with self._session() as session:
            moved = _set_paused(session, job_id, True, cause, now)
            if waiting_cost:
                session.execute(update(JobBudgetRecord)
                                .where(col(JobBudgetRecord.job_id) == job_id)
                                .values(waiting_cost_tokens=waiting_cost))
            session.commit()
            return moved

    def resume_job(self, job_id: str, now: float) -> bool:
        """Lease the job's frames again; True when it was paused until now."""
        with self._session() as session:
            moved = _set_paused(session, job_id, False, "", now)
            session.commit()
            return moved

    def jobs_ready_to_settle(self) -> list[JobRecord]:
        """Unsettled jobs with no frame being verified and (unless cancelled) none to render.

        Only these can settle; the caller still derives each one's state. Jobs with work in
        flight stay in the database: loading every unsettled job each sweep made the sweep's
        time and memory grow with the backlog of unfinished jobs.
        """
        def tasks_in(*states: TaskState) -> Exists:
            return exists().where(col(TaskRecord.job_id) == col(JobRecord.job_id)).where(
                col(TaskRecord.state).in_(states))

        query = (
            select(JobRecord)
            .where(col(JobRecord.settled) == false())  # "= false": the index serves it
            .where(~tasks_in(TaskState.VERIFYING))
            .where(col(JobRecord.cancelled) | ~tasks_in(TaskState.QUEUED, TaskState.LEASED))
            .order_by(col(JobRecord.created_at))
        )
        with self._session() as session:
            return list(session.exec(query))

    def mark_settled(self, job_id: str, now: float, error: str = "") -> None:
        with self._session() as session:
            values: dict[str, object] = {"settled": True, "updated_at": now}
            if error:
                values["error"] = clip_stored(error, JOB_ERROR_BYTES)
            session.execute(update(JobRecord).where(col(JobRecord.job_id) == job_id)
                            .values(**values))
            session.commit()

    def set_job_error(self, job_id: str, error: str, now: float) -> None:
        with self._session() as session:
            session.execute(update(JobRecord).where(col(JobRecord.job_id) == job_id)
                            .values(error=clip_stored(error, JOB_ERROR_BYTES), updated_at=now))
            session.commit()

    # ------------------------------------------------------------ access

    def creator_may_read(self, creator: str, sha256: str) -> bool:
        """A creator reads their scenes' files and their jobs' frames."""
        own_scenes = select(JobRecord.scene_id).where(JobRecord.creator == creator)
        frame = (
            select(FrameResultRecord.blob_sha256)
            .join(JobRecord, col(JobRecord.job_id) == col(FrameResultRecord.job_id))
            .where(JobRecord.creator == creator)
            .where(FrameResultRecord.blob_sha256 == sha256)
            .where(col(FrameResultRecord.charged).is_(True))  # paid frames only (PAYMENTS.md)
        )
        with self._session() as session:
            return scene_holds(session, own_scenes, sha256) or bool(session.exec(frame).first())

    def node_may_read(self, node_id: str, sha256: str, now: float) -> bool:
        """A node reads only the scenes of tasks it holds a live lease on at ``now``.

        Live: leased to it and not yet expired. An expired lease that the sweep has not taken
        back yet opens nothing, nor does a delivered, failed or re-leased one.
        """
        leased_scenes = (
            select(JobRecord.scene_id)
            .join(TaskRecord, col(TaskRecord.job_id) == col(JobRecord.job_id))
            .where(TaskRecord.node_id == node_id)
            .where(TaskRecord.state == TaskState.LEASED)
            .where(col(TaskRecord.lease_expires_at) >= now)
        )
        with self._session() as session:
            return scene_holds(session, leased_scenes, sha256)

    def job_creators(self, job_ids: Iterable[str]) -> dict[str, str]:
        """job id -> creator key, for the jobs that exist (one query)."""
        ids = list(set(job_ids))
        if not ids:
            return {}
        query = select(JobRecord.job_id, JobRecord.creator).where(col(JobRecord.job_id).in_(ids))
        with self._session() as session:
            return dict(session.exec(query).all())

    # ------------------------------------------------------------ nodes

    def register_node(self, node_id: str, name: str, capabilities_json: str, now: float,
                      benchmark_score: float = 1.0) -> None:
        with self._session() as session:
            node = session.get(NodeRecord, node_id)
            if node is None:
                node = NodeRecord(node_id=node_id, registered_at=now, last_seen_at=now)
            node.name = name
            node.capabilities_json = capabilities_json
            node.benchmark_score = benchmark_score
            node.last_seen_at = now
            session.add(node)
            session.commit()

    def list_nodes(self) -> list[NodeRecord]:
        with self._session() as session:
            return list(session.exec(select(NodeRecord).order_by(col(NodeRecord.registered_at))))

    def get_node(self, node_id: str) -> NodeRecord | None:
        with self._session() as session:
            return session.get(NodeRecord, node_id)

    # ------------------------------------------------------------ leases

    def lease_next_task(self, node_id: str, now: float, node_rank: int = 3, *,
                        max_leases: int | None = None,
                        max_frames_per_job: int | None = None) -> TaskRecord | None:
        """Give the node the oldest queued task it may render, or None.

        A node never gets back a task it already failed, nor any task of a job
        it failed too often: that work goes to other nodes. A node of rank r
        (1: trusted ... 3: economy or probation) gets only jobs of tier >= r.
        A new identity's share is bounded (coordinator/payments/bonds.py): at most
        `max_leases` in flight, and tasks of a job only while its frames there (leased,
        being verified or done) plus the task's stay within `max_frames_per_job` (its
        first task of a job always fits, so a chunk larger than the limit is not stuck).
        """
        policy = self.policy
        # Counted before the claim: the coordinator runs this synchronously on its event loop,
        # so one node's concurrent calls cannot both pass.
        if max_leases is not None and self._leases_held(node_id) >= max_leases:
            return None
        failed_tasks = select(TaskFailureRecord.task_id).where(
            TaskFailureRecord.node_id == node_id
        )
        failed_jobs = (
            select(TaskFailureRecord.job_id)
            .where(TaskFailureRecord.node_id == node_id)
            .group_by(TaskFailureRecord.job_id)
            .having(func.count() >= policy.max_failures_per_node)
        )

        def eligible(*columns: Any) -> Any:
            query = (
                select(*columns)
                .join(JobRecord, col(JobRecord.job_id) == col(TaskRecord.job_id))
                .where(TaskRecord.state == TaskState.QUEUED)
                .where(col(JobRecord.cancelled).is_(False))
                .where(col(TaskRecord.job_id).not_in(_paused_jobs()))
                .where(col(TaskRecord.job_id).not_in(_creator_paused()))
                .where(col(JobRecord.tier) >= node_rank)
                .where(col(TaskRecord.task_id).not_in(failed_tasks))
                .where(col(TaskRecord.job_id).not_in(failed_jobs))
            )
            if max_frames_per_job is not None:
                query = _within_frames_per_job(query, node_id, max_frames_per_job)
            return query

        # FIFO: a job's tasks are queued when it is created, a requeued task goes to the
        # back. Ordering on the task alone lets the queue index do the work.
        candidates = (
            eligible(TaskRecord.task_id, TaskRecord.job_id,
                     TaskRecord.last_frame - TaskRecord.first_frame + 1, JobRecord.creator)
            .order_by(col(TaskRecord.queued_at), col(TaskRecord.first_frame))
            .limit(8)
        )
        with self._session() as session:
            prioritised = session.exec(select(JobControlRecord.job_id)
                                       .where(JobControlRecord.priority != 0).limit(1)).first()
            order: list[tuple[str, str, int, tuple[str, float] | None]] = []
            for task_id, job_id, frames, creator in session.exec(candidates).all():
                if prioritised is not None:
                    # The FIFO picks whose turn it is; the creator's priorities pick which of
                    # their own tasks takes it. The task passed over inherits the queue place
                    # of the one taken, so a creator gets no more turns than without priority.
                    for preferred, queued_at, its_job, its_frames in _preferred_task(
                            session, eligible, creator):
                        if preferred != task_id:
                            order.append((preferred, its_job, its_frames, (task_id, queued_at)))
                order.append((task_id, job_id, frames, None))
            short: set[str] = set()
            for task_id, job_id, frames, passed_over in order:
                if job_id in short or not self._budget_allows(session, job_id, frames, now):
                    short.add(job_id)
                    continue
                lease_id = uuid.uuid4().hex
                claimed = session.execute(
                    update(TaskRecord)
                    .where(col(TaskRecord.task_id) == task_id)
                    .where(col(TaskRecord.state) == TaskState.QUEUED)
                    .values(
                        state=TaskState.LEASED,
                        lease_id=lease_id,
                        node_id=node_id,
                        lease_expires_at=now + policy.lease_seconds,
                        leased_at=now,
                        updated_at=now,
                    )
                )
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    if passed_over is not None:
                        session.execute(update(TaskRecord)
                                        .where(col(TaskRecord.task_id) == passed_over[0])
                                        .values(queued_at=passed_over[1]))
                    session.commit()
                    return session.get(TaskRecord, task_id)
            session.commit()  # the pauses decided above
            return None

    def _leases_held(self, node_id: str) -> int:
        with self._session() as session:
            return int(session.exec(select(_leases_of(node_id))).one())

    @staticmethod
    def _budget_allows(session: Session, job_id: str, frames: int, now: float) -> bool:
        """Reserve escrow for a lease: a job that cannot pay for it pauses instead."""
        return ClaimBudgets(session, now).allows(job_id, frames)

    def extend_lease(self, lease_id: str, node_id: str, now: float) -> TaskRecord:
        """Heartbeat: push the lease's expiry forward, or raise LeaseLost."""
        with self._session() as session:
            task = self._live_task(session, lease_id, node_id)
            task.lease_expires_at = now + self.policy.lease_seconds
            task.updated_at = now
            session.add(task)
            session.commit()
            return task

    def complete_task(
        self,
        lease_id: str,
        node_id: str,
        outputs: Sequence[FrameOutputRecord],
        now: float,
        tile_checks: frozenset[int] = frozenset(),
    ) -> tuple[TaskRecord, bool]:
        """Record a task's frames and queue their verification; return (task, newly recorded).

        Repeating the call is harmless: the second time nothing is recorded.

        Every frame gets a verification (cheap checks); those in `tile_checks` were
        sampled for a tile re-render. The task is done once every frame is approved.
        """
        with self._session() as session:
            # Locked on PostgreSQL: a completion retried on another coordinator while the
            # first is still committing waits for it and then reads "already recorded".
            task = session.exec(select(TaskRecord).where(TaskRecord.lease_id == lease_id)
                                .with_for_update()).first()
            delivered = (TaskState.VERIFYING, TaskState.DONE)
            if task is not None and task.state in delivered and task.node_id == node_id:
                return task, False  # a retried completion: already recorded
            task = self._live_task(session, lease_id, node_id)
            expected = list(range(task.first_frame, task.last_frame + 1))
            if sorted(output.frame for output in outputs) != expected:
                raise ValueError(
                    f"the task covers frames {expected}, the result has "
                    f"{sorted(output.frame for output in outputs)}"
                )
            for output in outputs:
                session.merge(
                    FrameResultRecord(
                        job_id=task.job_id,
                        frame=output.frame,
                        task_id=task.task_id,
                        node_id=node_id,
                        blob_sha256=output.sha256,
                        blob_size=output.size,
                        extension=output.extension,
                        render_seconds=output.render_seconds,
                        blender_version=output.blender_version,
                        device=output.device,
                        receipt_signature=output.receipt_signature,
                        receipt_proof=output.receipt_proof,
                        created_at=now,
                        passes_sha256=output.passes_sha256 or None,
                        passes_size=output.passes_size if output.passes_sha256 else None,
                    )
                )
                session.add(
                    VerificationRecord(
                        verification_id=uuid.uuid4().hex,
                        job_id=task.job_id,
                        frame=output.frame,
                        task_id=task.task_id,
                        node_id=node_id,
                        image_sha256=output.sha256,
                        blender_version=output.blender_version,
                        device=output.device,
                        render_tiles=output.frame in tile_checks,
                        state=VerificationState.QUEUED,
                        created_at=now,
                    )
                )
            task.state = next_task_state(task.state, TaskEvent.DELIVER)
            task.lease_expires_at = None
            task.updated_at = now
            task.error = ""
            session.add(task)
            session.commit()
            return task, True

    def fail_task(self, lease_id: str, node_id: str, reason: str, now: float) -> TaskRecord:
        """The node gave up on its lease: requeue the task or, past the limit, fail it."""
        with self._session() as session:
            task = self._live_task(session, lease_id, node_id)
            record_task_failure(session, task, reason, now, self.policy.max_attempts)
            session.commit()
            return task

    def requeue_expired(self, now: float) -> list[TaskRecord]:
        """Take back every lease whose node stopped heartbeating.

        Locked on PostgreSQL: a completion, failure or heartbeat of the same lease on the
        storage thread (or another coordinator) holds its task row; the reaper skips it and
        looks again next pass, instead of writing 'queued' over a task just delivered.
        """
        with self._session() as session:
            expired = session.exec(
                select(TaskRecord)
                .where(TaskRecord.state == TaskState.LEASED)
                .where(col(TaskRecord.lease_expires_at) < now)
                .with_for_update(skip_locked=True)
            ).all()
            for task in expired:
                record_task_failure(session, task, LEASE_EXPIRED, now, self.policy.max_attempts)
            session.commit()
            return list(expired)

    def grant_grace(self, now: float) -> int:
        """After a coordinator restart, give every live lease a full lease period.

        The coordinator's downtime is not the nodes' fault: they get the time to
        reconnect and heartbeat before anything is taken back.
        """
        with self._session() as session:
            result = session.execute(
                update(TaskRecord)
                .where(col(TaskRecord.state) == TaskState.LEASED)
                .values(lease_expires_at=now + self.policy.lease_seconds)
            )
            session.commit()
            return int(result.rowcount)  # type: ignore[attr-defined]

    def task_for_lease(self, lease_id: str) -> TaskRecord | None:
        with self._session() as session:
            return session.exec(select(TaskRecord).where(TaskRecord.lease_id == lease_id)).first()

    def _live_task(self, session: Session, lease_id: str, node_id: str) -> TaskRecord:
        """The lease's task, locked on PostgreSQL until the caller commits its change."""
        task = session.exec(select(TaskRecord).where(TaskRecord.lease_id == lease_id)
                            .with_for_update()).first()
        if task is None:
            raise LeaseLost(UNKNOWN_LEASE)
        reason = lease_refusal(task.node_id, task.state, node_id)
        if reason is not None:
            raise LeaseLost(reason)
        return task


def _paused_jobs() -> Select[Any]:
    return select(JobBudgetRecord.job_id).where(col(JobBudgetRecord.paused).is_(True))


def _set_paused(session: Session, job_id: str, paused: bool, cause: str, now: float) -> bool:
    moved = session.execute(
        update(JobBudgetRecord)
        .where(col(JobBudgetRecord.job_id) == job_id)
        .where(col(JobBudgetRecord.paused).is_(not paused))
        .values(paused=paused, reason=cause, updated_at=now,
                **({} if paused else {"waiting_cost_tokens": 0}))
    )
    if paused and not moved.rowcount:  # type: ignore[attr-defined]
        session.execute(  # already paused: keep the latest cause (a charge outranks a lease)
            update(JobBudgetRecord)
            .where(col(JobBudgetRecord.job_id) == job_id)
            .where(col(JobBudgetRecord.reason) != cause)
            .values(reason=cause)
        )
    return bool(moved.rowcount)  # type: ignore[attr-defined]


# One statement of indexed aggregates over one job, as plain SQL: leasing asks it for every
# lease, and building the equivalent SQLAlchemy expression each time cost milliseconds.
_BUDGET_VIEW = text(f"""
SELECT b.frame_price_tokens, p.deposited, p.charged,
  (SELECT coalesce(sum(last_frame - first_frame + 1), 0) FROM task
   WHERE job_id = :job AND state = '{TaskState.LEASED}'),
  (SELECT coalesce(sum(last_frame - first_frame + 1), 0) FROM task
   WHERE job_id = :job AND state NOT IN ('{TaskState.FAILED}', '{TaskState.CANCELLED}')),
  (SELECT count(*) FROM frame_result
   WHERE job_id = :job AND charged = :no AND verdict != '{FrameVerdict.UNPAID}'),
  (SELECT count(*) FROM pay_frame_charge WHERE job_id = :job),
  (SELECT coalesce(sum(cost_tokens), 0) FROM pay_frame_charge WHERE job_id = :job)
FROM job_budget b JOIN pay_job p ON p.job_id = b.job_id
WHERE b.job_id = :job AND p.state IN ('{EscrowState.OPENING}', '{EscrowState.OPEN}')
""")


JOBS_CACHED = 2_000  # jobs whose immutable facts (scene, creator, settings) are kept

_JOB_FACTS = text("""
SELECT j.scene_id, j.creator, j.settings_json, s.main_file
FROM job j JOIN scene s ON s.scene_id = j.scene_id WHERE j.job_id = :job
""")


@dataclass(frozen=True)
class JobFacts:
    """What never changes about a job after submit: kept in memory (bounded)."""

    scene_id: str
    main_file: str
    creator: str
    settings_json: str


class JobFactsCache:
    """Jobs' immutable facts, read once (one statement) and kept (LRU): every lease of a
    task and of a check needs them, and they never change after submit."""

    def __init__(self, size: int = JOBS_CACHED) -> None:
        self._jobs: LRUCache[str, JobFacts] = LRUCache(maxsize=size)
        self._lock = threading.Lock()  # the storage and the verification threads

    def cached(self, job_id: str) -> JobFacts | None:
        with self._lock:
            return self._jobs.get(job_id)

    def read(self, connection: Connection, job_id: str) -> JobFacts | None:
        """The job's facts, from memory or read in `connection` (None: no such job)."""
        facts = self.cached(job_id)
        if facts is not None:
            return facts
        row = connection.execute(_JOB_FACTS, {"job": job_id}).first()
        if row is None:
            return None
        facts = JobFacts(scene_id=row[0], creator=row[1], settings_json=row[2],
                         main_file=row[3])
        with self._lock:
            self._jobs[job_id] = facts
        return facts


class ClaimBudgets:
    """The budget gate of one claim transaction: each job's view read once, then the
    frames granted in this claim added to its committed frames, so a node taking 16 of a
    job's tasks costs one budget query, not 16 (the rows it would re-read are this
    transaction's own writes)."""

    def __init__(self, session: Session | Connection, now: float) -> None:
        self._session = session
        self._now = now
        self._views: dict[str, BudgetView | None] = {}

    def allows(self, job_id: str, frames: int) -> bool:
        """May the job lease `frames` more frames? A job that cannot pay pauses instead."""
        if job_id not in self._views:
            self._views[job_id] = _budget_view(self._session, job_id)
        view = self._views[job_id]
        if view is None or may_lease(view, frames):
            return True
        _set_paused(self._session, job_id, True, LEASE_SHORT, self._now)  # type: ignore[arg-type]
        return False

    def took(self, job_id: str, frames: int) -> None:
        """`frames` of the job were leased in this claim: they are committed now."""
        view = self._views.get(job_id)
        if view is not None:
            self._views[job_id] = replace(
                view, committed_frames=view.committed_frames + frames)


def _budget_view(session: Session | Connection, job_id: str) -> BudgetView | None:
    """See `FarmStore.budget_view`: one statement of indexed aggregates over one job.

    One round trip because leasing asks it for every lease (bench/lease_budget_bench.py).
    """
    params = {"job": job_id, "no": False}
    row = (driver.run(session, _BUDGET_VIEW, params).first() if isinstance(session, Connection)
           else session.execute(_BUDGET_VIEW, params).first())
    if row is None:
        return None
    price, deposited, charged, leased_n, live_n, uncharged_n, charged_n, charged_sum = (
        int(value or 0) for value in row)
    return BudgetView(
        deposited=deposited, charged=charged, committed_frames=leased_n + uncharged_n,
        remaining_frames=max(0, live_n - charged_n),
        price=frame_price(price, charged_sum, charged_n),
    )


def record_task_failure(
    session: Session, task: TaskRecord, reason: str, now: float, max_attempts: int
) -> None:
    """A lease ended without an accepted result: requeue the task, or give it up."""
    session.add(
        TaskFailureRecord(
            task_id=task.task_id,
            job_id=task.job_id,
            node_id=task.node_id or "",
            reason=reason[:2000],
            at=now,
        )
    )
    if counts_as_attempt(reason):
        task.attempts += 1
    task.error = reason[:2000]
    task.lease_id = None
    task.lease_expires_at = None
    task.updated_at = now
    task.state = next_task_state(task.state, TaskEvent.FAIL, attempts=task.attempts,
                                 max_attempts=max_attempts)
    if task.state == TaskState.QUEUED:
        task.queued_at = now
    session.add(task)


def _leases_of(node_id: str) -> ScalarSelect[int]:
    """How many leases the node holds now."""
    mine = aliased(TaskRecord)
    return (select(func.count()).select_from(mine).where(mine.node_id == node_id)
            .where(mine.state == TaskState.LEASED).scalar_subquery())


def _within_frames_per_job(query: Select[Any], node_id: str, limit: int) -> Select[Any]:
    """Only tasks that keep the node's frames of their job within `limit` (see lease).

    The node's frames per job are summed once (a derived table, by the task_node index) and
    joined to the candidates: a subquery correlated with each queued task cost PostgreSQL
    0.15-0.5 s per lease with 2,000 queued tasks (the two-coordinator bench's new nodes).
    """
    held = (
        select(col(TaskRecord.job_id).label("job_id"),
               func.sum(TaskRecord.last_frame - TaskRecord.first_frame + 1).label("frames"))
        .where(TaskRecord.node_id == node_id)
        .where(col(TaskRecord.state).in_([TaskState.LEASED, TaskState.VERIFYING,
                                          TaskState.DONE]))
        .group_by(col(TaskRecord.job_id))
        .subquery()
    )
    size = TaskRecord.last_frame - TaskRecord.first_frame + 1
    return (query.outerjoin(held, held.c.job_id == col(TaskRecord.job_id))
            .where(or_(held.c.frames.is_(None), held.c.frames + size <= limit)))


def scene_holds(session: Session, scene_ids: Select[Any], sha256: str) -> bool:
    """True if ``sha256`` is the manifest or a file of one of the scenes ``scene_ids`` selects.

    The one question behind every "may this caller download this blob" rule.
    """
    manifest = select(SceneRecord.scene_id).where(
        SceneRecord.scene_id == sha256, col(SceneRecord.scene_id).in_(scene_ids))
    scene_file = select(SceneFileRecord.sha256).where(
        SceneFileRecord.sha256 == sha256, col(SceneFileRecord.scene_id).in_(scene_ids))
    return bool(session.exec(manifest).first() or session.exec(scene_file).first())


def _creator_paused() -> Select[Any]:
    """Jobs their creator paused (frameproof pause): leasing skips them."""
    return select(JobControlRecord.job_id).where(col(JobControlRecord.paused).is_(True))


def _preferred_task(session: Session, eligible,  # type: ignore[no-untyped-def]
                    creator: str) -> list[tuple[str, float, str, int]]:
    """The creator's own next task by their priorities (higher first), then FIFO:
    (task id, queued at, job id, frames)."""
    query = (
        eligible(TaskRecord.task_id, TaskRecord.queued_at, TaskRecord.job_id,
                 TaskRecord.last_frame - TaskRecord.first_frame + 1)
        .outerjoin(JobControlRecord, col(JobControlRecord.job_id) == col(TaskRecord.job_id))
        .where(JobRecord.creator == creator)
        .order_by(func.coalesce(JobControlRecord.priority, 0).desc(),
                  col(TaskRecord.queued_at), col(TaskRecord.first_frame))
        .limit(1)
    )
    return [(task_id, queued_at, job_id, int(frames))
            for task_id, queued_at, job_id, frames in session.exec(query).all()]

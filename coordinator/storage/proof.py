"""Proof-of-Render persistence: the verification queue and node reputation.

Finishing a verification is one transaction that approves or rejects the frame,
moves the task on and records the node's reputation change with its reason, so a
crash can never leave a frame approved without its node's record, or the reverse.
"""

from __future__ import annotations

import json
import math
import random
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import and_, delete, exists, func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from coordinator.domain import reputation
from coordinator.domain.reputation import PEER_TIER, NodeEvent, NodeStanding, ReputationChange
from coordinator.domain.states import TaskEvent, TaskState, VerificationState, next_task_state
from coordinator.domain.verdicts import (
    PEER_AUDIT_RATE,
    FrameVerdict,
    Verdict,
    decide,
    peer_audited,
)
from coordinator.storage.models import (
    FrameResultRecord,
    JobQuoteRecord,
    JobRecord,
    NodeStandingRecord,
    PeerVerdictRecord,
    ReputationEventRecord,
    TaskRecord,
    VerificationRecord,
)
from coordinator.storage.quarantine import VERIFICATION, Quarantine
from coordinator.storage.store import (
    JobFacts,
    JobFactsCache,
    SchedulingPolicy,
    record_task_failure,
    scene_holds,
)
from coordinator.storage.verification_queue import (
    CANDIDATE_JOBS,
    LEASE_CAP_SECONDS,
    MAX_CHECK_FAILURES,
    MAX_CHECK_SECONDS,
    Candidate,
    QueueStanding,
    VerificationTroubleRecord,
    fair_order,
    lease_seconds_for,
    measured_check_seconds,
)

OPEN_CHECKS = (VerificationState.QUEUED, VerificationState.LEASED, VerificationState.HELD)
SERVED_MEMORY = 10_000  # creators and jobs remembered for fair ordering


@dataclass(frozen=True)
class Peer:
    """A trusted node verifying others' frames: it gets only frames of *other* nodes rendered
    with its own Blender build and device class, so it always checks exactly."""

    node_id: str
    blender_version: str
    device: str


@dataclass(frozen=True)
class VerificationResult:
    passed: bool
    reason: str
    mode: str
    pixel_sha256: str
    details: dict[str, Any]


@dataclass(frozen=True)
class FinishedVerification:
    job_id: str
    frame: int
    node_id: str
    verdict: Verdict
    task_done: bool = False
    change: ReputationChange | None = None
    contradicted_peer: tuple[str, ReputationChange] | None = None  # the audit disagreed

    @property
    def approved(self) -> bool:
        return self.verdict is Verdict.APPROVED

    @property
    def rejected(self) -> bool:
        return self.verdict is Verdict.REJECTED

    @property
    def escalated(self) -> bool:
        """The frame was not sampled but needs tiles after all (duplicate pixels)."""
        return self.verdict is Verdict.ESCALATED

    @property
    def audit(self) -> bool:
        """A peer's verdict waits for a coordinator verifier's second opinion."""
        return self.verdict is Verdict.AUDIT


@dataclass(frozen=True)
class Renewal:
    """The answer to a verifier's heartbeat: keep working until `expires_at`, or stop."""

    keep: bool
    expires_at: float
    reason: str


class LeasedCheck(NamedTuple):
    """A check just leased, with its job's facts and the frame it is about (None: gone)."""

    check: VerificationRecord
    job: JobFacts | None
    frame: FrameResultRecord | None


class DamagedCheck(Exception):
    """A check's stored links do not hold (its frame is not its task's): the verdict is not
    applied, and the quarantine holds the check for the operator (`doctor`)."""


class VerificationGone(Exception):
    """The verification is not leased to this verifier (expired, finished or unknown)."""


def standing_of(record: NodeStandingRecord | None) -> NodeStanding:
    if record is None:
        return NodeStanding()
    return NodeStanding(
        score=record.score,
        consecutive_verified=record.consecutive_verified,
        verified=record.verified,
        failed=record.failed,
        delivered=record.delivered,
        frames_since_failure=record.frames_since_failure,
        quarantined=record.quarantined,
    )


def node_rank(standing: NodeStanding) -> int:
    """1 for Tier 1 ... 3 for Tier 3 and probation (quarantined nodes lease nothing anyway)."""
    return standing.tier.rank


class ProofStore:
    def __init__(self, engine: Engine, policy: SchedulingPolicy | None = None, *,
                 peer_audit_rate: float = PEER_AUDIT_RATE,
                 rng: random.Random | None = None) -> None:
        self.engine = engine
        self.policy = policy or SchedulingPolicy()
        self.peer_audit_rate = peer_audit_rate
        self._rng = rng or random.SystemRandom()  # secret: a peer cannot tell which pass is audited
        # When each creator and job last had a check leased (fair ordering; a restart only
        # forgets who was served last, never a check).
        self._creator_served: dict[str, float] = {}
        self._job_served: dict[str, float] = {}
        self._served_lock = threading.Lock()
        self._stuck: list[tuple[str, str, float]] = []  # held since the last report_stuck
        self.quarantine = Quarantine(engine)
        # When each live lease began (renewals stop at MAX_CHECK_SECONDS); a restart
        # requeues every leased check, so memory is enough.
        self._lease_started: dict[str, float] = {}
        self._jobs = JobFactsCache()

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------ reputation

    def standing_record(self, node_id: str) -> NodeStandingRecord:
        with self._session() as session:
            return session.get(NodeStandingRecord, node_id) or NodeStandingRecord(node_id=node_id)

    def standing(self, node_id: str) -> NodeStanding:
        with self._session() as session:
            return standing_of(session.get(NodeStandingRecord, node_id))

    def standings(self) -> dict[str, NodeStandingRecord]:
        with self._session() as session:
            return {r.node_id: r for r in session.exec(select(NodeStandingRecord))}

    def quarantined_nodes(self) -> set[str]:
        """Nodes quarantined now: the bond keeper's question every pass, without loading every
        node's standing (10,000 rows every 2 s was most of an idle coordinator's CPU)."""
        with self._session() as session:
            return set(session.exec(select(NodeStandingRecord.node_id)
                                    .where(col(NodeStandingRecord.quarantined))).all())

    def history(self, node_id: str, limit: int) -> list[ReputationEventRecord]:
        with self._session() as session:
            query = (
                select(ReputationEventRecord)
                .where(ReputationEventRecord.node_id == node_id)
                .order_by(col(ReputationEventRecord.id).desc())
                .limit(limit)
            )
            return list(session.exec(query))

    def record_event(
        self, node_id: str, event: NodeEvent, now: float, *, job_id: str = "", frame: int = 0,
        details: dict[str, Any] | None = None,
    ) -> ReputationChange:
        """A reliability event (lease completed, abandoned, timed out, crashed)."""
        with self._session() as session:
            change = _apply(session, node_id, event, now, job_id, frame, details or {})
            session.commit()
            return change

    def count_completed_lease(self, node_id: str, now: float) -> None:
        with self._session() as session:
            record = session.get(NodeStandingRecord, node_id, with_for_update=True) or \
                NodeStandingRecord(node_id=node_id)
            record.leases_completed += 1
            record.updated_at = now
            session.add(record)
            session.commit()

    def set_quarantine(self, node_id: str, quarantined: bool, reason: str, now: float) -> None:
        with self._session() as session:
            record = session.get(NodeStandingRecord, node_id, with_for_update=True) or \
                NodeStandingRecord(node_id=node_id)
            before = standing_of(record)
            record.quarantined = quarantined
            record.updated_at = now
            session.add(record)
            session.add(ReputationEventRecord(
                node_id=node_id, at=now, kind="quarantine" if quarantined else "release",
                score_before=before.score, score_after=before.score,
                tier_after=standing_of(record).tier, reason=reason,
            ))
            session.commit()

    # ------------------------------------------------------------ verification queue

    def peer_may_verify(self, node_id: str) -> bool:
        """Only a Tier 1 node that is not quarantined verifies others."""
        standing = self.standing(node_id)
        return standing.tier == PEER_TIER and not standing.quarantined

    def peer_may_read(self, peer_id: str, sha256: str) -> bool:
        """A verifier (the coordinator's by key, or a peer) reads the frames, their passes
        files and the scene of the jobs whose checks are leased to it, nothing else."""
        held = select(VerificationRecord.job_id).where(
            VerificationRecord.verifier_id == peer_id,
            VerificationRecord.state == VerificationState.LEASED)
        frame = select(VerificationRecord.verification_id).where(
            col(VerificationRecord.job_id).in_(held), VerificationRecord.image_sha256 == sha256)
        passes = select(FrameResultRecord.job_id).where(
            col(FrameResultRecord.job_id).in_(held), FrameResultRecord.passes_sha256 == sha256)
        scenes = select(JobRecord.scene_id).where(col(JobRecord.job_id).in_(held))
        with self._session() as session:
            return (bool(session.exec(frame).first()) or bool(session.exec(passes).first())
                    or scene_holds(session, scenes, sha256))

    def lease_verification(self, verifier_id: str, now: float,
                           lease_seconds: float | None = None,
                           peer: Peer | None = None) -> VerificationRecord | None:
        """`lease_check`'s check alone."""
        leased = self.lease_check(verifier_id, now, lease_seconds, peer)
        return leased.check if leased is not None else None

    def lease_check(self, verifier_id: str, now: float, lease_seconds: float | None = None,
                    peer: Peer | None = None) -> LeasedCheck | None:
        """The next check in fair order (`verification_queue.fair_order`), leased for
        `lease_seconds` or, when None, for a time sized from the measured cost of its job's
        checks, with its job's immutable facts and its frame, in one transaction. Checks of
        cancelled jobs are never leased. A peer gets only tile checks it can judge exactly,
        of other nodes' frames, and never one another peer has judged (those await an
        audit)."""
        queued: list[Any] = [VerificationRecord.state == VerificationState.QUEUED]
        if peer is not None:
            judged = select(PeerVerdictRecord.verification_id)
            queued += [
                col(VerificationRecord.render_tiles).is_(True),
                VerificationRecord.node_id != peer.node_id,
                VerificationRecord.blender_version == peer.blender_version,
                func.upper(VerificationRecord.device) == peer.device.upper(),
                col(VerificationRecord.verification_id).not_in(judged),
            ]
        with self._session() as session:
            for candidate in self._fair_candidates(session, queued):
                checks = session.exec(
                    select(VerificationRecord, FrameResultRecord).where(*queued)
                    .outerjoin(FrameResultRecord, and_(
                        col(FrameResultRecord.job_id) == col(VerificationRecord.job_id),
                        col(FrameResultRecord.frame) == col(VerificationRecord.frame)))
                    .where(VerificationRecord.job_id == candidate.job_id)
                    .order_by(col(VerificationRecord.created_at)).limit(4)
                ).all()
                for check, frame in checks:
                    seconds = lease_seconds if lease_seconds is not None else \
                        self._sized_lease(session, check, frame)
                    claimed = session.execute(
                        update(VerificationRecord)
                        .where(col(VerificationRecord.verification_id) == check.verification_id)
                        .where(col(VerificationRecord.state) == VerificationState.QUEUED)
                        .values(state=VerificationState.LEASED, verifier_id=verifier_id,
                                lease_expires_at=now + seconds)
                    )  # the loaded check takes these values too (synchronize_session)
                    if claimed.rowcount != 1:  # type: ignore[attr-defined]
                        continue  # another verifier's (another coordinator's) first
                    job = self._jobs.read(session.connection(), check.job_id)
                    session.commit()
                    self._served(candidate, now)
                    self._lease_started[check.verification_id] = now
                    return LeasedCheck(check, job, frame)
            return None

    def _fair_candidates(self, session: Session, conditions: list[Any]) -> list[Candidate]:
        """Each live job's oldest check matching `conditions`, in fair order."""
        oldest = (
            select(VerificationRecord.job_id, JobRecord.creator,
                   func.min(VerificationRecord.created_at))
            .join(JobRecord, col(JobRecord.job_id) == col(VerificationRecord.job_id))
            .where(*conditions)
            .where(col(JobRecord.cancelled).is_(False))
            .group_by(col(VerificationRecord.job_id), col(JobRecord.creator))
            .order_by(func.min(VerificationRecord.created_at))
            .limit(CANDIDATE_JOBS)
        )
        candidates = [Candidate(job_id, creator, created)
                      for job_id, creator, created in session.exec(oldest).all()]
        return fair_order(candidates, self._creator_served, self._job_served)

    def _served(self, candidate: Candidate, now: float) -> None:
        with self._served_lock:
            self._creator_served[candidate.creator] = now
            self._job_served[candidate.job_id] = now
            if len(self._job_served) > SERVED_MEMORY:  # forget the longest-idle half
                for job_id in sorted(self._job_served, key=self._job_served.__getitem__)[
                        :SERVED_MEMORY // 2]:
                    del self._job_served[job_id]
            if len(self._creator_served) > SERVED_MEMORY:
                for creator in sorted(self._creator_served,
                                      key=self._creator_served.__getitem__)[:SERVED_MEMORY // 2]:
                    del self._creator_served[creator]

    def _sized_lease(self, session: Session, check: VerificationRecord,
                     frame: FrameResultRecord | None = None) -> float:
        """Sized from what a check of this job measured; before any, from the job's quote
        (the coordinator's own probe, the high end per frame), else the node's render time
        (`frame`: the check's frame where the caller has read it)."""
        quote = session.get(JobQuoteRecord, check.job_id)
        if quote is not None and quote.high_ms_per_frame > 0:
            frame_seconds = quote.high_ms_per_frame / 1000
        else:
            frame = frame or session.get(FrameResultRecord, (check.job_id, check.frame))
            frame_seconds = frame.render_seconds if frame is not None else 0.0
        return lease_seconds_for(measured_check_seconds(session, check.job_id), frame_seconds)

    def requeue_expired_verifications(self, now: float, *, count_failures: bool = True,
                                      verifier_id: str | None = None) -> int:
        """Lapsed leases go back to the queue; each lapse is a failure of the check, and one
        that lapsed `MAX_CHECK_FAILURES` times is held as stuck. ``count_failures=False`` on
        start-up: the checks died with the old process, not by their own fault. With a
        ``verifier_id``, only that verifier's leases (a coordinator restarting beside others
        takes back its own verifier's checks, never a live neighbour's)."""
        with self._session() as session:
            query = (select(VerificationRecord)
                     .where(col(VerificationRecord.state) == VerificationState.LEASED)
                     .where(col(VerificationRecord.lease_expires_at) < now))
            if verifier_id is not None:
                query = query.where(col(VerificationRecord.verifier_id) == verifier_id)
            # A check whose verdict is being applied (row locked, PostgreSQL) is skipped, not
            # put back in the queue under it; the next pass looks again.
            lapsed = session.exec(query.with_for_update(skip_locked=True)).all()
            for check in lapsed:
                seconds = "" if not check.lease_expires_at or not math.isfinite(now) else \
                    f" {now - check.lease_expires_at:.0f}s ago"
                reason = f"lease of verifier {check.verifier_id[:12]} lapsed{seconds}"
                _requeue(session, check)
                if count_failures:
                    self._count_failure(session, check, reason, now)
            session.commit()
        self._report_stuck()
        if math.isfinite(now):  # forget leases long over (finished or handed back)
            horizon = now - MAX_CHECK_SECONDS - LEASE_CAP_SECONDS
            for verification_id in [v for v, t in self._lease_started.items() if t < horizon]:
                del self._lease_started[verification_id]
        return len(lapsed)

    # ------------------------------------------------------------ keeping the queue moving

    def extend_verification(self, verification_id: str, verifier_id: str,
                            now: float) -> Renewal:
        """The verifier's heartbeat: still working on the check, so its lease is renewed for
        another sized lease; "stop" when the check is gone, re-leased or its job cancelled."""
        with self._session() as session:
            check = session.get(VerificationRecord, verification_id, with_for_update=True)
            if (check is None or check.state != VerificationState.LEASED
                    or check.verifier_id != verifier_id):
                state = "unknown" if check is None else check.state
                why = ("its job was cancelled"
                       if check is not None and state == VerificationState.CANCELLED
                       else f"it is no longer leased to you ({state})")
                return Renewal(False, 0.0, f"stop verification {verification_id}: {why}")
            job = session.get(JobRecord, check.job_id)
            if job is None or job.cancelled:
                return Renewal(False, 0.0, f"stop verification {verification_id}: its job "
                               "was cancelled")
            started = self._lease_started.get(verification_id, now)
            if now - started > MAX_CHECK_SECONDS:  # a hoarding or hung verifier
                reason = (f"verifier {verifier_id[:12]} worked on it for more than "
                          f"{MAX_CHECK_SECONDS / 3600:.0f} h")
                _requeue(session, check)
                self._count_failure(session, check, reason, now)
                session.commit()
                self._report_stuck()
                return Renewal(False, 0.0, f"stop verification {verification_id}: {reason}")
            expires = now + self._sized_lease(session, check)
            session.execute(update(VerificationRecord)
                            .where(col(VerificationRecord.verification_id) == verification_id)
                            .where(col(VerificationRecord.state) == VerificationState.LEASED)
                            .where(col(VerificationRecord.verifier_id) == verifier_id)
                            .values(lease_expires_at=expires))
            session.commit()
            return Renewal(True, expires, "")

    def release_verification(self, verification_id: str, verifier_id: str, reason: str,
                             now: float) -> bool:
        """The verifier could not run the check (its own trouble, not the node's): back in
        the queue at once, counted as a failure; False when it was not leased to this one."""
        with self._session() as session:
            check = session.get(VerificationRecord, verification_id, with_for_update=True)
            if (check is None or check.state != VerificationState.LEASED
                    or check.verifier_id != verifier_id):
                return False
            _requeue(session, check)
            self._count_failure(session, check, f"verifier {verifier_id[:12]}: {reason}", now)
            session.commit()
        self._report_stuck()
        return True

    def _count_failure(self, session: Session, check: VerificationRecord, reason: str,
                       now: float) -> None:
        """One more infrastructure failure; at `MAX_CHECK_FAILURES` the check is held as stuck
        (``state="held"``) and quarantined with its reason for the operator."""
        trouble = session.get(VerificationTroubleRecord, check.verification_id) or \
            VerificationTroubleRecord(verification_id=check.verification_id,
                                      job_id=check.job_id, updated_at=now)
        trouble.failures += 1
        trouble.last_error = reason[:500]
        trouble.updated_at = now
        if trouble.failures >= MAX_CHECK_FAILURES:
            trouble.stuck = True
            check.state = VerificationState.HELD
            session.add(check)
            self._stuck.append((check.verification_id, f"stuck after {trouble.failures} "
                                f"failures, the last: {trouble.last_error}", now))
        session.add(trouble)

    def _report_stuck(self) -> None:
        """Quarantine the checks just held as stuck, after their transaction committed
        (`render-coordinator doctor` lists them; `doctor --release verification ID` queues
        one again with its failures forgotten)."""
        with self._served_lock:
            stuck, self._stuck = self._stuck, []
        for verification_id, reason, now in stuck:
            self.quarantine.add(VERIFICATION, verification_id, reason, now)

    def drop_cancelled_checks(self, now: float) -> list[str]:
        """Checks of cancelled jobs are not worth a verifier's time: they are dropped and
        their tasks cancelled, so the job settles and its escrow is refunded. An unverified
        frame is never charged (docs/PAYMENTS.md: only approved frames are); frames approved
        before the cancel stay approved and charged. Returns the jobs touched."""
        with self._session() as session:
            cancelled_jobs = select(JobRecord.job_id).where(col(JobRecord.cancelled).is_(True))
            checks = session.exec(
                select(VerificationRecord)
                .where(col(VerificationRecord.state).in_(OPEN_CHECKS))
                .where(col(VerificationRecord.job_id).in_(cancelled_jobs))
            ).all()
            if not checks:
                return []
            jobs = sorted({c.job_id for c in checks})
            for check in checks:
                check.state = VerificationState.CANCELLED
                check.reason = "job cancelled before verification"
                check.finished_at = now
                session.add(check)
                frame = session.get(FrameResultRecord, (check.job_id, check.frame))
                if frame is not None and frame.verdict != FrameVerdict.APPROVED:
                    frame.verification = "not verified: job cancelled (not charged)"
                    session.add(frame)
            session.execute(
                update(TaskRecord)
                .where(col(TaskRecord.job_id).in_(jobs))
                .where(col(TaskRecord.state) == TaskState.VERIFYING)
                .values(state=TaskState.CANCELLED, lease_expires_at=None, updated_at=now)
            )
            session.execute(delete(VerificationTroubleRecord).where(
                col(VerificationTroubleRecord.verification_id).in_(
                    [c.verification_id for c in checks])))
            session.commit()
        held = self.quarantine.keys(VERIFICATION)
        for check in checks:
            if check.verification_id in held:
                self.quarantine.release(VERIFICATION, check.verification_id)
        return jobs

    def queue_standing(self, job_id: str) -> QueueStanding:
        """Where this job's frames stand in the verification queue, for status and watch."""
        with self._session() as session:
            states = dict(session.exec(
                select(VerificationRecord.state, func.count())
                .where(VerificationRecord.job_id == job_id)
                .where(col(VerificationRecord.state).in_(OPEN_CHECKS))
                .group_by(col(VerificationRecord.state))).all())
            busy = session.exec(select(func.count()).select_from(VerificationRecord)
                                .where(VerificationRecord.state == VerificationState.LEASED)).one()
            reason = ""
            if states.get(VerificationState.HELD):
                reason = session.exec(
                    select(VerificationTroubleRecord.last_error)
                    .where(VerificationTroubleRecord.job_id == job_id)
                    .where(col(VerificationTroubleRecord.stuck).is_(True))
                    .order_by(col(VerificationTroubleRecord.updated_at).desc())).first() \
                    or "held for the operator (render-coordinator doctor)"
            position = 0
            if states.get(VerificationState.QUEUED):
                order = [c.job_id for c in self._fair_candidates(
                    session, [VerificationRecord.state == VerificationState.QUEUED])]
                position = order.index(job_id) + 1 if job_id in order else len(order) + 1
            return QueueStanding(waiting=int(states.get(VerificationState.QUEUED, 0)),
                                 in_progress=int(states.get(VerificationState.LEASED, 0)),
                                 position=position,
                                 stuck=int(states.get(VerificationState.HELD, 0)),
                                 stuck_reason=reason, verifiers_busy=int(busy))

    def hold_verification(self, verification_id: str) -> None:
        """Keep a check the store could not apply out of the queue (it is quarantined):
        no verifier re-renders it in vain each time its lease lapses."""
        with self._session() as session:
            session.execute(update(VerificationRecord)
                            .where(col(VerificationRecord.verification_id) == verification_id)
                            .values(state=VerificationState.HELD, lease_expires_at=None))
            session.commit()

    def requeue_held_verification(self, verification_id: str) -> bool:
        """The operator released a held check: back in the queue for the next verifier."""
        with self._session() as session:
            moved = session.execute(
                update(VerificationRecord)
                .where(col(VerificationRecord.verification_id) == verification_id)
                .where(col(VerificationRecord.state) == VerificationState.HELD)
                .values(state=VerificationState.QUEUED, verifier_id="", lease_expires_at=None))
            session.execute(delete(VerificationTroubleRecord).where(
                col(VerificationTroubleRecord.verification_id) == verification_id))
            session.commit()
            return bool(moved.rowcount)  # type: ignore[attr-defined]

    def finish_verification(self, verification_id: str, verifier_id: str,
                            result: VerificationResult, now: float, *,
                            peer: bool = False) -> FinishedVerification:
        """Apply a verifier's verdict: approve or reject the frame, move the task and the node.

        A peer's pass approves the frame unless the secret draw audits it; a peer's failure,
        and an audited pass, go back to the queue for a coordinator verifier (``peer=False``),
        whose verdict settles the frame and, if it contradicts the peer, cuts the peer.
        """
        with self._session() as session:
            # Locked on PostgreSQL: the same verdict retried on another coordinator waits,
            # then finds the check done instead of applying it twice.
            check = session.get(VerificationRecord, verification_id, with_for_update=True)
            if (check is None or check.state != VerificationState.LEASED
                    or check.verifier_id != verifier_id):
                raise VerificationGone(f"verification {verification_id} is not leased to you")
            audited = peer and peer_audited(result.passed, self._rng.random,
                                            self.peer_audit_rate)
            if peer:
                session.add(PeerVerdictRecord(
                    verification_id=verification_id, peer_id=verifier_id, passed=result.passed,
                    reason=result.reason[:2000], audited=audited, at=now))
            verdict = decide(result.passed, audited=audited, tiles_rendered=check.render_tiles,
                             has_twin=lambda: self._duplicate(session, check, result))
            if verdict is Verdict.AUDIT:
                _requeue(session, check)
                session.commit()
                return FinishedVerification(check.job_id, check.frame, check.node_id, verdict)
            if verdict is Verdict.ESCALATED:
                # Identical pixels elsewhere may be an honest still frame or a copied one:
                # only a re-render can tell, so the frame is sampled after all.
                check.render_tiles = True
                check.pixel_sha256 = result.pixel_sha256
                _requeue(session, check)
                session.commit()
                return FinishedVerification(check.job_id, check.frame, check.node_id, verdict)
            check.state = VerificationState.DONE
            check.passed = result.passed
            check.reason = result.reason[:2000]
            check.mode = result.mode
            check.details_json = json.dumps(result.details)[:100_000]
            check.pixel_sha256 = result.pixel_sha256
            check.finished_at = now
            session.add(check)
            details = {"verification_id": verification_id, "tiles_checked": check.render_tiles,
                       "mode": result.mode, "reason": result.reason}
            if peer:
                details["peer"] = verifier_id
            contradicted = None if peer else self._audit_peer(session, check, result, now)
            if verdict is Verdict.APPROVED:
                event = NodeEvent.VERIFIED if check.render_tiles else NodeEvent.DELIVERED
                change = _apply(session, check.node_id, event, now, check.job_id, check.frame,
                                details)
                task_done = self._approve(session, check, result, now)
                session.commit()
                return FinishedVerification(check.job_id, check.frame, check.node_id, verdict,
                                            task_done, change, contradicted_peer=contradicted)
            change = _apply(session, check.node_id, NodeEvent.FAILED, now, check.job_id,
                            check.frame, details)
            task = session.get(TaskRecord, check.task_id)
            assert task is not None
            self._reject(session, check, task, result.reason, now)
            if change.recheck_recent:
                self._sample_pending(session, check.node_id, change.recheck_recent)
            session.commit()
            return FinishedVerification(check.job_id, check.frame, check.node_id, verdict,
                                        False, change, contradicted_peer=contradicted)

    def _audit_peer(self, session: Session, check: VerificationRecord,
                    result: VerificationResult,
                    now: float) -> tuple[str, ReputationChange] | None:
        """Compare a peer's earlier verdict on this check with ours; a wrong one cuts the peer
        as hard as a failed frame (it drops out of Tier 1, so it verifies no more)."""
        verdict = session.get(PeerVerdictRecord, check.verification_id)
        if verdict is None or verdict.agreed is not None:
            return None
        verdict.agreed = verdict.passed == result.passed
        session.add(verdict)
        if verdict.agreed:
            return None
        said = "passed" if verdict.passed else "failed"
        change = _apply(session, verdict.peer_id, NodeEvent.FAILED, now, check.job_id,
                        check.frame, {
            "peer_verdict": said, "audit": result.reason, "verification_id": check.verification_id,
            "checked_node": check.node_id,
        })
        return verdict.peer_id, change

    def _duplicate(self, session: Session, check: VerificationRecord,
                   result: VerificationResult) -> bool:
        if not result.pixel_sha256:
            return False
        twin = session.exec(
            select(FrameResultRecord.frame)
            .where(FrameResultRecord.pixel_sha256 == result.pixel_sha256)
            .where((col(FrameResultRecord.job_id) != check.job_id)
                   | (col(FrameResultRecord.frame) != check.frame))
            .limit(1)
        ).first()
        return twin is not None

    def _approve(self, session: Session, check: VerificationRecord,
                 result: VerificationResult, now: float) -> bool:
        """The frame approved, and its task done if that was its last frame waiting: two
        UPDATEs, nothing read (done: the second one's row count).

        Called with the node's standing locked (`_apply`): a task's frames are all one
        node's, so two of them approved at once on two coordinators (PostgreSQL) take turns,
        and the second sees the first's frame approved."""
        unsynced = {"synchronize_session": False}  # neither row is loaded in this session
        approved = session.execute(
            update(FrameResultRecord)
            .where(col(FrameResultRecord.job_id) == check.job_id)
            .where(col(FrameResultRecord.frame) == check.frame)
            .where(col(FrameResultRecord.task_id) == check.task_id)
            .values(verdict=FrameVerdict.APPROVED, pixel_sha256=result.pixel_sha256,
                    verification=(f"passed: {result.mode}" if check.render_tiles
                                  else "passed cheap checks (not sampled)")),
            execution_options=unsynced)
        if approved.rowcount != 1:  # type: ignore[attr-defined]
            raise DamagedCheck(f"verification {check.verification_id}: no frame {check.frame} "
                               f"of job {check.job_id} in task {check.task_id}")
        waiting = exists().where(col(FrameResultRecord.task_id) == check.task_id,
                                 col(FrameResultRecord.verdict) != FrameVerdict.APPROVED)
        done = session.execute(
            update(TaskRecord)
            .where(col(TaskRecord.task_id) == check.task_id)
            .where(col(TaskRecord.state) == TaskState.VERIFYING)
            .where(~waiting)
            .values(state=next_task_state(TaskState.VERIFYING, TaskEvent.APPROVE),
                    updated_at=now),
            execution_options=unsynced)
        return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def _reject(self, session: Session, check: VerificationRecord, task: TaskRecord,
                reason: str, now: float) -> None:
        """The node's whole task goes back to the queue, for another node to render."""
        session.execute(delete(FrameResultRecord).where(
            col(FrameResultRecord.task_id) == task.task_id))
        session.execute(
            update(VerificationRecord)
            .where(col(VerificationRecord.task_id) == task.task_id)
            .where(col(VerificationRecord.state).in_(
                [VerificationState.QUEUED, VerificationState.LEASED]))
            .values(state=VerificationState.CANCELLED, finished_at=now)
        )
        if task.state == TaskState.VERIFYING:
            record_task_failure(session, task, f"rejected by Proof-of-Render: {reason}", now,
                                self.policy.max_attempts)

    def _sample_pending(self, session: Session, node_id: str, limit: int) -> None:
        """After a failure, the node's frames still waiting are all re-rendered in tiles."""
        waiting = session.exec(
            select(VerificationRecord.verification_id)
            .where(VerificationRecord.node_id == node_id)
            .where(VerificationRecord.state == VerificationState.QUEUED)
            .order_by(col(VerificationRecord.created_at).desc())
            .limit(limit)
        ).all()
        if waiting:
            session.execute(update(VerificationRecord)
                            .where(col(VerificationRecord.verification_id).in_(waiting))
                            .values(render_tiles=True))

    def verifications_of(self, job_id: str) -> list[VerificationRecord]:
        with self._session() as session:
            query = (select(VerificationRecord).where(VerificationRecord.job_id == job_id)
                     .order_by(col(VerificationRecord.created_at)))
            return list(session.exec(query))


def _requeue(session: Session, check: VerificationRecord) -> None:
    """Back to the queue, for the next verifier that may take it."""
    check.state = VerificationState.QUEUED
    check.verifier_id = ""
    check.lease_expires_at = None
    session.add(check)


def _apply(session: Session, node_id: str, event: NodeEvent, now: float, job_id: str,
           frame: int, details: dict[str, Any]) -> ReputationChange:
    """Move the node's standing by one event. Its row is locked (PostgreSQL) from this read
    to the commit: the new standing is computed from the old, and another coordinator
    applying a verdict on the same node meanwhile would otherwise be overwritten."""
    record = session.get(NodeStandingRecord, node_id, with_for_update=True) or \
        NodeStandingRecord(node_id=node_id)
    new, change = reputation.apply_event(standing_of(record), event)
    record.score = new.score
    record.consecutive_verified = new.consecutive_verified
    record.verified = new.verified
    record.failed = new.failed
    record.delivered = new.delivered
    record.frames_since_failure = new.frames_since_failure
    record.quarantined = new.quarantined
    if event in (NodeEvent.ABANDONED, NodeEvent.TIMEOUT, NodeEvent.CRASH):
        record.leases_abandoned += 1
    record.updated_at = now
    session.add(record)
    session.add(ReputationEventRecord(
        node_id=node_id, at=now, kind=event.value, score_before=change.score_before,
        score_after=change.score_after, tier_after=change.tier_after, reason=change.reason,
        job_id=job_id, frame=frame, details_json=json.dumps(details)[:100_000],
    ))
    return change

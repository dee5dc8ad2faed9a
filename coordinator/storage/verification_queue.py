"""The rules that keep verification moving: fair order, sized leases, escalation.

One slow check must never hold the farm: a check's lease is sized from what checks of its job
have measured and renewed by the verifier's heartbeat while it works (`ExtendVerification`);
the next check goes to the creator, then the job, served least recently (so a backlog of one
job does not stall the others); a check that keeps failing for infrastructure reasons (its
lease lapsed, the verifier could not run it) is held after `MAX_CHECK_FAILURES` with its reason
for the operator (`render-coordinator doctor`) instead of being retried silently forever.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

from sqlmodel import Field, Session, SQLModel, col, select

from coordinator.domain.states import VerificationState
from coordinator.storage.models import VerificationRecord

LEASE_FLOOR_SECONDS = 120.0  # a check's first lease never gets shorter than this
LEASE_CAP_SECONDS = 3600.0  # nor longer: the heartbeat extends it while the verifier works
LEASE_COST_FACTOR = 3.0  # lease = factor x the measured cost (headroom for a loaded verifier)
MAX_CHECK_SECONDS = 2 * 3600.0  # renewals stop here: the check goes back to the queue
MAX_CHECK_FAILURES = 3  # lapsed leases or verifier errors before a check is held as stuck
CANDIDATE_JOBS = 64  # jobs considered per lease (the oldest checks of each)


class VerificationTroubleRecord(SQLModel, table=True):
    """Infrastructure failures of one check (never the node's fault): lapsed leases and
    errors its verifiers reported. A check without trouble has no row."""

    __tablename__ = "verification_trouble"
    verification_id: str = Field(primary_key=True)
    job_id: str = Field(index=True)
    failures: int = 0
    last_error: str = ""
    stuck: bool = False  # held out of the queue for the operator
    updated_at: float


@dataclass(frozen=True)
class Candidate:
    """The oldest queued check of one job."""

    job_id: str
    creator: str
    oldest: float


def fair_order(candidates: Iterable[Candidate], creator_served: dict[str, float],
               job_served: dict[str, float]) -> list[Candidate]:
    """Least recently served creator first, then that creator's least recently served job,
    then the oldest check: round-robin over creators and their jobs, oldest first within.

    A creator or job never served comes before any that was; ties fall back to age, so an
    idle farm still verifies oldest first.
    """
    return sorted(candidates, key=lambda c: (creator_served.get(c.creator, -math.inf),
                                             job_served.get(c.job_id, -math.inf), c.oldest))


def lease_seconds_for(measured_check_seconds: float | None, node_render_seconds: float) -> float:
    """A check's lease: `LEASE_COST_FACTOR` x what a check of this job took a verifier
    (else the node's own render time of the frame), within [floor, cap]."""
    cost = measured_check_seconds if measured_check_seconds else max(node_render_seconds, 0.0)
    return min(LEASE_CAP_SECONDS, max(LEASE_FLOOR_SECONDS, LEASE_COST_FACTOR * cost))


def measured_check_seconds(session: Session, job_id: str) -> float | None:
    """What the latest finished tile re-render of this job took its verifier."""
    details = session.exec(
        select(VerificationRecord.details_json)
        .where(VerificationRecord.job_id == job_id)
        .where(VerificationRecord.state == VerificationState.DONE)
        .where(col(VerificationRecord.render_tiles).is_(True))
        .order_by(col(VerificationRecord.finished_at).desc())
        .limit(1)
    ).first()
    if not details:
        return None
    try:
        seconds = float(json.loads(details).get("render_seconds") or 0.0)
    except (ValueError, TypeError, AttributeError):
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


@dataclass(frozen=True)
class QueueStanding:
    """Where one job's frames stand in the verification queue (for status and watch)."""

    waiting: int = 0  # queued checks of this job
    in_progress: int = 0  # leased to a verifier now
    position: int = 0  # this job's next check is the Nth in line (1: next); 0: none queued
    stuck: int = 0  # held for the operator
    stuck_reason: str = ""
    verifiers_busy: int = 0  # checks leased farm-wide

"""Reads across the farm's and the money path's tables, for the settlement sweep and the bond
keeper: what is in flight for a node, whom its quarantine cheated, what the open epoch owes.

Read-only and one query each; the rules that use the answers are in `coordinator.bonding`,
`coordinator.settlement` and `coordinator.payments.bonds`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import exists, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from coordinator.domain.ledger import EscrowState
from coordinator.domain.reputation import NodeEvent, Tier
from coordinator.domain.states import TaskState, VerificationState
from coordinator.storage.models import (
    JobRecord,
    NodeStandingRecord,
    ReputationEventRecord,
    TaskRecord,
    VerificationRecord,
)
from coordinator.storage.payment_models import JobBillingRecord, WorkCreditRecord


@dataclass(frozen=True)
class InFlight:
    leases: int  # tasks the node holds
    unverified: int  # its frames still queued or leased for verification


@dataclass(frozen=True)
class QuarantineFailure:
    """The failed verification that quarantined a node, and the creators its rejected frames
    cheated since an earlier slash (one entry per frame)."""

    event_id: int
    reason: str


def in_flight(engine: Engine, node_id: str) -> InFlight:
    with Session(engine) as session:
        leased = session.exec(
            select(func.count()).select_from(TaskRecord).where(TaskRecord.node_id == node_id)
            .where(TaskRecord.state == TaskState.LEASED)
        ).one()
        unverified = session.exec(
            select(func.count()).select_from(VerificationRecord)
            .where(VerificationRecord.node_id == node_id)
            .where(col(VerificationRecord.state).in_(
                [VerificationState.QUEUED, VerificationState.LEASED]))
        ).one()
    return InFlight(int(leased), int(unverified))


def quarantining_failure(engine: Engine, node_id: str) -> QuarantineFailure | None:
    """The failure that put a (still) quarantined node in quarantine; None otherwise (not
    quarantined, or quarantined by an operator).

    The event that *entered* the current quarantine, not the latest one in it: frames
    delivered before the quarantine and verified after it fail inside the same quarantine,
    which must slash once."""
    with Session(engine) as session:
        record = session.get(NodeStandingRecord, node_id)
        if record is None or not record.quarantined:
            return None
        entered: ReputationEventRecord | None = None
        for event in session.exec(
            select(ReputationEventRecord)
            .where(ReputationEventRecord.node_id == node_id)
            .order_by(col(ReputationEventRecord.id).desc())
        ):
            if event.tier_after != Tier.QUARANTINED:
                break
            entered = event
    if entered is None or entered.id is None or entered.kind != NodeEvent.FAILED:
        return None
    return QuarantineFailure(entered.id, entered.reason)


def rejected_frames_by_creator(engine: Engine, node_id: str, after_event: int,
                               through_event: int) -> Counter[str]:
    """How many of the node's frames failed verification per job creator, between two of its
    reputation events (ids, the first excluded)."""
    with Session(engine) as session:
        creators = session.exec(
            select(JobRecord.creator)
            .join(ReputationEventRecord,
                  col(ReputationEventRecord.job_id) == col(JobRecord.job_id))
            .where(ReputationEventRecord.node_id == node_id)
            .where(ReputationEventRecord.kind == NodeEvent.FAILED)
            .where(col(ReputationEventRecord.id) > after_event)
            .where(col(ReputationEventRecord.id) <= through_event)
        ).all()
    return Counter(creators)


def open_epoch_work(engine: Engine, now: float) -> dict[str, int]:
    """Reference-ms of approved work per node in the open epoch, credited up to `now`."""
    with Session(engine) as session:
        rows = session.exec(
            select(WorkCreditRecord.node_id, func.sum(WorkCreditRecord.work_ms))
            .where(col(WorkCreditRecord.epoch).is_(None))
            .where(col(WorkCreditRecord.created_at) <= now)
            .group_by(WorkCreditRecord.node_id)
        ).all()
    return {node: int(total or 0) for node, total in rows}


def open_epoch_earners(engine: Engine) -> set[str]:
    """Every node with a credit in the open epoch."""
    with Session(engine) as session:
        return set(session.exec(select(WorkCreditRecord.node_id)
                                .where(col(WorkCreditRecord.epoch).is_(None))
                                .distinct()).all())


def orphan_escrows(engine: Engine, opened_before: float) -> list[str]:
    """Open escrows older than `opened_before` whose job was never created (a crash at
    submit): every unsettled job has one, so this is one query, not a lookup per job."""
    with Session(engine) as session:
        return list(session.exec(
            select(JobBillingRecord.job_id)
            .where(JobBillingRecord.state == EscrowState.OPEN)
            .where(col(JobBillingRecord.created_at) < opened_before)
            .where(~exists().where(col(JobRecord.job_id) == col(JobBillingRecord.job_id)))
        ).all())

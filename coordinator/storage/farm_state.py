"""The farm's state in numbers, read in one connection: what `/metrics` reports at each scrape.

Counts only (no ids), grouped by the farm's own vocabulary (tiers, states, kinds), so the
exporter's label values stay bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from coordinator.domain.states import TaskState, VerificationState
from coordinator.storage.models import JobRecord, NodeRecord, TaskRecord, VerificationRecord
from coordinator.storage.payment_models import ChainOpRecord, FrameChargeRecord


@dataclass(frozen=True)
class ChainOpCount:
    kind: str
    state: str
    count: int
    with_error: int  # whose last attempt recorded an error


@dataclass(frozen=True)
class FarmState:
    queued_frames_by_tier: dict[int, int]
    frames_by_state: dict[str, int]
    leases: int
    nodes_online: int
    verifications_by_state: dict[str, int]
    checks_passed: int
    checks_failed: int
    frames_charged: int
    charged_usd_micro: int
    tokens_burned: int
    chain_ops: list[ChainOpCount] = field(default_factory=list)


def read_farm_state(engine: Engine, *, seen_since: float) -> FarmState:
    """Every figure of `FarmState`; a node counts as online when heard from after `seen_since`."""
    frames_in_task = col(TaskRecord.last_frame) - col(TaskRecord.first_frame) + 1
    with engine.connect() as db:
        by_tier = {int(tier): int(n or 0) for tier, n in db.execute(
            select(col(JobRecord.tier), func.sum(frames_in_task))
            .select_from(TaskRecord)
            .join(JobRecord, col(JobRecord.job_id) == col(TaskRecord.job_id))
            .where(col(TaskRecord.state) == TaskState.QUEUED)
            .group_by(col(JobRecord.tier))).all()}
        by_state = {str(state): int(n or 0) for state, n in db.execute(
            select(col(TaskRecord.state), func.sum(frames_in_task))
            .group_by(col(TaskRecord.state))).all()}
        leases = int(db.execute(
            select(func.count()).where(col(TaskRecord.state) == TaskState.LEASED)).scalar_one())
        online = int(db.execute(select(func.count()).where(
            col(NodeRecord.last_seen_at) >= seen_since)).scalar_one())
        rows = db.execute(select(col(VerificationRecord.state), col(VerificationRecord.passed),
                                 func.count()).group_by(col(VerificationRecord.state),
                                                        col(VerificationRecord.passed))).all()
        checks: dict[str, int] = {}
        passed = failed = 0
        for state, ok, n in rows:
            checks[state] = checks.get(state, 0) + n
            if state == VerificationState.DONE:
                passed += n if ok else 0
                failed += 0 if ok else n
        count, usd_micro, burned = db.execute(select(
            func.count(), func.coalesce(func.sum(FrameChargeRecord.cost_usd_micro), 0),
            func.coalesce(func.sum(FrameChargeRecord.tokens_burned), 0))).one()
        ops = [ChainOpCount(kind, state, int(n), int(with_error or 0))
               for kind, state, n, with_error in db.execute(select(
                   col(ChainOpRecord.kind), col(ChainOpRecord.state), func.count(),
                   func.sum(case((col(ChainOpRecord.error) != "", 1), else_=0)))
                   .group_by(col(ChainOpRecord.kind), col(ChainOpRecord.state))).all()]
    return FarmState(by_tier, by_state, leases, online, checks, passed, failed, int(count),
                     int(usd_micro), int(burned), ops)

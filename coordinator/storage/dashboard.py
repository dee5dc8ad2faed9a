"""Read-only queries behind the web dashboard (coordinator/dashboard).

Every list is a page (offset, limit) ordered by an indexed column or a primary key, so a page
costs the same with 10 jobs or 10,000 (bench/dashboard_bench.py). Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from coordinator.api.convert import budget_state
from coordinator.domain.frames import parse_frames
from coordinator.domain.ledger import BURNED, ISSUED
from coordinator.domain.states import TaskState, job_state_from_frames
from coordinator.storage import ledger
from coordinator.storage.models import (
    FrameResultRecord,
    JobBudgetRecord,
    JobRecord,
    NodeRecord,
    NodeStandingRecord,
    ReputationEventRecord,
    TaskRecord,
)
from coordinator.storage.payment_models import (
    ChainOpRecord,
    EpochRecord,
    FrameChargeRecord,
    JobBillingRecord,
    PayoutRecord,
)
from coordinator.storage.store import FarmStore


@dataclass(frozen=True)
class Page:
    """Which slice of a list: page numbers start at 1."""

    number: int = 1
    size: int = 50

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


@dataclass
class JobRow:
    job: JobRecord
    counts: dict[TaskState, int]
    state: str
    billing: JobBillingRecord | None
    paused: bool = False  # its budget paused it (coordinator.domain.budget)
    pause_reason: str = ""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, state: TaskState) -> int:
        return self.counts.get(state, 0)


@dataclass
class FrameCell:
    """One frame of a job as the grid shows it."""

    frame: int
    state: str  # the task's state (queued, leased, verifying, done, failed, cancelled)
    node_id: str
    attempts: int
    result: FrameResultRecord | None = None
    charge: FrameChargeRecord | None = None


@dataclass
class NodeRow:
    node: NodeRecord
    standing: NodeStandingRecord | None


@dataclass
class LedgerSummary:
    issued: int
    burned: int
    escrow_held: int
    ops: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, state) -> count
    jobs_by_state: dict[str, int] = field(default_factory=dict)


class DashboardQueries:
    """The dashboard's reads, one short session each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------------ jobs

    def jobs(self, page: Page) -> tuple[list[JobRow], int]:
        """Newest jobs first, with their frame counts and escrow; and how many jobs exist."""
        with self._session() as session:
            jobs = list(session.exec(
                select(JobRecord).order_by(col(JobRecord.created_at).desc(),
                                           col(JobRecord.job_id).desc())
                .offset(page.offset).limit(page.size)))
            total = int(session.exec(select(func.count()).select_from(JobRecord)).one())
            rows = self._job_rows(session, jobs)
        return rows, total

    def job(self, job_id: str) -> JobRow | None:
        with self._session() as session:
            job = session.get(JobRecord, job_id)
            if job is None:
                return None
            return self._job_rows(session, [job])[0]

    def _job_rows(self, session: Session, jobs: Sequence[JobRecord]) -> list[JobRow]:
        ids = [job.job_id for job in jobs]
        counts: dict[str, dict[TaskState, int]] = {job_id: {} for job_id in ids}
        billing: dict[str, JobBillingRecord] = {}
        if ids:
            frames = func.sum(TaskRecord.last_frame - TaskRecord.first_frame + 1)
            for job_id, state, n in session.exec(
                select(TaskRecord.job_id, TaskRecord.state, frames)
                .where(col(TaskRecord.job_id).in_(ids))
                .group_by(TaskRecord.job_id, TaskRecord.state)
            ):
                counts[job_id][TaskState(state)] = int(n)
            billing = {record.job_id: record for record in session.exec(
                select(JobBillingRecord).where(col(JobBillingRecord.job_id).in_(ids)))}
        budgets = {record.job_id: record for record in session.exec(
            select(JobBudgetRecord).where(col(JobBudgetRecord.job_id).in_(ids)))} if ids else {}
        _, awaiting = FarmStore(self.engine).budget_flags(ids)
        rows = []
        for job in jobs:
            budget = budgets.get(job.job_id)
            paused = budget is not None and budget.paused and not job.cancelled
            # The same state GetJob reports: paused by its budget, not done before it is paid.
            state = budget_state(job_state_from_frames(counts[job.job_id],
                                                       cancelled=job.cancelled),
                                 paused=paused, awaiting_charge=job.job_id in awaiting)
            rows.append(JobRow(job=job, counts=counts[job.job_id], state=str(state),
                               billing=billing.get(job.job_id), paused=paused,
                               pause_reason=budget.reason if paused and budget else ""))
        return rows

    def frames(self, job: JobRecord, page: Page) -> tuple[list[FrameCell], int]:
        """One page of a job's frames in frame order: task state, result and charge."""
        numbers = parse_frames(job.frames_spec)
        chosen = numbers[page.offset:page.offset + page.size]
        if not chosen:
            return [], len(numbers)
        low, high = chosen[0], chosen[-1]
        with self._session() as session:
            tasks = list(session.exec(
                select(TaskRecord).where(TaskRecord.job_id == job.job_id,
                                         col(TaskRecord.last_frame) >= low,
                                         col(TaskRecord.first_frame) <= high)))
            results = {r.frame: r for r in session.exec(
                select(FrameResultRecord).where(FrameResultRecord.job_id == job.job_id,
                                                col(FrameResultRecord.frame) >= low,
                                                col(FrameResultRecord.frame) <= high))}
            charges = {c.frame: c for c in session.exec(
                select(FrameChargeRecord).where(FrameChargeRecord.job_id == job.job_id,
                                                col(FrameChargeRecord.frame) >= low,
                                                col(FrameChargeRecord.frame) <= high))}
        task_of: dict[int, TaskRecord] = {}
        for task in tasks:
            for number in range(max(task.first_frame, low), min(task.last_frame, high) + 1):
                task_of[number] = task
        cells = []
        for number in chosen:
            holder = task_of.get(number)
            result = results.get(number)
            cells.append(FrameCell(
                frame=number,
                state=holder.state if holder else TaskState.QUEUED,
                node_id=(result.node_id if result else (holder.node_id if holder else "")) or "",
                attempts=holder.attempts if holder else 0,
                result=result, charge=charges.get(number)))
        return cells, len(numbers)

    def frame_result(self, job_id: str, frame: int) -> FrameResultRecord | None:
        with self._session() as session:
            return session.get(FrameResultRecord, (job_id, frame))

    # ------------------------------------------------------------------ nodes

    def nodes(self, page: Page) -> tuple[list[NodeRow], int]:
        """Nodes in order of registration, with their standing."""
        with self._session() as session:
            nodes = list(session.exec(
                select(NodeRecord).order_by(col(NodeRecord.registered_at),
                                            col(NodeRecord.node_id))
                .offset(page.offset).limit(page.size)))
            total = int(session.exec(select(func.count()).select_from(NodeRecord)).one())
            standings = {s.node_id: s for s in session.exec(
                select(NodeStandingRecord).where(
                    col(NodeStandingRecord.node_id).in_([n.node_id for n in nodes])))}
        return [NodeRow(node, standings.get(node.node_id)) for node in nodes], total

    def node(self, node_id: str) -> NodeRow | None:
        with self._session() as session:
            node = session.get(NodeRecord, node_id)
            if node is None:
                return None
            return NodeRow(node, session.get(NodeStandingRecord, node_id))

    def reputation_events(self, node_id: str, page: Page
                          ) -> tuple[list[ReputationEventRecord], int]:
        """A node's reputation events, newest first (callers decide what of them to show)."""
        with self._session() as session:
            events = list(session.exec(
                select(ReputationEventRecord).where(ReputationEventRecord.node_id == node_id)
                .order_by(col(ReputationEventRecord.id).desc())
                .offset(page.offset).limit(page.size)))
            total = int(session.exec(
                select(func.count()).select_from(ReputationEventRecord)
                .where(ReputationEventRecord.node_id == node_id)).one())
        return events, total

    # ------------------------------------------------------------------ ledger

    def ledger_summary(self) -> LedgerSummary:
        """Tokens issued, burned and held in escrow; chain operations by kind and state."""
        with self._session() as session:
            issued = ledger.balance(session, ISSUED)
            burned = ledger.balance(session, BURNED)
            escrow = sum(ledger.balances(session, "escrow:").values())
            ops = {(kind, state): int(n) for kind, state, n in session.exec(
                select(ChainOpRecord.kind, ChainOpRecord.state, func.count())
                .group_by(ChainOpRecord.kind, ChainOpRecord.state))}
            jobs = {state: int(n) for state, n in session.exec(
                select(JobBillingRecord.state, func.count()).group_by(JobBillingRecord.state))}
        return LedgerSummary(issued=issued, burned=burned, escrow_held=escrow, ops=ops,
                             jobs_by_state=jobs)

    def chain_ops(self, kind: str, page: Page) -> tuple[list[ChainOpRecord], int]:
        """Chain operations of one kind (burn, mint, ...), newest first."""
        with self._session() as session:
            ops = list(session.exec(
                select(ChainOpRecord).where(ChainOpRecord.kind == kind)
                .order_by(col(ChainOpRecord.created_at).desc(), col(ChainOpRecord.op_id).desc())
                .offset(page.offset).limit(page.size)))
            total = int(session.exec(select(func.count()).select_from(ChainOpRecord)
                                     .where(ChainOpRecord.kind == kind)).one())
        return ops, total

    def epochs(self, page: Page) -> tuple[list[tuple[EpochRecord, int, int]], int]:
        """Closed epochs, newest first, each with its payout count and amount minted."""
        with self._session() as session:
            epochs = list(session.exec(
                select(EpochRecord).order_by(col(EpochRecord.epoch).desc())
                .offset(page.offset).limit(page.size)))
            total = int(session.exec(select(func.count()).select_from(EpochRecord)).one())
            payouts = {epoch: (int(n), int(amount or 0)) for epoch, n, amount in session.exec(
                select(PayoutRecord.epoch, func.count(), func.sum(PayoutRecord.amount))
                .where(col(PayoutRecord.epoch).in_([e.epoch for e in epochs]))
                .group_by(col(PayoutRecord.epoch)))}
        return [(e, *payouts.get(e.epoch, (0, 0))) for e in epochs], total


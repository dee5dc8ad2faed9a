"""The money service's rows: escrows (`pay_job`), frame charges, work credits, epochs and
payouts. Every business change commits together with the chain-operation intents it causes,
in one transaction here; `coordinator.payments` decides what the change is and drives the
intents through the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from coordinator.domain.ledger import OPEN_STATES, EscrowState, OpKind, escrow_account
from coordinator.storage import ledger
from coordinator.storage.chain_ops import TOPUP_PURPOSE
from coordinator.storage.payment_models import (
    ChainOpRecord,
    EpochRecord,
    FrameChargeRecord,
    JobBillingRecord,
    PayoutRecord,
    WorkCreditRecord,
)

# (payout row without its op id, the mint intent that pays it)
EpochPlan = tuple[EpochRecord, list[tuple[PayoutRecord, ChainOpRecord]]]


class BillingRefused(Exception):
    """The rows say no (no escrow, not open yet, used deposit, ...); the message says why."""


class Billing:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # --- reads ------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobBillingRecord | None:
        with self._session() as session:
            return session.get(JobBillingRecord, job_id)

    def charge(self, job_id: str, frame: int) -> FrameChargeRecord | None:
        with self._session() as session:
            return session.exec(
                select(FrameChargeRecord).where(FrameChargeRecord.job_id == job_id)
                .where(FrameChargeRecord.frame == frame)
            ).first()

    def charges(self, job_id: str) -> tuple[JobBillingRecord, list[FrameChargeRecord], int]:
        """The job's escrow, its charges by frame and what its escrow account holds."""
        with self._session() as session:
            billing = session.get(JobBillingRecord, job_id)
            if billing is None:
                raise BillingRefused(f"job {job_id} has no escrow")
            charges = session.exec(
                select(FrameChargeRecord).where(FrameChargeRecord.job_id == job_id)
                .order_by(col(FrameChargeRecord.frame))
            ).all()
            held = ledger.balance(session, escrow_account(job_id))
        return billing, list(charges), held

    def escrow_of_creator(self, creator: str) -> tuple[list[str], int]:
        """The creator's jobs with escrow, and the tokens their escrow accounts hold."""
        with self._session() as session:
            jobs = session.exec(
                select(JobBillingRecord.job_id).where(JobBillingRecord.creator == creator)
            ).all()
            held = ledger.balances(session, "escrow:")
        return list(jobs), sum(held.get(escrow_account(job), 0) for job in jobs)

    def open_ops(self) -> Sequence[ChainOpRecord]:
        """Journalled operations not final yet, oldest first."""
        with self._session() as session:
            return session.exec(
                select(ChainOpRecord)
                .where(col(ChainOpRecord.state).in_(OPEN_STATES))
                .order_by(col(ChainOpRecord.created_at))
            ).all()

    def payouts(self, epoch: int) -> list[PayoutRecord]:
        with self._session() as session:
            return list(session.exec(
                select(PayoutRecord).where(PayoutRecord.epoch == epoch)
                .order_by(col(PayoutRecord.node_id))
            ).all())

    def epoch(self, epoch: int) -> EpochRecord | None:
        with self._session() as session:
            return session.get(EpochRecord, epoch)

    def earnings(self, node_id: str) -> tuple[list[tuple[PayoutRecord, EpochRecord,
                                                           ChainOpRecord]], int]:
        """The node's payouts with their epoch and mint, and its credits in the open epoch."""
        with self._session() as session:
            rows = session.exec(
                select(PayoutRecord, EpochRecord, ChainOpRecord)
                .join(EpochRecord, col(EpochRecord.epoch) == col(PayoutRecord.epoch))
                .join(ChainOpRecord, col(ChainOpRecord.op_id) == col(PayoutRecord.op_id))
                .where(PayoutRecord.node_id == node_id)
                .order_by(col(PayoutRecord.epoch))
            ).all()
            open_credits = session.exec(
                select(func.coalesce(func.sum(WorkCreditRecord.work_ms), 0))
                .where(WorkCreditRecord.node_id == node_id)
                .where(col(WorkCreditRecord.epoch).is_(None))
            ).one()
        return [(p, e, op) for p, e, op in rows], int(open_credits)

    def epoch_clock_start(self) -> float | None:
        """When the open epoch began: the last close, else the first credit; None if neither."""
        with self._session() as session:
            last = session.exec(select(func.max(EpochRecord.ended_at))).one()
            if last is None:
                last = session.exec(select(func.min(WorkCreditRecord.created_at))).one()
        return None if last is None else float(last)

    # --- escrow -------------------------------------------------------------------------------

    def open_escrow(self, op: ChainOpRecord, billing: JobBillingRecord) -> None:
        """The deposit's intent and the job's escrow, together."""
        with self._session() as session:
            try:
                session.add(op)
                session.flush()
                session.add(billing)
                session.commit()
            except IntegrityError as exc:
                raise BillingRefused(
                    "this signed deposit was already used, or the job already has escrow"
                ) from exc

    def add_topup(self, job_id: str, op: ChainOpRecord, now: float) -> None:
        """A top-up's intent, only while the job's escrow is open."""
        with self._session() as session:
            # Compare-and-set on the open escrow first: a settlement that got in before wins
            # and the top-up is refused; one that comes after sees this op and waits for it.
            still_open = _rowcount(session, update(JobBillingRecord)
                                   .where(col(JobBillingRecord.job_id) == job_id)
                                   .where(col(JobBillingRecord.state) == EscrowState.OPEN)
                                   .values(updated_at=now))
            if still_open != 1:
                session.rollback()
                raise BillingRefused(f"job {job_id}'s escrow was closed meanwhile: nothing to "
                                     "top up")
            try:
                session.add(op)
                session.commit()
            except IntegrityError as exc:
                raise BillingRefused("this signed deposit was already used") from exc

    def reserve_charge(self, billing: JobBillingRecord, charge: FrameChargeRecord,
                       burn_op: ChainOpRecord | None, now: float) -> bool:
        """Reserve the charge's burn from the job's escrow and record the charge, the node's
        work credit and the burn intent.

        One transaction; compare-and-set on `charged`, so concurrent charges never overdraw.
        False when another charge got in first (the caller re-reads and retries).
        """
        with self._session() as session:
            moved = _rowcount(session, update(JobBillingRecord)
                              .where(col(JobBillingRecord.job_id) == charge.job_id)
                              .where(col(JobBillingRecord.state) == EscrowState.OPEN)
                              .where(col(JobBillingRecord.charged) == billing.charged)
                              .values(charged=billing.charged + charge.tokens_burned,
                                      charged_usd_micro=billing.charged_usd_micro
                                      + charge.cost_usd_micro,
                                      over_budget=billing.over_budget or charge.over_budget,
                                      updated_at=now))
            if moved != 1:
                session.rollback()
                return False
            if burn_op is not None:
                session.add(burn_op)
                session.flush()
                charge.op_id = burn_op.op_id
            session.add(charge)
            session.add(WorkCreditRecord(node_id=charge.node_id, job_id=charge.job_id,
                                         frame=charge.frame, work_ms=charge.work_ms,
                                         created_at=now))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()  # the frame was charged concurrently: theirs stands
                return False
        return True

    def settle(self, job_id: str, now: float,
               refund_op: Callable[[int, str], ChainOpRecord]) -> None:
        """Close an open escrow: no more charges; what was not charged is refunded through the
        intent `refund_op(amount, creator)` makes. Nothing happens to an escrow already
        settled or failed; one still opening, or with a top-up in flight, is refused."""
        with self._session() as session:
            billing = session.get(JobBillingRecord, job_id)
            if billing is None:
                raise BillingRefused(f"job {job_id} has no escrow")
            if billing.state == EscrowState.OPENING:
                raise BillingRefused(f"job {job_id}: the deposit has not landed yet")
            if billing.state == EscrowState.OPEN and _topup_pending(session, job_id):
                raise BillingRefused(f"job {job_id}: a top-up has not landed yet")
            if billing.state != EscrowState.OPEN:
                return
            refund = billing.deposited - billing.charged
            values: dict[str, object] = {"state": EscrowState.SETTLED, "refunded": refund,
                                         "updated_at": now}
            if refund > 0:
                op = refund_op(refund, billing.creator)
                session.add(op)
                session.flush()
                values["refund_op_id"] = op.op_id
            moved = _rowcount(session, update(JobBillingRecord)
                              .where(col(JobBillingRecord.job_id) == job_id)
                              .where(col(JobBillingRecord.state) == EscrowState.OPEN)
                              .values(**values))
            # Checked again after taking the row: a top-up recorded meanwhile waits.
            if moved == 1 and not _topup_pending(session, job_id):
                session.commit()
            else:
                session.rollback()

    # --- epochs -------------------------------------------------------------------------------

    def close_epoch(self, now: float,
                    plan: Callable[[int, dict[str, int], float], EpochPlan]) -> int:
        """Assign the open credits to the next epoch and record its plan (epoch row, payouts,
        mint intents) in one transaction; returns the epoch's number.

        `plan(epoch, credits by node, started_at)` decides the split.
        """
        with self._session() as session:
            try:
                last = session.exec(select(func.max(EpochRecord.epoch))).one() or 0
                previous = session.get(EpochRecord, last) if last else None
                if previous is not None and now <= previous.ended_at:
                    raise BillingRefused(f"epoch {last} already ends at {previous.ended_at}; "
                                         f"now is {now}")
                epoch = int(last) + 1
                session.exec(update(WorkCreditRecord)
                             .where(col(WorkCreditRecord.epoch).is_(None))
                             .where(col(WorkCreditRecord.created_at) <= now)
                             .values(epoch=epoch))
                rows = session.exec(
                    select(WorkCreditRecord.node_id, func.sum(WorkCreditRecord.work_ms),
                           func.min(WorkCreditRecord.created_at))
                    .where(WorkCreditRecord.epoch == epoch)
                    .group_by(col(WorkCreditRecord.node_id))
                ).all()
                credits = {node: int(total) for node, total, _ in rows}
                started = previous.ended_at if previous else min(
                    [float(t) for *_, t in rows] or [now])
                record, payouts = plan(epoch, credits, started)
                session.add(record)
                session.flush()
                for payout, op in payouts:
                    session.add(op)
                    session.flush()
                    payout.op_id = op.op_id
                    session.add(payout)
                session.commit()
            except IntegrityError as exc:
                raise BillingRefused("another coordinator closed this epoch concurrently") \
                    from exc
        return epoch


def _topup_pending(session: Session, job_id: str) -> bool:
    """A top-up deposit of the job not final yet: settling now would strand it."""
    return session.exec(
        select(ChainOpRecord.op_id)
        .where(ChainOpRecord.job_id == job_id)
        .where(ChainOpRecord.kind == OpKind.DEPOSIT)
        .where(col(ChainOpRecord.purpose).startswith(TOPUP_PURPOSE))
        .where(col(ChainOpRecord.state).in_(OPEN_STATES))
    ).first() is not None


def _rowcount(session: Session, statement: Any) -> int:
    count: int = session.exec(statement).rowcount
    return count

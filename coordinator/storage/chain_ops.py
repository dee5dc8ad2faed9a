"""The chain-operation journal's rows (`pay_chain_op`): each state change is one
compare-and-set, and `landed` posts the ledger lines in the same transaction.

What to send and when is `coordinator.payments.journal.OpJournal`'s; this module only moves
rows, so a crash between any two calls leaves a row the journal can finish.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from coordinator.domain.ledger import EscrowState, OpKind, OpState, movement_lines
from coordinator.storage import ledger
from coordinator.storage.payment_models import BondRecord, ChainOpRecord, JobBillingRecord

TOPUP_PURPOSE = "topup:"  # a deposit op adding to an open job's escrow: "topup:<job>:<op_id>"


class ChainOps:
    """Rows of `pay_chain_op`, moved only from the state the caller saw."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def get(self, op_id: str) -> ChainOpRecord | None:
        with self._session() as session:
            return session.get(ChainOpRecord, op_id)

    def add_intent(self, op: ChainOpRecord) -> bool:
        """Record a new op unless one with its purpose exists (then False: it was done)."""
        with self._session() as session:
            if session.exec(
                select(ChainOpRecord).where(ChainOpRecord.purpose == op.purpose)
            ).first():
                return False
            session.add(op)
            try:
                session.commit()
            except IntegrityError:
                return False
        return True

    def record_attempt(self, op_id: str, *, attempts: int, signature: str, raw: bytes,
                       description: str, valid_until: int | None, now: float) -> bool:
        """Commit the signed bytes BEFORE sending (compare-and-set on `new`)."""
        return self._move(op_id, OpState.NEW, None, state=OpState.SENT, signature=signature,
                          raw=raw, description=description, valid_until=valid_until,
                          attempts=attempts, updated_at=now)

    def mark_landed(self, op_id: str, signature: str, now: float) -> bool:
        """Mark landed and post its ledger lines in one transaction, exactly once; a deposit
        opens (or tops up) its job's escrow and a bond credits its node, in the same one."""
        with self._session() as session:
            moved = _cas(session, op_id, OpState.SENT, signature,
                         state=OpState.LANDED, error="", updated_at=now)
            if moved != 1:
                session.rollback()
                return False
            op = session.get(ChainOpRecord, op_id)
            assert op is not None
            lines = movement_lines(op.kind, op.amount, owner=op.owner,
                                   job_id=op.job_id or "", node_id=op.node_id or "")
            ledger.post(session, op_id, op.kind, lines, now)
            if op.kind == OpKind.DEPOSIT and op.purpose.startswith(TOPUP_PURPOSE):
                # A top-up counts in the escrow exactly when its tokens are posted there.
                session.exec(
                    update(JobBillingRecord)
                    .where(col(JobBillingRecord.job_id) == op.job_id)
                    .values(deposited=JobBillingRecord.deposited + op.amount, updated_at=now)
                )
            elif op.kind == OpKind.DEPOSIT:
                set_billing(session, op.job_id, EscrowState.OPENING, EscrowState.OPEN, now)
            if op.kind == OpKind.BOND:
                _credit_bond(session, op, now)
            session.commit()
        return True

    def finish(self, op_id: str, signature: str, state: OpState, error: str,
               now: float) -> None:
        """A final state other than landed; a deposit's job escrow fails with it."""
        with self._session() as session:
            moved = _cas(session, op_id, OpState.SENT, signature, state=state, error=error,
                         updated_at=now)
            op = session.get(ChainOpRecord, op_id)
            if moved == 1 and op is not None and op.kind == OpKind.DEPOSIT:
                set_billing(session, op.job_id, EscrowState.OPENING, EscrowState.FAILED, now,
                            error)
            session.commit()

    def prepare_again(self, op: ChainOpRecord, signature: str, now: float) -> None:
        """A treasury op whose transaction expired unseen goes back to `new`, keeping the
        dropped signature in its history."""
        self._move(op.op_id, OpState.SENT, signature, state=OpState.NEW, signature=None,
                   raw=None, valid_until=None,
                   previous_signatures=f"{op.previous_signatures} {signature}".strip(),
                   updated_at=now)

    def note(self, op_id: str, error: str) -> None:
        """The last attempt's error, for the operator (the state does not change)."""
        with self._session() as session:
            session.exec(
                update(ChainOpRecord).where(col(ChainOpRecord.op_id) == op_id)
                .values(error=error[:500])
            )
            session.commit()

    def set_fields(self, op_id: str, **values: Any) -> None:
        """Record what the chain said for an op the treasury signed and sent itself (a grant)."""
        with self._session() as session:
            session.exec(
                update(ChainOpRecord).where(col(ChainOpRecord.op_id) == op_id).values(**values)
            )
            session.commit()

    def _move(self, op_id: str, old: OpState, seen_signature: str | None,
              **values: Any) -> bool:
        with self._session() as session:
            moved = _cas(session, op_id, old, seen_signature, **values)
            session.commit()
        return moved == 1


def _cas(session: Session, op_id: str, old: OpState, seen_signature: str | None,
         **values: Any) -> int:
    """Update the op only if it is still in `old` (and still has `seen_signature`, if given)."""
    query = (update(ChainOpRecord)
             .where(col(ChainOpRecord.op_id) == op_id)
             .where(col(ChainOpRecord.state) == old))
    if seen_signature is not None:
        query = query.where(col(ChainOpRecord.signature) == seen_signature)
    rowcount: int = session.exec(query.values(**values)).rowcount
    return rowcount


def _credit_bond(session: Session, op: ChainOpRecord, now: float) -> None:
    """A landed bond transfer adds to its node's bond (in the transaction that posts it).

    The row is locked (PostgreSQL) before it is read: a slash or return committed between an
    unlocked read and this write would be written over with the bond as it was before."""
    assert op.node_id is not None
    record = session.get(BondRecord, op.node_id, with_for_update=True) or BondRecord(
        node_id=op.node_id, created_at=now, updated_at=now)
    record.held += op.amount
    record.posted += op.amount
    record.unbond_requested_at = None  # bonding again cancels a pending unbond
    record.last_op_id = op.op_id
    record.updated_at = now
    session.add(record)


def set_billing(session: Session, job_id: str | None, old: str, new: str, now: float,
                error: str = "") -> None:
    """Move a job's escrow from state `old` to `new` (nothing if it is elsewhere)."""
    session.exec(
        update(JobBillingRecord)
        .where(col(JobBillingRecord.job_id) == job_id)
        .where(col(JobBillingRecord.state) == old)
        .values(state=new, error=error, updated_at=now)
    )

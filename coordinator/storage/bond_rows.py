"""Node bonds' rows (`pay_bond`, `pay_slash`): each change commits with the chain-operation
intents it causes, compare-and-set on the amount held, so two sweeps never move one bond
twice. The rules (minimum, cooldown, how a slash splits) are `coordinator.payments.bonds`'.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from coordinator.storage.payment_models import BondRecord, ChainOpRecord, SlashRecord


class BondRefused(Exception):
    """The rows say no; the message says why."""


class BondRows:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def get(self, node_id: str) -> BondRecord | None:
        with self._session() as session:
            return session.get(BondRecord, node_id)

    def counting(self, minimum: int) -> set[str]:
        """Nodes holding at least `minimum` (and at least one base unit), no unbond pending."""
        with self._session() as session:
            rows = session.exec(
                select(BondRecord.node_id).where(col(BondRecord.held) >= max(1, minimum))
                .where(col(BondRecord.unbond_requested_at).is_(None))
            ).all()
        return set(rows)

    def unbonding(self) -> list[BondRecord]:
        with self._session() as session:
            return list(session.exec(
                select(BondRecord).where(col(BondRecord.unbond_requested_at).is_not(None))
                .where(col(BondRecord.held) > 0)
            ).all())

    def slashed_events(self, node_id: str) -> set[int]:
        with self._session() as session:
            return set(session.exec(
                select(SlashRecord.event_id).where(SlashRecord.node_id == node_id)).all())

    def holders(self) -> dict[str, int]:
        """node -> held, for every node with tokens in the bond vault."""
        with self._session() as session:
            rows = session.exec(select(BondRecord.node_id, BondRecord.held)
                                .where(col(BondRecord.held) > 0)).all()
        return {node: int(held) for node, held in rows}

    def slashes(self, node_id: str) -> list[SlashRecord]:
        with self._session() as session:
            return list(session.exec(select(SlashRecord).where(SlashRecord.node_id == node_id)
                                     .order_by(col(SlashRecord.created_at))).all())

    def add_bond_intent(self, op: ChainOpRecord) -> None:
        """A node-signed bond transfer, recorded before it is relayed."""
        with self._session() as session:
            try:
                session.add(op)
                session.commit()
            except IntegrityError as exc:
                raise BondRefused("this signed bond was already used") from exc

    def request_unbond(self, node_id: str, now: float) -> None:
        """Start the cooldown (once: asking again keeps the first request's time)."""
        with self._session() as session:
            record = session.get(BondRecord, node_id)
            if record is None or record.held <= 0:
                raise BondRefused("this node has no bond to return")
            if record.unbond_requested_at is None:
                record.unbond_requested_at = now
                record.updated_at = now
                session.add(record)
                session.commit()

    def release(self, node_id: str, now: float, cooldown_seconds: float,
                unbond_op: Callable[[int], ChainOpRecord]) -> ChainOpRecord | None:
        """Empty the bond of an unbonding node whose cooldown passed, with the intent
        `unbond_op(amount)` makes; None when there is nothing (or not yet anything) to return."""
        with self._session() as session:
            record = session.get(BondRecord, node_id)
            if record is None or record.held <= 0 or record.unbond_requested_at is None:
                return None
            if now < record.unbond_requested_at + cooldown_seconds:
                return None
            amount = record.held
            op = unbond_op(amount)
            session.add(op)
            session.flush()
            moved: int = session.exec(
                update(BondRecord)
                .where(col(BondRecord.node_id) == node_id)
                .where(col(BondRecord.held) == amount)
                .where(col(BondRecord.unbond_requested_at).is_not(None))
                .values(held=0, returned=BondRecord.returned + amount,
                        unbond_requested_at=None, last_op_id=op.op_id, updated_at=now)
            ).rowcount
            if moved != 1:
                session.rollback()
                return None
            session.commit()
        return op

    def slash(self, node_id: str, event_id: int, now: float,
              plan: Callable[[int], tuple[SlashRecord, list[ChainOpRecord]]]
              ) -> tuple[SlashRecord, list[ChainOpRecord]] | None:
        """Slash the bond once for the quarantine `event_id` recorded (None: already done, or
        the bond moved meanwhile). `plan(held)` decides the slash and its transfers; they
        commit with the reduced bond in one transaction."""
        with self._session() as session:
            if session.exec(select(SlashRecord).where(SlashRecord.node_id == node_id)
                            .where(SlashRecord.event_id == event_id)).first():
                return None
            record = session.get(BondRecord, node_id)
            held = record.held if record else 0
            slash, ops = plan(held)
            for op in ops:
                session.add(op)
            session.flush()
            if slash.amount > 0:
                moved: int = session.exec(
                    update(BondRecord)
                    .where(col(BondRecord.node_id) == node_id)
                    .where(col(BondRecord.held) == held)
                    .values(held=held - slash.amount,
                            slashed=BondRecord.slashed + slash.amount, updated_at=now)
                ).rowcount
                if moved != 1:
                    session.rollback()
                    return None
            session.add(slash)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return None
        return slash, ops

"""The chain-operation journal: take each token movement from intent to a final state, once.

    new (intent) --prepare + record--> sent --send / reconcile--> landed | failed | dropped

The signed bytes are committed before they are sent; ledger lines are posted only in the
transaction that moves the op to `landed` (compare-and-set on state and signature). So any
crash leaves an op that `drive` finishes later: the same bytes are resent (a landed signature
is a no-op on chain) and applied once. This is the loop described in docs/CHAIN.md.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

from solders.pubkey import Pubkey
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from coordinator.chain.base import ChainError, PreparedTx, TokenChain, TxStatus
from coordinator.domain.ledger import OpState, movement_lines
from coordinator.payments.results import PaymentError
from coordinator.storage import ledger
from coordinator.storage.payment_models import (
    BondRecord,
    ChainOpRecord,
    JobBillingRecord,
)

MEMO_PREFIX = "fp:"
TOPUP_PURPOSE = "topup:"  # a deposit op adding to an open job's escrow: "topup:<job>:<op_id>"
MAX_DRIVE_ATTEMPTS = 3  # fresh attempts per call after "dropped"; reconcile_pending goes on
USER_SIGNED = ("deposit", "bond")  # signed by a creator or node, relayed: never re-prepared


class OpJournal:
    """Drives `ChainOpRecord`s through the chain; thread-safe through compare-and-set."""

    def __init__(self, engine: Engine, chain: TokenChain,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.chain = chain
        self._clock = clock

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def op(self, op_id: str) -> ChainOpRecord:
        with self._session() as session:
            op = session.get(ChainOpRecord, op_id)
        if op is None:
            raise PaymentError(f"unknown chain operation {op_id}")
        return op

    def drive_signed(self, op_id: str, what: str) -> str:
        """Drive a transfer the payer signed; its failure is the payer's to hear, not a retry.

        Returns the state (landed, or sent while pending); failed or expired raise PaymentError
        naming ``what`` ("the deposit", "the bond", ...).
        """
        state = self.drive(op_id)
        if state == OpState.FAILED:
            raise PaymentError(f"{what} failed on chain: {self.op(op_id).error}")
        if state == OpState.DROPPED:
            raise PaymentError(f"{what} expired before it landed; sign a new one")
        return state

    def drive(self, op_id: str) -> str:
        """Take one op as far as it goes now; returns its state (sent = still pending)."""
        for _ in range(MAX_DRIVE_ATTEMPTS):
            op = self.op(op_id)
            if op.state == OpState.NEW:
                try:
                    tx = self._prepare(op)
                except ChainError as exc:  # e.g. RPC unreachable: stays new, retried later
                    self._note(op_id, str(exc))
                    return OpState.NEW
                if not self._record_attempt(op, tx):
                    continue  # someone else recorded an attempt first: drive theirs
            elif op.state == OpState.SENT and op.raw is None:  # a grant: fund_creator signed it
                assert op.signature is not None
                if self.chain.status(op.signature) == "landed":
                    self._landed(op_id, op.signature)
                return self.op(op_id).state
            elif op.state == OpState.SENT:
                assert op.signature is not None
                tx = PreparedTx(op.signature, op.raw, op.description, op.valid_until)
            else:
                return op.state
            error = ""
            try:
                status: TxStatus | str = self.chain.send(tx)
            except ChainError as exc:
                status, error = "unknown", str(exc)
            crash_point(f"after-send:{op.kind}")
            outcome = status if status in ("landed", "failed") else self.chain.reconcile(tx)
            if outcome == "landed":
                self._landed(op_id, tx.signature)
            elif outcome == "failed":
                self._finish(op_id, tx.signature, OpState.FAILED, error or "executed with an error")
            elif outcome == "dropped":
                self._dropped(op, tx.signature)
                if op.kind not in USER_SIGNED:
                    continue
            else:
                if error:
                    self._note(op_id, error)
            return self.op(op_id).state
        return self.op(op_id).state

    def _prepare(self, op: ChainOpRecord) -> PreparedTx:
        memo = MEMO_PREFIX + op.op_id
        if op.kind == "burn":
            return self.chain.prepare_burn_from_escrow(op.amount, memo=memo)
        if op.kind == "refund":
            return self.chain.prepare_refund(parse_pubkey(op.owner), op.amount, memo=memo)
        if op.kind == "mint":
            return self.chain.prepare_mint_to(parse_pubkey(op.owner), op.amount, memo=memo)
        if op.kind in ("unbond", "slash"):
            return self.chain.prepare_from_bonds(parse_pubkey(op.owner), op.amount, memo=memo)
        if op.kind == "forfeit":
            return self.chain.prepare_forfeit(op.amount, memo=memo)
        raise PaymentError(f"{op.kind} op {op.op_id} cannot be prepared by the treasury")

    def _record_attempt(self, op: ChainOpRecord, tx: PreparedTx) -> bool:
        """Commit the signed bytes BEFORE sending (compare-and-set on `new`)."""
        with self._session() as session:
            moved = session.exec(  # type: ignore[call-overload]
                update(ChainOpRecord)
                .where(col(ChainOpRecord.op_id) == op.op_id)
                .where(col(ChainOpRecord.state) == OpState.NEW)
                .values(state=OpState.SENT, signature=tx.signature, raw=tx.raw,
                        description=tx.description, valid_until=tx.valid_until,
                        attempts=op.attempts + 1, updated_at=self._clock())
            ).rowcount
            session.commit()
        return moved == 1

    def _landed(self, op_id: str, signature: str) -> None:
        """Mark landed and post its ledger lines in one transaction, exactly once."""
        now = self._clock()
        with self._session() as session:
            moved = session.exec(  # type: ignore[call-overload]
                update(ChainOpRecord)
                .where(col(ChainOpRecord.op_id) == op_id)
                .where(col(ChainOpRecord.state) == OpState.SENT)
                .where(col(ChainOpRecord.signature) == signature)
                .values(state=OpState.LANDED, error="", updated_at=now)
            ).rowcount
            if moved != 1:
                session.rollback()
                return
            op = session.get(ChainOpRecord, op_id)
            assert op is not None
            lines = movement_lines(op.kind, op.amount, owner=op.owner,
                                          job_id=op.job_id or "", node_id=op.node_id or "")
            ledger.post(session, op_id, op.kind, lines, now)
            if op.kind == "deposit" and op.purpose.startswith(TOPUP_PURPOSE):
                # A top-up counts in the escrow exactly when its tokens are posted there.
                session.exec(  # type: ignore[call-overload]
                    update(JobBillingRecord)
                    .where(col(JobBillingRecord.job_id) == op.job_id)
                    .values(deposited=JobBillingRecord.deposited + op.amount, updated_at=now)
                )
            elif op.kind == "deposit":
                _set_billing(session, op.job_id, "opening", "open", now)
            if op.kind == "bond":
                _credit_bond(session, op, now)
            session.commit()

    def _finish(self, op_id: str, signature: str, state: str, error: str) -> None:
        now = self._clock()
        with self._session() as session:
            moved = session.exec(  # type: ignore[call-overload]
                update(ChainOpRecord)
                .where(col(ChainOpRecord.op_id) == op_id)
                .where(col(ChainOpRecord.state) == OpState.SENT)
                .where(col(ChainOpRecord.signature) == signature)
                .values(state=state, error=error, updated_at=now)
            ).rowcount
            op = session.get(ChainOpRecord, op_id)
            if moved == 1 and op is not None and op.kind == "deposit":
                _set_billing(session, op.job_id, "opening", "failed", now, error)
            session.commit()

    def _dropped(self, op: ChainOpRecord, signature: str) -> None:
        """Expired unseen: deposits and bonds are final (their signer must sign again); the
        treasury's own operations are prepared again."""
        if op.kind in USER_SIGNED:
            self._finish(op.op_id, signature, OpState.DROPPED, "expired before it landed")
            return
        with self._session() as session:
            session.exec(  # type: ignore[call-overload]
                update(ChainOpRecord)
                .where(col(ChainOpRecord.op_id) == op.op_id)
                .where(col(ChainOpRecord.state) == OpState.SENT)
                .where(col(ChainOpRecord.signature) == signature)
                .values(state=OpState.NEW, signature=None, raw=None, valid_until=None,
                        previous_signatures=f"{op.previous_signatures} {signature}".strip(),
                        updated_at=self._clock())
            )
            session.commit()

    def _note(self, op_id: str, error: str) -> None:
        with self._session() as session:
            session.exec(  # type: ignore[call-overload]
                update(ChainOpRecord).where(col(ChainOpRecord.op_id) == op_id)
                .values(error=error[:500])
            )
            session.commit()

    def fund(self, creator: str, amount: int, purpose: str) -> str | None:
        """Journal, then `fund_creator` (it signs and sends itself), then record and post."""
        check_amount(amount)
        owner = parse_pubkey(creator)
        now = self._clock()
        op = new_op("grant", purpose, amount, now, owner=creator)
        with self._session() as session:
            if session.exec(
                select(ChainOpRecord).where(ChainOpRecord.purpose == purpose)
            ).first():
                return None
            session.add(op)
            try:
                session.commit()
            except IntegrityError:
                return None
        try:
            signature = self.chain.fund_creator(owner, amount, memo=MEMO_PREFIX + op.op_id)
        except ChainError as exc:
            with self._session() as session:
                session.exec(  # type: ignore[call-overload]
                    update(ChainOpRecord).where(col(ChainOpRecord.op_id) == op.op_id)
                    .values(state=OpState.FAILED, error=str(exc)[:500], updated_at=self._clock())
                )
                session.commit()
            raise PaymentError(f"funding {creator} failed: {exc}") from exc
        with self._session() as session:
            session.exec(  # type: ignore[call-overload]
                update(ChainOpRecord).where(col(ChainOpRecord.op_id) == op.op_id)
                .values(state=OpState.SENT, signature=signature, attempts=1)
            )
            session.commit()
        self._landed(op.op_id, signature)
        return signature


def new_op(kind: str, purpose: str, amount: int, now: float, *, owner: str = "",
           job_id: str | None = None, epoch: int | None = None,
           node_id: str | None = None) -> ChainOpRecord:
    """An intent row (not added to any session); its id becomes the memo "fp:<op_id>"."""
    return ChainOpRecord(
        op_id=f"{kind[:4]}-{uuid.uuid4().hex}", purpose=purpose, kind=kind, owner=owner,
        amount=amount, job_id=job_id, epoch=epoch, state=OpState.NEW, created_at=now,
        updated_at=now, node_id=node_id,
    )


def _credit_bond(session: Session, op: ChainOpRecord, now: float) -> None:
    """A landed bond transfer adds to its node's bond (in the transaction that posts it)."""
    assert op.node_id is not None
    record = session.get(BondRecord, op.node_id) or BondRecord(
        node_id=op.node_id, created_at=now, updated_at=now)
    record.held += op.amount
    record.posted += op.amount
    record.unbond_requested_at = None  # bonding again cancels a pending unbond
    record.last_op_id = op.op_id
    record.updated_at = now
    session.add(record)


def _set_billing(session: Session, job_id: str | None, old: str, new: str, now: float,
                 error: str = "") -> None:
    session.exec(  # type: ignore[call-overload]
        update(JobBillingRecord)
        .where(col(JobBillingRecord.job_id) == job_id)
        .where(col(JobBillingRecord.state) == old)
        .values(state=new, error=error, updated_at=now)
    )


def check_amount(amount: int) -> None:
    """Refuse what the token program would: zero, negative or non-integer amounts."""
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise PaymentError(f"amount must be a positive integer of base units, got {amount!r}")


def parse_pubkey(value: str) -> Pubkey:
    """A base58 public key, or PaymentError naming the bad value."""
    try:
        return Pubkey.from_string(value)
    except ValueError as exc:
        raise PaymentError(f"not a public key: {value!r}") from exc


def crash_point(name: str) -> None:
    """Fault injection for the crash tests: die here, as SIGKILL would, when asked to.

    `FRAMEPROOF_CRASH_AT=after-send:burn` kills the process right after a burn was sent and
    before it is recorded: the window the journal exists for.
    """
    if os.environ.get("FRAMEPROOF_CRASH_AT") == name:
        os._exit(137)

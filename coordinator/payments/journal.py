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
from sqlalchemy.engine import Engine

from coordinator.chain.base import ChainError, PreparedTx, TokenChain, TxStatus
from coordinator.domain.ledger import OpKind, OpState
from coordinator.payments.results import PaymentError
from coordinator.storage.chain_ops import ChainOps
from coordinator.storage.payment_models import ChainOpRecord

MEMO_PREFIX = "fp:"
MAX_DRIVE_ATTEMPTS = 3  # fresh attempts per call after "dropped"; reconcile_pending goes on
# Signed by a creator or node and relayed: never prepared again by the treasury.
USER_SIGNED = (OpKind.DEPOSIT, OpKind.BOND)


class OpJournal:
    """Drives `ChainOpRecord`s through the chain; thread-safe through compare-and-set."""

    def __init__(self, engine: Engine, chain: TokenChain,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.chain = chain
        self.rows = ChainOps(engine)
        self._clock = clock

    def op(self, op_id: str) -> ChainOpRecord:
        op = self.rows.get(op_id)
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
                    self.rows.note(op_id, str(exc))
                    return OpState.NEW
                if not self.rows.record_attempt(
                        op.op_id, attempts=op.attempts + 1, signature=tx.signature,
                        raw=tx.raw, description=tx.description, valid_until=tx.valid_until,
                        now=self._clock()):
                    continue  # someone else recorded an attempt first: drive theirs
            elif op.state == OpState.SENT and op.raw is None:  # a grant: fund_creator signed it
                assert op.signature is not None
                if self.chain.status(op.signature) == "landed":
                    self.rows.mark_landed(op_id, op.signature, self._clock())
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
                self.rows.mark_landed(op_id, tx.signature, self._clock())
            elif outcome == "failed":
                self.rows.finish(op_id, tx.signature, OpState.FAILED,
                                 error or "executed with an error", self._clock())
            elif outcome == "dropped":
                self._dropped(op, tx.signature)
                if op.kind not in USER_SIGNED:
                    continue
            else:
                if error:
                    self.rows.note(op_id, error)
            return self.op(op_id).state
        return self.op(op_id).state

    def _prepare(self, op: ChainOpRecord) -> PreparedTx:
        memo = MEMO_PREFIX + op.op_id
        if op.kind == OpKind.BURN:
            return self.chain.prepare_burn_from_escrow(op.amount, memo=memo)
        if op.kind == OpKind.REFUND:
            return self.chain.prepare_refund(parse_pubkey(op.owner), op.amount, memo=memo)
        if op.kind == OpKind.MINT:
            return self.chain.prepare_mint_to(parse_pubkey(op.owner), op.amount, memo=memo)
        if op.kind in (OpKind.UNBOND, OpKind.SLASH):
            return self.chain.prepare_from_bonds(parse_pubkey(op.owner), op.amount, memo=memo)
        if op.kind == OpKind.FORFEIT:
            return self.chain.prepare_forfeit(op.amount, memo=memo)
        raise PaymentError(f"{op.kind} op {op.op_id} cannot be prepared by the treasury")

    def _dropped(self, op: ChainOpRecord, signature: str) -> None:
        """Expired unseen: deposits and bonds are final (their signer must sign again); the
        treasury's own operations are prepared again."""
        if op.kind in USER_SIGNED:
            self.rows.finish(op.op_id, signature, OpState.DROPPED, "expired before it landed",
                             self._clock())
            return
        self.rows.prepare_again(op, signature, self._clock())

    def fund(self, creator: str, amount: int, purpose: str) -> str | None:
        """Journal, then `fund_creator` (it signs and sends itself), then record and post."""
        check_amount(amount)
        owner = parse_pubkey(creator)
        op = new_op(OpKind.GRANT, purpose, amount, self._clock(), owner=creator)
        if not self.rows.add_intent(op):
            return None
        try:
            signature = self.chain.fund_creator(owner, amount, memo=MEMO_PREFIX + op.op_id)
        except ChainError as exc:
            self.rows.set_fields(op.op_id, state=OpState.FAILED, error=str(exc)[:500],
                                 updated_at=self._clock())
            raise PaymentError(f"funding {creator} failed: {exc}") from exc
        self.rows.set_fields(op.op_id, state=OpState.SENT, signature=signature, attempts=1)
        self.rows.mark_landed(op.op_id, signature, self._clock())
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

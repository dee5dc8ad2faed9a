"""The payments service the coordinator calls: escrow, per-frame burns, refunds, epoch mints.

Each business change (a deposit, a frame's charge, a job's settlement, an epoch's payouts)
commits together with the chain-operation intents it causes; `OpJournal` then takes every
intent to a final state exactly once, surviving crashes (see journal.py, docs/PAYMENTS.md).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from solders.message import Message
from solders.transaction import VersionedTransaction
from sqlalchemy.engine import Engine

from coordinator.chain.base import ChainError, TokenChain
from coordinator.chain.tokenops import MEMO_PROGRAM_ID
from coordinator.domain.budget import may_charge
from coordinator.domain.epochs import EpochConfig, split_emission
from coordinator.domain.ledger import EscrowState, OpKind, OpState
from coordinator.domain.pricing import (
    PricingConfig,
    cost_usd,
    tokens_to_usd,
    usd_to_tokens,
    work_ms,
)
from coordinator.payments.audit import run_check
from coordinator.payments.bonds import BondPolicy, Bonds
from coordinator.payments.journal import (
    MEMO_PREFIX,
    OpJournal,
    check_amount,
    new_op,
    parse_pubkey,
)
from coordinator.payments.results import (
    CheckReport,
    EpochEarning,
    EpochSummary,
    EscrowReceipt,
    EscrowShort,
    FrameCharge,
    InsufficientBalance,
    JobReceipts,
    NodeEarnings,
    PaymentError,
    Payout,
    Wallet,
)
from coordinator.storage.billing import Billing, BillingRefused, EpochPlan
from coordinator.storage.chain_ops import TOPUP_PURPOSE
from coordinator.storage.payment_models import (
    ChainOpRecord,
    EpochRecord,
    FrameChargeRecord,
    JobBillingRecord,
    PayoutRecord,
)

log = logging.getLogger(__name__)

__all__ = [
    "CheckReport",
    "EpochEarning",
    "EpochSummary",
    "EscrowReceipt",
    "EscrowShort",
    "FrameCharge",
    "InsufficientBalance",
    "JobReceipts",
    "NodeEarnings",
    "PaymentError",
    "Payments",
    "Payout",
    "Wallet",
]


# --- the service ------------------------------------------------------------------------


class Payments:
    """Escrow, burns, refunds, grants and epoch mints over one database and one chain."""

    def __init__(
        self,
        engine: Engine,
        chain: TokenChain,
        pricing: PricingConfig | None = None,
        epochs: EpochConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        bonds: BondPolicy | None = None,
    ) -> None:
        self.engine = engine
        self.chain = chain
        self.pricing = pricing or PricingConfig(decimals=chain.decimals)
        if self.pricing.decimals != chain.decimals:
            raise PaymentError(
                f"pricing says {self.pricing.decimals} decimals, the mint has {chain.decimals}"
            )
        self.epochs = epochs or EpochConfig()
        self._clock = clock
        self._epoch_lock = threading.Lock()
        self._journal = OpJournal(engine, chain, clock)
        self.billing = Billing(engine)
        self.bonds = Bonds(engine, chain, self._journal, bonds, clock=clock)

    # --- creators: funding and escrow ---------------------------------------------------

    def grant(self, creator: str) -> str | None:
        """The new-creator grant (test clusters and the embedded chain), at most once each.

        Returns the mint signature, or None when this creator was already granted.
        """
        amount = self.pricing.grant_base_units
        if amount <= 0:
            return None
        return self._journal.fund(creator, amount, f"grant:{creator}")

    def airdrop(self, creator: str, amount: int) -> str:
        """Test clusters and the embedded chain: fee SOL plus `amount` freshly minted tokens."""
        signature = self._journal.fund(creator, amount, f"airdrop:{creator}:{uuid.uuid4().hex}")
        assert signature is not None
        return signature

    def deposit_message(self, creator: str, amount: int) -> bytes:
        """The escrow deposit for the creator to sign (`coordinator.chain.signed_deposit`).

        Its memo carries a fresh deposit id, so one signed deposit can fund one job only.
        """
        check_amount(amount)
        memo = f"{MEMO_PREFIX}dep-{uuid.uuid4().hex}"
        try:
            return self.chain.build_deposit(parse_pubkey(creator), amount, memo=memo)
        except ChainError as exc:
            raise PaymentError(f"cannot build the deposit: {exc}") from exc

    def escrow_amount(self, max_cost_usd: Decimal) -> int:
        """Tokens to escrow for a job whose cost must not exceed `max_cost_usd`."""
        return usd_to_tokens(self.pricing, max_cost_usd)

    def open_escrow(
        self, job_id: str, creator: str, signed_deposit: bytes, amount: int, *, tier: int = 2
    ) -> EscrowReceipt:
        """Relay the creator's signed deposit into escrow and open the job's billing.

        Raises InsufficientBalance (before anything is sent) when the wallet is short, and
        PaymentError when the deposit is not exactly the expected transfer or fails on chain.
        A deposit still undecided is returned with state "opening"; reconcile finishes it.
        """
        check_amount(amount)
        self.pricing.tier_price(tier)
        owner = parse_pubkey(creator)
        existing = self._billing(job_id)
        if existing is not None:
            return self._escrow_receipt(existing)
        held = self.chain.token_balance(owner)
        if held < amount:
            raise InsufficientBalance(self._short_message(creator, held, amount))
        memo = _deposit_memo(signed_deposit)
        try:
            tx = self.chain.prepare_signed_deposit(signed_deposit, owner, amount, memo=memo)
        except ChainError as exc:
            raise PaymentError(f"deposit refused: {exc}") from exc
        now = self._clock()
        op = ChainOpRecord(
            op_id=memo.removeprefix(MEMO_PREFIX), purpose=f"deposit:{job_id}", kind=OpKind.DEPOSIT,
            owner=creator, amount=amount, job_id=job_id, state=OpState.SENT, attempts=1,
            signature=tx.signature, raw=tx.raw, description=tx.description,
            valid_until=tx.valid_until, created_at=now, updated_at=now,
        )
        billing = JobBillingRecord(
            job_id=job_id, creator=creator, tier=tier, state=EscrowState.OPENING,
            deposit_op_id=op.op_id, deposited=amount, created_at=now, updated_at=now,
        )
        try:
            self.billing.open_escrow(op, billing)
        except BillingRefused as exc:
            raise PaymentError(str(exc)) from exc
        self._journal.drive_signed(op.op_id, "the deposit")
        billing = self._billing(job_id)
        assert billing is not None
        return self._escrow_receipt(billing)

    def top_up(self, job_id: str, creator: str, signed_deposit: bytes,
               amount: int) -> EscrowReceipt:
        """Relay a creator-signed deposit into an open job's escrow (`frameproof topup`).

        The same checks as `open_escrow` (payer, signer and amount are those of the expected
        transfer; a signed deposit funds once). Only the job's creator may top up, and only
        while its escrow is open. `deposited` grows when the deposit lands, in the transaction
        that posts it (journal), so the ledger check stays exact. Returns the deposit's
        receipt: state "open" once landed, "opening" while undecided.
        """
        check_amount(amount)
        owner = parse_pubkey(creator)
        billing = self._billing(job_id)
        if billing is None:
            raise PaymentError(f"job {job_id} has no escrow")
        if billing.creator != creator:
            raise PaymentError(f"job {job_id} belongs to another creator: only its creator "
                               "may top it up")
        if billing.state != EscrowState.OPEN:
            raise PaymentError(f"job {job_id}'s escrow is {billing.state}: nothing to top up")
        held = self.chain.token_balance(owner)
        if held < amount:
            raise InsufficientBalance(self._short_message(creator, held, amount))
        memo = _deposit_memo(signed_deposit)
        try:
            tx = self.chain.prepare_signed_deposit(signed_deposit, owner, amount, memo=memo)
        except ChainError as exc:
            raise PaymentError(f"deposit refused: {exc}") from exc
        now = self._clock()
        op_id = memo.removeprefix(MEMO_PREFIX)
        op = ChainOpRecord(
            op_id=op_id, purpose=f"{TOPUP_PURPOSE}{job_id}:{op_id}", kind=OpKind.DEPOSIT,
            owner=creator, amount=amount, job_id=job_id, state=OpState.SENT, attempts=1,
            signature=tx.signature, raw=tx.raw, description=tx.description,
            valid_until=tx.valid_until, created_at=now, updated_at=now,
        )
        try:
            self.billing.add_topup(job_id, op, now)
        except BillingRefused as exc:
            raise PaymentError(str(exc)) from exc
        state = self._journal.drive_signed(op.op_id, "the top-up")
        landed = self._journal.op(op.op_id)
        return EscrowReceipt(job_id, creator, amount, landed.signature or "",
                             EscrowState.OPEN if state == OpState.LANDED
                             else EscrowState.OPENING)

    def budget(self, job_id: str) -> tuple[int, int] | None:
        """(deposited, charged) of the job's escrow in base units; None without escrow."""
        billing = self._billing(job_id)
        return None if billing is None else (int(billing.deposited), int(billing.charged))

    # --- work: charges and settlement -------------------------------------------------------

    def charge_frame(
        self,
        job_id: str,
        frame: int,
        node_id: str,
        render_seconds: float,
        node_score: float,
        tier: int,
        *,
        work: int | None = None,
    ) -> FrameCharge:
        """Burn the USD price of an approved frame from the job's escrow; credit the node.

        `work`: the frame's network-derived reference ms (pricing.frame_work_ms); None prices
        the node's claims (seconds x score), for jobs made before quotes. The claims are kept
        on the charge either way, for audit.
        Call it for approved frames only: rejected or failed frames are never charged.
        Idempotent per (job, frame). A charge is whole or nothing: when the escrow left
        cannot cover it, EscrowShort is raised and nothing is booked (the frame waits for a
        top-up; the creator is never charged past the escrow).
        """
        if work is None:
            work = work_ms(render_seconds, node_score)
        if work < 0:
            raise PaymentError(f"work must be non-negative, got {work}")
        usd = cost_usd(self.pricing, work, tier)
        cost_tokens = usd_to_tokens(self.pricing, usd)
        usd_micro = int(usd * 1_000_000)
        while True:
            charge = self._charge(job_id, frame)
            if charge is not None:
                break
            billing = self._billing(job_id)
            if billing is None or billing.state != EscrowState.OPEN:
                state = billing.state if billing else "unknown"
                raise PaymentError(f"job {job_id} has no open escrow (state: {state})")
            left = billing.deposited - billing.charged
            if not may_charge(left, cost_tokens):
                raise EscrowShort(job_id, frame, cost_tokens, left)
            burn, over = cost_tokens, False
            if self._reserve(billing, job_id, frame, node_id, render_seconds, node_score,
                             work, usd_micro, cost_tokens, burn, over):
                charge = self._charge(job_id, frame)
                break
        assert charge is not None
        if charge.op_id is not None:
            self._journal.drive(charge.op_id)
        return self._frame_charge(charge)

    def settle_job(self, job_id: str) -> JobReceipts:
        """End (or cancel) a job: no more charges; what was not charged goes back to the creator.

        Idempotent. Burns still in flight are already reserved, so the refund is exact.
        """
        now = self._clock()

        def refund_op(amount: int, creator: str) -> ChainOpRecord:
            return new_op(OpKind.REFUND, f"refund:{job_id}", amount, now, owner=creator,
                          job_id=job_id)

        try:
            self.billing.settle(job_id, now, refund_op)
        except BillingRefused as exc:
            raise PaymentError(str(exc)) from exc
        billing = self._billing(job_id)
        assert billing is not None
        if billing.refund_op_id:
            self._journal.drive(billing.refund_op_id)
        return self.receipts(job_id)

    # --- epochs ---------------------------------------------------------------------------

    def next_epoch_due(self) -> float | None:
        """When the open epoch should close (None: nothing has happened yet)."""
        start = self.billing.epoch_clock_start()
        return None if start is None else start + self.epochs.length_seconds

    def close_epoch_if_due(
        self, now: float, available_nodes: Sequence[str] | Mapping[str, float] = (),
        weights: Mapping[str, float] | None = None,
    ) -> EpochSummary | None:
        """For the coordinator's timer: close the epoch when its length has passed."""
        due = self.next_epoch_due()
        if due is None or now < due:
            return None
        return self.close_epoch(now, available_nodes, weights)

    def close_epoch(
        self, now: float, available_nodes: Sequence[str] | Mapping[str, float] = (),
        weights: Mapping[str, float] | None = None,
    ) -> EpochSummary:
        """Close the open epoch at `now` and mint its emission (see `epochs.py` for the split).

        `available_nodes`: node pubkeys of proven available capacity (availability share),
        equal shares, or a mapping to each one's weight (`coordinator.bonding.availability`).
        `weights`: reputation multipliers on credits (default 1.0). The plan (epoch row,
        credits assigned, payouts, mint intents) commits first, in one transaction; the mints
        follow, so a crash in between is finished by `reconcile_pending`.
        """
        for node in available_nodes:
            parse_pubkey(node)
        with self._epoch_lock:
            try:
                epoch = self.billing.close_epoch(
                    now, lambda epoch, credits, started: self._plan_epoch(
                        epoch, credits, started, now, available_nodes, weights))
            except BillingRefused as exc:
                raise PaymentError(str(exc)) from exc
        for payout in self._payouts(epoch):
            self._journal.drive(payout.op_id)
        return self.epoch_summary(epoch)

    def _plan_epoch(self, epoch: int, credits: dict[str, int], started: float, now: float,
                    available: Sequence[str] | Mapping[str, float],
                    weights: Mapping[str, float] | None) -> EpochPlan:
        """The epoch's row and its payouts with their mint intents (`epochs.py` splits)."""
        emission = self.epochs.emission(epoch, self.pricing.decimals)
        split = split_emission(self.epochs, emission, credits, available, weights)
        fee_owner = self.epochs.fee_owner if split.fee > 0 else None
        record = EpochRecord(
            epoch=epoch, started_at=started, ended_at=now, emission=emission, fee=split.fee,
            fee_minted=fee_owner is not None, work_pool=split.work_pool,
            availability_pool=split.availability_pool, total_credits=sum(credits.values()),
            unminted=split.unminted_pools + (0 if fee_owner else split.fee),
        )
        payouts = [
            (node, node, credits.get(node, 0), split.work.get(node, 0),
             split.availability.get(node, 0))
            for node in sorted(set(split.work) | set(split.availability))
        ]
        if fee_owner is not None:
            payouts.append((f"fee:{fee_owner}", fee_owner, 0, 0, 0))
        planned: list[tuple[PayoutRecord, ChainOpRecord]] = []
        for payee, owner, credit, work_amount, availability_amount in payouts:
            amount = work_amount + availability_amount if payee == owner else split.fee
            if amount <= 0:
                continue  # a share rounded to nothing: no transaction for zero tokens
            op = new_op(OpKind.MINT, f"mint:{epoch}:{payee}", amount, now, owner=owner,
                        epoch=epoch)
            planned.append((PayoutRecord(
                epoch=epoch, node_id=payee, credits=credit, work_amount=work_amount,
                availability_amount=availability_amount, amount=amount, op_id=op.op_id,
            ), op))
        return record, planned

    # --- crash recovery and audit ---------------------------------------------------------------

    def reconcile_pending(self) -> dict[str, int]:
        """Finish every journaled op (at start-up and periodically): counts by resulting state.

        Grants/airdrops left `new` by a crash inside `fund_creator` cannot be decided (that
        call signs internally) and are counted as "unresolved"; `check` shows their effect.
        """
        ops = self.billing.open_ops()
        counts: dict[str, int] = {}
        for op in ops:
            if op.kind == OpKind.GRANT and op.state == OpState.NEW:
                state = "unresolved"
            else:
                try:
                    state = self._journal.drive(op.op_id)
                except PaymentError as error:  # one op that cannot be sent must not stop the
                    log.error("chain operation %s (%s) cannot be driven: %s", op.op_id,
                              op.purpose, error)  # others, nor the coordinator's start
                    state = "error"
            counts[state] = counts.get(state, 0) + 1
        return counts

    def check(self, *, verify_signatures: bool = True) -> CheckReport:
        """Prove the ledger and the chain agree exactly; report every mismatch.

        Checks: every posting balances; each landed op has exactly its posting (and, with
        `verify_signatures`, the chain says its signature landed); no other op has one; the
        ledger's escrow equals the escrow ATA; minted - burned equals the token supply; each
        settled job's escrow account is back to zero and each job's account matches its
        billing (deposit - burns - refund) once its ops are final.
        """
        return run_check(self.engine, self.chain, verify_signatures=verify_signatures)

    # --- what users see ----------------------------------------------------------------------

    def wallet(self, pubkey: str) -> Wallet:
        """A creator's (or node's) wallet: chain balance and tokens in escrow for their jobs."""
        balance = self.chain.token_balance(parse_pubkey(pubkey))
        jobs, escrow_held = self.billing.escrow_of_creator(pubkey)
        return Wallet(pubkey, balance, tokens_to_usd(self.pricing, balance), escrow_held, jobs)

    def receipts(self, job_id: str) -> JobReceipts:
        """Each approved frame's cost and burn, the totals and the refund."""
        try:
            billing, charges, held = self.billing.charges(job_id)
        except BillingRefused as exc:
            raise PaymentError(str(exc)) from exc
        frames = [self._frame_charge(charge) for charge in charges]
        deposit = self._journal.op(billing.deposit_op_id)
        refund = self._journal.op(billing.refund_op_id) if billing.refund_op_id else None
        return JobReceipts(
            job_id=job_id, creator=billing.creator, tier=billing.tier, state=billing.state,
            deposited=billing.deposited, deposit_signature=deposit.signature, frames=frames,
            total_cost_usd=sum((f.cost_usd for f in frames), Decimal(0)),
            total_tokens_burned=sum(f.tokens_burned for f in frames),
            refund=billing.refunded, refund_signature=refund.signature if refund else None,
            refund_state=refund.state if refund else None, held=held,
            over_budget=billing.over_budget,
        )

    def earnings(self, node_id: str) -> NodeEarnings:
        """A node's epochs: credits, minted amounts and signatures; and its open credits."""
        rows, open_credits = self.billing.earnings(node_id)
        epochs = [
            EpochEarning(p.epoch, e.ended_at, p.credits, p.work_amount, p.availability_amount,
                         p.amount, op.signature, op.state)
            for p, e, op in rows
        ]
        total = sum(e.minted for e in epochs if e.state == OpState.LANDED)
        return NodeEarnings(node_id, epochs, total, open_credits)

    def epoch_summary(self, epoch: int) -> EpochSummary:
        """A closed epoch: its emission, split and payouts with their signatures."""
        record = self.billing.epoch(epoch)
        if record is None:
            raise PaymentError(f"epoch {epoch} is not closed")
        payouts = [
            Payout(p.node_id, p.credits, p.work_amount, p.availability_amount, p.amount,
                   op.signature, op.state)
            for p in self._payouts(epoch)
            for op in [self._journal.op(p.op_id)]
        ]
        return EpochSummary(
            epoch=epoch, started_at=record.started_at, ended_at=record.ended_at,
            emission=record.emission, fee=record.fee, fee_minted=record.fee_minted,
            work_pool=record.work_pool, availability_pool=record.availability_pool,
            total_credits=record.total_credits, unminted=record.unminted, payouts=payouts,
        )

    # --- helpers ---------------------------------------------------------------------------------

    def _reserve(self, billing: JobBillingRecord, job_id: str, frame: int, node_id: str,
                 render_seconds: float, node_score: float, work: int, usd_micro: int,
                 cost_tokens: int, burn: int, over: bool) -> bool:
        """Reserve `burn` tokens of the job's escrow and record the charge, credit and intent
        (one transaction, `Billing.reserve_charge`); False when another charge got in first
        (the caller re-reads and retries)."""
        now = self._clock()
        burn_op = new_op(OpKind.BURN, f"burn:{job_id}:{frame}", burn, now,
                         job_id=job_id) if burn > 0 else None
        charge = FrameChargeRecord(
            job_id=job_id, frame=frame, node_id=node_id, render_seconds=render_seconds,
            node_score=node_score, work_ms=work, cost_usd_micro=usd_micro,
            cost_tokens=cost_tokens, tokens_burned=burn, over_budget=over, op_id=None,
            created_at=now,
        )
        return self.billing.reserve_charge(billing, charge, burn_op, now)

    def _billing(self, job_id: str) -> JobBillingRecord | None:
        return self.billing.get(job_id)

    def _charge(self, job_id: str, frame: int) -> FrameChargeRecord | None:
        return self.billing.charge(job_id, frame)

    def _payouts(self, epoch: int) -> list[PayoutRecord]:
        return self.billing.payouts(epoch)

    def _frame_charge(self, charge: FrameChargeRecord) -> FrameCharge:
        op = self._journal.op(charge.op_id) if charge.op_id else None
        return FrameCharge(
            job_id=charge.job_id, frame=charge.frame, node_id=charge.node_id,
            work_ms=charge.work_ms, cost_usd=Decimal(charge.cost_usd_micro) / 1_000_000,
            cost_tokens=charge.cost_tokens, tokens_burned=charge.tokens_burned,
            over_budget=charge.over_budget, signature=op.signature if op else None,
            state=op.state if op else "none",
        )

    def _escrow_receipt(self, billing: JobBillingRecord) -> EscrowReceipt:
        op = self._journal.op(billing.deposit_op_id)
        return EscrowReceipt(billing.job_id, billing.creator, billing.deposited,
                             op.signature or "", billing.state)

    def _short_message(self, creator: str, held: int, amount: int) -> str:
        price = self.pricing.token_price_usd
        return (
            f"insufficient balance: wallet {creator} holds {self._tokens(held)} tokens but the "
            f"job's maximum cost needs {self._tokens(amount)} tokens in escrow "
            f"(${tokens_to_usd(self.pricing, amount)} at ${price}/token). Top up the wallet "
            f"(test clusters: airdrop) or lower the maximum cost."
        )

    def _tokens(self, units: int) -> str:
        return str(Decimal(units) / self.pricing.base_units_per_token)

def _deposit_memo(signed_deposit: bytes) -> str:
    """The deposit id the message was built with (its Memo instruction); verified later."""
    try:
        message = VersionedTransaction.from_bytes(signed_deposit).message
    except Exception as exc:
        raise PaymentError(f"deposit is not a serialized transaction: {exc}") from exc
    if not isinstance(message, Message):
        raise PaymentError("deposit must be the legacy message from deposit_message")
    for ix in message.instructions:
        if message.account_keys[ix.program_id_index] == MEMO_PROGRAM_ID:
            memo = bytes(ix.data).decode(errors="replace")
            if memo.startswith(f"{MEMO_PREFIX}dep-"):
                return memo
    raise PaymentError("deposit was not built by deposit_message (no deposit id)")

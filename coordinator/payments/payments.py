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
from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from coordinator.chain.base import ChainError, TokenChain
from coordinator.chain.tokenops import MEMO_PROGRAM_ID
from coordinator.domain.budget import may_charge
from coordinator.domain.epochs import EpochConfig, split_emission
from coordinator.domain.ledger import OPEN_STATES, OpState, escrow_account
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
            op_id=memo.removeprefix(MEMO_PREFIX), purpose=f"deposit:{job_id}", kind="deposit",
            owner=creator, amount=amount, job_id=job_id, state=OpState.SENT, attempts=1,
            signature=tx.signature, raw=tx.raw, description=tx.description,
            valid_until=tx.valid_until, created_at=now, updated_at=now,
        )
        billing = JobBillingRecord(
            job_id=job_id, creator=creator, tier=tier, state="opening", deposit_op_id=op.op_id,
            deposited=amount, created_at=now, updated_at=now,
        )
        with self._session() as session:
            try:
                session.add(op)
                session.flush()
                session.add(billing)
                session.commit()
            except IntegrityError as exc:
                raise PaymentError(
                    "this signed deposit was already used, or the job already has escrow"
                ) from exc
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
        if billing.state != "open":
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
            op_id=op_id, purpose=f"{TOPUP_PURPOSE}{job_id}:{op_id}", kind="deposit",
            owner=creator, amount=amount, job_id=job_id, state=OpState.SENT, attempts=1,
            signature=tx.signature, raw=tx.raw, description=tx.description,
            valid_until=tx.valid_until, created_at=now, updated_at=now,
        )
        with self._session() as session:
            # Compare-and-set on the open escrow first: a settlement that got in before wins
            # and the top-up is refused; one that comes after sees this op and waits for it.
            still_open = session.exec(  # type: ignore[call-overload]
                update(JobBillingRecord)
                .where(col(JobBillingRecord.job_id) == job_id)
                .where(col(JobBillingRecord.state) == "open")
                .values(updated_at=now)
            ).rowcount
            if still_open != 1:
                session.rollback()
                raise PaymentError(f"job {job_id}'s escrow was closed meanwhile: nothing to "
                                   "top up")
            try:
                session.add(op)
                session.commit()
            except IntegrityError as exc:
                raise PaymentError("this signed deposit was already used") from exc
        state = self._journal.drive_signed(op.op_id, "the top-up")
        landed = self._journal.op(op.op_id)
        return EscrowReceipt(job_id, creator, amount, landed.signature or "",
                             "open" if state == OpState.LANDED else "opening")

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
            if billing is None or billing.state != "open":
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
        with self._session() as session:
            billing = session.get(JobBillingRecord, job_id)
            if billing is None:
                raise PaymentError(f"job {job_id} has no escrow")
            if billing.state == "opening":
                raise PaymentError(f"job {job_id}: the deposit has not landed yet")
            if billing.state == "open" and self._topup_pending(session, job_id):
                raise PaymentError(f"job {job_id}: a top-up has not landed yet")
            if billing.state == "open":
                refund = billing.deposited - billing.charged
                values: dict[str, object] = {"state": "settled", "refunded": refund,
                                             "updated_at": now}
                if refund > 0:
                    op = new_op("refund", f"refund:{job_id}", refund, now,
                                      owner=billing.creator, job_id=job_id)
                    session.add(op)
                    session.flush()
                    values["refund_op_id"] = op.op_id
                moved = session.exec(  # type: ignore[call-overload]
                    update(JobBillingRecord)
                    .where(col(JobBillingRecord.job_id) == job_id)
                    .where(col(JobBillingRecord.state) == "open")
                    .values(**values)
                ).rowcount
                # Checked again after taking the row: a top-up recorded meanwhile waits.
                if moved == 1 and not self._topup_pending(session, job_id):
                    session.commit()
                else:
                    session.rollback()
        billing = self._billing(job_id)
        assert billing is not None
        if billing.refund_op_id:
            self._journal.drive(billing.refund_op_id)
        return self.receipts(job_id)

    # --- epochs ---------------------------------------------------------------------------

    def next_epoch_due(self) -> float | None:
        """When the open epoch should close (None: nothing has happened yet)."""
        with self._session() as session:
            last = session.exec(select(func.max(EpochRecord.ended_at))).one()
            if last is None:
                last = session.exec(select(func.min(WorkCreditRecord.created_at))).one()
        return None if last is None else float(last) + self.epochs.length_seconds

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
        with self._epoch_lock, self._session() as session:
            try:
                epoch = self._plan_epoch(session, now, available_nodes, weights)
                session.commit()
            except IntegrityError as exc:
                raise PaymentError("another coordinator closed this epoch concurrently") from exc
        for payout in self._payouts(epoch):
            self._journal.drive(payout.op_id)
        return self.epoch_summary(epoch)

    def _plan_epoch(self, session: Session, now: float,
                    available: Sequence[str] | Mapping[str, float],
                    weights: Mapping[str, float] | None) -> int:
        last = session.exec(select(func.max(EpochRecord.epoch))).one() or 0
        previous = session.get(EpochRecord, last) if last else None
        if previous is not None and now <= previous.ended_at:
            raise PaymentError(f"epoch {last} already ends at {previous.ended_at}; now is {now}")
        epoch = int(last) + 1
        session.exec(  # type: ignore[call-overload]
            update(WorkCreditRecord)
            .where(col(WorkCreditRecord.epoch).is_(None))
            .where(col(WorkCreditRecord.created_at) <= now)
            .values(epoch=epoch)
        )
        rows = session.exec(
            select(WorkCreditRecord.node_id, func.sum(WorkCreditRecord.work_ms),
                   func.min(WorkCreditRecord.created_at))
            .where(WorkCreditRecord.epoch == epoch)
            .group_by(WorkCreditRecord.node_id)
        ).all()
        credits = {node: int(total) for node, total, _ in rows}
        started = previous.ended_at if previous else min([float(t) for *_, t in rows] or [now])
        emission = self.epochs.emission(epoch, self.pricing.decimals)
        split = split_emission(self.epochs, emission, credits, available, weights)
        fee_owner = self.epochs.fee_owner if split.fee > 0 else None
        session.add(EpochRecord(
            epoch=epoch, started_at=started, ended_at=now, emission=emission, fee=split.fee,
            fee_minted=fee_owner is not None, work_pool=split.work_pool,
            availability_pool=split.availability_pool, total_credits=sum(credits.values()),
            unminted=split.unminted_pools + (0 if fee_owner else split.fee),
        ))
        session.flush()
        payouts = [
            (node, node, credits.get(node, 0), split.work.get(node, 0),
             split.availability.get(node, 0))
            for node in sorted(set(split.work) | set(split.availability))
        ]
        if fee_owner is not None:
            payouts.append((f"fee:{fee_owner}", fee_owner, 0, 0, 0))
        for payee, owner, credit, work_amount, availability_amount in payouts:
            amount = work_amount + availability_amount if payee == owner else split.fee
            if amount <= 0:
                continue  # a share rounded to nothing: no transaction for zero tokens
            op = new_op("mint", f"mint:{epoch}:{payee}", amount, now, owner=owner,
                              epoch=epoch)
            session.add(op)
            session.flush()
            session.add(PayoutRecord(
                epoch=epoch, node_id=payee, credits=credit, work_amount=work_amount,
                availability_amount=availability_amount, amount=amount, op_id=op.op_id,
            ))
        return epoch

    # --- crash recovery and audit ---------------------------------------------------------------

    def reconcile_pending(self) -> dict[str, int]:
        """Finish every journaled op (at start-up and periodically): counts by resulting state.

        Grants/airdrops left `new` by a crash inside `fund_creator` cannot be decided (that
        call signs internally) and are counted as "unresolved"; `check` shows their effect.
        """
        with self._session() as session:
            ops = session.exec(
                select(ChainOpRecord)
                .where(col(ChainOpRecord.state).in_(OPEN_STATES))
                .order_by(col(ChainOpRecord.created_at))
            ).all()
        counts: dict[str, int] = {}
        for op in ops:
            if op.kind == "grant" and op.state == OpState.NEW:
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
        with self._session() as session:
            jobs = session.exec(
                select(JobBillingRecord.job_id).where(JobBillingRecord.creator == pubkey)
            ).all()
            held = ledger.balances(session, "escrow:")
        escrow_held = sum(held.get(escrow_account(job), 0) for job in jobs)
        return Wallet(pubkey, balance, tokens_to_usd(self.pricing, balance), escrow_held,
                      list(jobs))

    def receipts(self, job_id: str) -> JobReceipts:
        """Each approved frame's cost and burn, the totals and the refund."""
        with self._session() as session:
            billing = session.get(JobBillingRecord, job_id)
            if billing is None:
                raise PaymentError(f"job {job_id} has no escrow")
            charges = session.exec(
                select(FrameChargeRecord).where(FrameChargeRecord.job_id == job_id)
                .order_by(col(FrameChargeRecord.frame))
            ).all()
            held = ledger.balance(session, escrow_account(job_id))
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
        epochs = [
            EpochEarning(p.epoch, e.ended_at, p.credits, p.work_amount, p.availability_amount,
                         p.amount, op.signature, op.state)
            for p, e, op in rows
        ]
        total = sum(e.minted for e in epochs if e.state == OpState.LANDED)
        return NodeEarnings(node_id, epochs, total, int(open_credits))

    def epoch_summary(self, epoch: int) -> EpochSummary:
        """A closed epoch: its emission, split and payouts with their signatures."""
        with self._session() as session:
            record = session.get(EpochRecord, epoch)
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
        """Reserve `burn` tokens of the job's escrow and record the charge, credit and intent.

        One transaction; compare-and-set on `charged`, so concurrent charges never overdraw.
        False when another charge got in first (the caller re-reads and retries).
        """
        now = self._clock()
        with self._session() as session:
            moved = session.exec(  # type: ignore[call-overload]
                update(JobBillingRecord)
                .where(col(JobBillingRecord.job_id) == job_id)
                .where(col(JobBillingRecord.state) == "open")
                .where(col(JobBillingRecord.charged) == billing.charged)
                .values(charged=billing.charged + burn,
                        charged_usd_micro=billing.charged_usd_micro + usd_micro,
                        over_budget=billing.over_budget or over, updated_at=now)
            ).rowcount
            if moved != 1:
                session.rollback()
                return False
            op_id = None
            if burn > 0:
                op = new_op("burn", f"burn:{job_id}:{frame}", burn, now, job_id=job_id)
                session.add(op)
                session.flush()
                op_id = op.op_id
            session.add(FrameChargeRecord(
                job_id=job_id, frame=frame, node_id=node_id, render_seconds=render_seconds,
                node_score=node_score, work_ms=work, cost_usd_micro=usd_micro,
                cost_tokens=cost_tokens, tokens_burned=burn, over_budget=over, op_id=op_id,
                created_at=now,
            ))
            session.add(WorkCreditRecord(node_id=node_id, job_id=job_id, frame=frame,
                                         work_ms=work, created_at=now))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()  # the frame was charged concurrently: theirs stands
                return False
        return True

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @staticmethod
    def _topup_pending(session: Session, job_id: str) -> bool:
        """A top-up deposit of the job not final yet: settling now would strand it."""
        return session.exec(
            select(ChainOpRecord.op_id)
            .where(ChainOpRecord.job_id == job_id)
            .where(ChainOpRecord.kind == "deposit")
            .where(col(ChainOpRecord.purpose).startswith(TOPUP_PURPOSE))
            .where(col(ChainOpRecord.state).in_(OPEN_STATES))
        ).first() is not None

    def _billing(self, job_id: str) -> JobBillingRecord | None:
        with self._session() as session:
            return session.get(JobBillingRecord, job_id)

    def _charge(self, job_id: str, frame: int) -> FrameChargeRecord | None:
        with self._session() as session:
            return session.exec(
                select(FrameChargeRecord).where(FrameChargeRecord.job_id == job_id)
                .where(FrameChargeRecord.frame == frame)
            ).first()

    def _payouts(self, epoch: int) -> list[PayoutRecord]:
        with self._session() as session:
            return list(session.exec(
                select(PayoutRecord).where(PayoutRecord.epoch == epoch)
                .order_by(col(PayoutRecord.node_id))
            ).all())

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

"""Payments on real SPL Token transactions (LiteSVM): escrow, burns, refunds, epoch mints, audit.

Embedded chain + SQLite by default; the key flow once more over the RPC backend
(`TestRpcServer`) and once on PostgreSQL when it is reachable. No mocks: crashes are real
exceptions thrown by a chain subclass right before or after a real send.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from sqlalchemy import text
from sqlalchemy.engine import Engine

from coordinator.chain import PreparedTx, TokenChain, TxStatus, signed_deposit
from coordinator.chain.embedded import EmbeddedChain
from coordinator.chain.rpc import RpcChain
from coordinator.chain.testrpc import TestRpcServer
from coordinator.domain.epochs import EpochConfig, allocate, split_emission
from coordinator.domain.pricing import (
    PricingConfig,
    cost_usd,
    estimate,
    pixel_sample_estimate,
    usd_to_tokens,
    work_ms,
)
from coordinator.payments import InsufficientBalance, PaymentError, Payments
from coordinator.payments.results import EscrowShort
from coordinator.settlement import Settlement
from coordinator.storage.database import open_database
from coordinator.storage.models import JobRecord, SceneRecord
from coordinator.storage.proof import ProofStore
from coordinator.storage.store import FarmStore
from frameproof.benchmark import REFERENCE_SECONDS, run_benchmark, score_from_seconds

PRICING = PricingConfig()  # $0.50/token, 6 decimals, Tier 2 = $1.00 per reference-hour
EPOCHS = EpochConfig()  # 1000 tokens/epoch, 1% decay, 10% availability, 5% fee (not minted)
# One frame: 36 s on a node scoring 2.0 = 72 s of reference work = 0.02 h -> $0.02 on Tier 2
# -> 0.04 tokens = 40_000 base units.
FRAME_SECONDS, NODE_SCORE, FRAME_TOKENS = 36.0, 2.0, 40_000
GRANT = 100_000_000  # 100 tokens


class SimulatedCrash(BaseException):
    """The coordinator process dying: not an Exception, so nothing catches it."""


class CrashingChain(EmbeddedChain):
    """The real embedded chain; `crash` = "before" or "after" makes the next send die."""

    crash: str | None = None

    def send(self, tx: PreparedTx) -> TxStatus:
        when, self.crash = self.crash, None
        if when == "before":
            raise SimulatedCrash
        status = super().send(tx)
        if when == "after":
            raise SimulatedCrash
        return status


class LossyRpcChain(RpcChain):
    """The real RPC backend; `lose_next` makes sends vanish in transit (never reach the node)."""

    lose_next = False

    def send(self, tx: PreparedTx) -> TxStatus:
        if self.lose_next:
            return "unknown"
        return super().send(tx)


def node() -> str:
    return str(Keypair().pubkey())


def fund_and_escrow(payments: Payments, job_id: str, amount: int,
                    creator: Keypair | None = None) -> Keypair:
    """What submit does: grant, build the deposit, have the creator sign it, open escrow."""
    creator = creator or Keypair()
    payments.grant(str(creator.pubkey()))
    message = payments.deposit_message(str(creator.pubkey()), amount)
    receipt = payments.open_escrow(job_id, str(creator.pubkey()),
                                   signed_deposit(message, creator), amount)
    assert receipt.state == "open" and receipt.amount == amount
    return creator


def holders_total(chain: TokenChain, owners: list[str]) -> int:
    return sum(chain.token_balance(Pubkey.from_string(o)) for o in owners)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_database(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[CrashingChain]:
    chain = CrashingChain(tmp_path / "chain")
    yield chain
    chain.close()


@pytest.fixture
def payments(engine: Engine, chain: CrashingChain) -> Payments:
    return Payments(engine, chain, PRICING, EPOCHS)


# --- pricing and splits (pure) ---------------------------------------------------------------


def test_pricing_rounds_down_and_estimates_from_the_benchmark() -> None:
    assert work_ms(FRAME_SECONDS, NODE_SCORE) == 72_000
    assert cost_usd(PRICING, 72_000, 2) == Fraction(1, 50)
    assert usd_to_tokens(PRICING, cost_usd(PRICING, 72_000, 2)) == FRAME_TOKENS
    assert cost_usd(PRICING, 72_000, 1) > cost_usd(PRICING, 72_000, 2) > cost_usd(
        PRICING, 72_000, 3)
    # 1 ms on Tier 3 is $1/6,000,000 = 0.333 base units: rounded down, never up.
    assert usd_to_tokens(PRICING, cost_usd(PRICING, 1, 3)) == 0
    assert sum(usd_to_tokens(PRICING, cost_usd(PRICING, 1, 3)) for _ in range(3)) <= (
        usd_to_tokens(PRICING, cost_usd(PRICING, 3, 3)))
    # Without a probe: 1920x1080 at 50% = 960x540, 128 samples, 10 frames on Tier 2.
    quote = pixel_sample_estimate(width=1920, height=1080, resolution_percentage=50,
                                  samples=128)
    est = estimate(PRICING, quote, frames=10, tier=2)
    # 960*540*128 pixel-samples / (320*180*24 / 2.72 s) = 130.56 reference seconds a frame
    assert quote.ms_per_frame == 130_560 and est.work_ms == 1_305_600
    # The suggested maximum is the top of the range (4x without a probe).
    assert est.max_tokens == usd_to_tokens(PRICING, Fraction(130_560 * 4 * 10, 3_600_000))
    assert (est.cost_usd, est.max_cost_usd) == (Decimal("0.362667"), Decimal("1.450667"))


def test_epoch_split_is_exact() -> None:
    assert sum(allocate(1000, {"a": Fraction(1), "b": Fraction(1), "c": Fraction(1)}
                        ).values()) == 1000
    split = split_emission(EPOCHS, 1_000_000_007, {"a": 1, "b": 3}, ["a", "b", "c"])
    assert split.fee == 50_000_000
    assert split.fee + sum(split.work.values()) + sum(split.availability.values()) == (
        1_000_000_007)
    assert EPOCHS.emission(1, 6) == 1_000_000_000 and EPOCHS.emission(2, 6) == 990_000_000


# --- a job from escrow to refund -----------------------------------------------------------------


def test_full_job_flow_balances_exact(payments: Payments, chain: CrashingChain) -> None:
    node_a, node_b = node(), node()
    max_tokens = payments.escrow_amount(Decimal("1.00"))  # $1.00 max cost
    assert max_tokens == 2_000_000
    creator = fund_and_escrow(payments, "job-1", max_tokens)
    pub = str(creator.pubkey())
    assert chain.token_balance(creator.pubkey()) == GRANT - max_tokens
    assert chain.escrow_balance() == max_tokens

    charges = [payments.charge_frame("job-1", frame, n, FRAME_SECONDS, NODE_SCORE, 2)
               for frame, n in [(1, node_a), (2, node_b), (3, node_b)]]
    # frame 4 was rejected by the verifier: the coordinator never charges it.
    assert payments.charge_frame("job-1", 1, node_a, FRAME_SECONDS, NODE_SCORE, 2) == charges[0]
    for charge in charges:
        assert (charge.tokens_burned, charge.cost_usd, charge.over_budget) == (
            FRAME_TOKENS, Decimal("0.02"), False)
        assert charge.state == "landed" and chain.status(charge.signature or "") == "landed"
    wallet = payments.wallet(pub)
    assert (wallet.balance, wallet.escrow_held) == (GRANT - max_tokens,
                                                    max_tokens - 3 * FRAME_TOKENS)

    receipts = payments.settle_job("job-1")
    refund = max_tokens - 3 * FRAME_TOKENS
    assert [f.frame for f in receipts.frames] == [1, 2, 3]
    assert (receipts.total_tokens_burned, receipts.total_cost_usd) == (120_000, Decimal("0.06"))
    assert (receipts.refund, receipts.refund_state, receipts.held) == (refund, "landed", 0)
    assert chain.status(receipts.refund_signature or "") == "landed"
    assert payments.settle_job("job-1") == receipts  # idempotent: no second refund
    with pytest.raises(PaymentError, match="no open escrow"):
        payments.charge_frame("job-1", 5, node_a, FRAME_SECONDS, NODE_SCORE, 2)

    assert chain.token_balance(creator.pubkey()) == GRANT - 120_000
    assert chain.escrow_balance() == 0
    assert chain.supply() == GRANT - 120_000
    assert payments.wallet(pub).escrow_held == 0
    report = payments.check()
    assert report.ok, report.lines


def test_escrow_without_a_job_is_refunded_and_a_live_job_keeps_its_own(
        payments: Payments, engine: Engine) -> None:
    store = FarmStore(engine)
    store.save_scene(SceneRecord(scene_id="scene", main_file="a.blend", info_json="{}",
                                 created_at=0.0))
    store.create_job(JobRecord(job_id="live", scene_id="scene", frames_spec="1",
                               settings_json="{}", created_at=0.0, updated_at=0.0), [[1]], 0.0)
    orphaned = fund_and_escrow(payments, "crashed-at-submit", 1_000_000)
    kept = fund_and_escrow(payments, "live", 1_000_000)
    Settlement(store, ProofStore(engine), payments).sweep(time.time() + 120)
    assert payments.wallet(str(orphaned.pubkey())).escrow_held == 0
    assert payments.receipts("crashed-at-submit").refund == 1_000_000
    assert payments.wallet(str(kept.pubkey())).escrow_held == 1_000_000


def test_insufficient_balance_is_a_clear_error(payments: Payments, chain: CrashingChain) -> None:
    creator = Keypair()
    payments.grant(str(creator.pubkey()))
    assert payments.grant(str(creator.pubkey())) is None  # once per creator
    want = GRANT + 1
    message = payments.deposit_message(str(creator.pubkey()), want)
    with pytest.raises(InsufficientBalance, match=r"holds 100 tokens .* needs 100.000001 tokens"):
        payments.open_escrow("job-x", str(creator.pubkey()), signed_deposit(message, creator),
                             want)
    assert chain.escrow_balance() == 0 and chain.token_balance(creator.pubkey()) == GRANT
    with pytest.raises(PaymentError, match="no escrow"):
        payments.receipts("job-x")
    # A signed deposit cannot be replayed for a second job, nor altered.
    message = payments.deposit_message(str(creator.pubkey()), 1_000)
    signed = signed_deposit(message, creator)
    payments.open_escrow("job-y", str(creator.pubkey()), signed, 1_000)
    with pytest.raises(PaymentError, match="already used"):
        payments.open_escrow("job-z", str(creator.pubkey()), signed, 1_000)
    with pytest.raises(PaymentError, match="refused"):
        payments.open_escrow("job-z", str(creator.pubkey()), signed, 2_000)
    assert payments.check().ok


def test_a_charge_past_the_escrow_waits_whole_for_a_top_up(
        payments: Payments, chain: CrashingChain) -> None:
    deposit = 2 * FRAME_TOKENS + FRAME_TOKENS // 2  # covers 2.5 frames
    creator = fund_and_escrow(payments, "job-2", deposit)
    n = node()
    first = [payments.charge_frame("job-2", f, n, FRAME_SECONDS, NODE_SCORE, 2) for f in (1, 2)]
    assert not any(c.over_budget for c in first)
    with pytest.raises(EscrowShort, match=f"costs {FRAME_TOKENS} base units, the escrow holds "
                                          f"{FRAME_TOKENS // 2}"):
        payments.charge_frame("job-2", 3, n, FRAME_SECONDS, NODE_SCORE, 2)
    assert [c.frame for c in payments.receipts("job-2").frames] == [1, 2], "nothing partial"
    message = payments.deposit_message(str(creator.pubkey()), FRAME_TOKENS)
    payments.top_up("job-2", str(creator.pubkey()), signed_deposit(message, creator),
                    FRAME_TOKENS)
    third = payments.charge_frame("job-2", 3, n, FRAME_SECONDS, NODE_SCORE, 2)
    assert (third.tokens_burned, third.cost_tokens, third.over_budget) == (
        FRAME_TOKENS, FRAME_TOKENS, False)
    receipts = payments.settle_job("job-2")
    assert (receipts.deposited, receipts.refund) == (deposit + FRAME_TOKENS, FRAME_TOKENS // 2)
    assert chain.escrow_balance() == 0 and chain.supply() == GRANT - 3 * FRAME_TOKENS
    assert payments.earnings(n).open_credits == 3 * 72_000
    assert payments.check().ok


def test_concurrent_charges_never_overdraw(payments: Payments, chain: CrashingChain) -> None:
    deposit = 5 * FRAME_TOKENS
    fund_and_escrow(payments, "job-3", deposit)
    n = node()
    errors: list[BaseException] = []

    def charge(frame: int) -> None:
        try:
            payments.charge_frame("job-3", frame, n, FRAME_SECONDS, NODE_SCORE, 2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=charge, args=(f,)) for f in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Exactly five frames fit: the other three are refused whole (they wait for a top-up).
    assert len(errors) == 3 and all(isinstance(e, EscrowShort) for e in errors), errors
    receipts = payments.settle_job("job-3")
    assert receipts.total_tokens_burned == deposit and len(receipts.frames) == 5
    assert chain.escrow_balance() == 0 and payments.check().ok


# --- epochs --------------------------------------------------------------------------------------


def test_epoch_mint_split_follows_approved_work(engine: Engine, chain: CrashingChain) -> None:
    fee_owner = node()
    payments = Payments(engine, chain, PRICING,
                        EpochConfig(fee_owner=fee_owner, length_seconds=100.0))
    node_a, node_b, node_c = node(), node(), node()
    fund_and_escrow(payments, "job-4", 1_000_000)
    for frame, n in [(1, node_a), (2, node_b), (3, node_b), (4, node_b)]:  # A:B work = 1:3
        payments.charge_frame("job-4", frame, n, FRAME_SECONDS, NODE_SCORE, 2)
    payments.settle_job("job-4")
    due = payments.next_epoch_due()
    assert due is not None
    assert payments.close_epoch_if_due(due - 1, [node_a]) is None

    summary = payments.close_epoch(due, available_nodes=[node_a, node_b, node_c])
    # 1000 tokens: 5% fee (50) to the fee owner; 10% of the rest (95) shared by 3 available
    # nodes; 855 pro rata to work, 1:3.
    assert (summary.epoch, summary.emission, summary.fee, summary.fee_minted) == (
        1, 1_000_000_000, 50_000_000, True)
    assert (summary.availability_pool, summary.work_pool) == (95_000_000, 855_000_000)
    paid = {p.node_id: p for p in summary.payouts}
    assert paid[node_a].work_amount == 213_750_000 and paid[node_b].work_amount == 641_250_000
    assert sorted(paid[n].availability_amount for n in (node_a, node_b, node_c)) == [
        31_666_666, 31_666_667, 31_666_667]
    assert all(p.state == "landed" for p in summary.payouts)
    for n in (node_a, node_b, node_c):
        assert chain.token_balance(Pubkey.from_string(n)) == paid[n].amount
    assert chain.token_balance(Pubkey.from_string(fee_owner)) == 50_000_000
    assert chain.supply() == GRANT - 4 * FRAME_TOKENS + 1_000_000_000

    earnings = payments.earnings(node_b)
    assert earnings.total_minted == paid[node_b].amount and earnings.open_credits == 0
    assert earnings.epochs[0].credits == 3 * 72_000
    assert chain.status(earnings.epochs[0].signature or "") == "landed"

    # Epoch 2: decayed emission, no work, reputation-weighted nothing; only availability.
    second = payments.close_epoch(due + 100, available_nodes=[node_c])
    assert second.emission == 990_000_000 and second.total_credits == 0
    assert [(p.node_id, p.amount) for p in second.payouts if not p.node_id.startswith("fee")] == [
        (node_c, 94_050_000)]
    assert second.unminted == 846_450_000  # the work pool nobody earned
    report = payments.check()
    assert report.ok, report.lines


def test_reputation_weights_and_unminted_fee(payments: Payments, chain: CrashingChain) -> None:
    node_a, node_b = node(), node()
    fund_and_escrow(payments, "job-5", 1_000_000)
    for frame, n in [(1, node_a), (2, node_b)]:
        payments.charge_frame("job-5", frame, n, FRAME_SECONDS, NODE_SCORE, 2)
    summary = payments.close_epoch(1e12, available_nodes=[], weights={node_b: 0.5})
    paid = {p.node_id: p.amount for p in summary.payouts}
    assert paid == {node_a: 570_000_000, node_b: 285_000_000}  # 950 x 2/3 and 1/3 (weight)
    assert not summary.fee_minted and summary.unminted == 50_000_000 + 95_000_000
    assert chain.supply() == GRANT - 2 * FRAME_TOKENS + 855_000_000
    assert payments.check().ok


# --- audit and crash safety ---------------------------------------------------------------------


def test_check_detects_a_tampered_ledger(payments: Payments, engine: Engine) -> None:
    fund_and_escrow(payments, "job-6", 1_000_000)
    payments.charge_frame("job-6", 1, node(), FRAME_SECONDS, NODE_SCORE, 2)
    assert payments.check().ok
    with engine.begin() as db:  # one line edited: the posting no longer balances
        db.execute(text("UPDATE pay_ledger_line SET amount = amount + 1 "
                        "WHERE account = 'escrow:job-6' AND amount > 0"))
    report = payments.check()
    assert not report.ok
    assert any("unbalanced" in line for line in report.mismatches)
    assert any(line.startswith("MISMATCH escrow") for line in report.mismatches)
    with engine.begin() as db:  # undone, then a balanced forgery: burn 1 more on paper
        db.execute(text("UPDATE pay_ledger_line SET amount = amount - 1 "
                        "WHERE account = 'escrow:job-6' AND amount > 0"))
        db.execute(text("UPDATE pay_ledger_line SET amount = amount + 1 WHERE account = 'burned'"))
        db.execute(text("UPDATE pay_ledger_line SET amount = amount - 1 "
                        "WHERE account = 'escrow:job-6' AND amount < 0"))
    report = payments.check()
    assert not report.ok and not any("unbalanced" in line for line in report.mismatches)
    assert any(line.startswith("MISMATCH supply") for line in report.mismatches)
    assert any("burn" in line and "expected" in line for line in report.mismatches)


def test_crash_between_send_and_record_never_burns_twice(
    tmp_path: Path, db_url: str, engine: Engine, chain: CrashingChain
) -> None:
    payments = Payments(engine, chain, PRICING, EPOCHS)
    fund_and_escrow(payments, "job-7", 1_000_000)
    n = node()
    chain.crash = "after"  # the burn lands on chain; the process dies before recording it
    with pytest.raises(SimulatedCrash):
        payments.charge_frame("job-7", 1, n, FRAME_SECONDS, NODE_SCORE, 2)
    chain.crash = "before"  # the refund is journaled and signed, then the process dies
    with pytest.raises(SimulatedCrash):
        payments.settle_job("job-7")
    assert chain.supply() == GRANT - FRAME_TOKENS and chain.escrow_balance() == 1_000_000 - (
        FRAME_TOKENS)
    del payments, chain  # the coordinator is gone

    engine2 = open_database(db_url)
    chain2 = CrashingChain(tmp_path / "chain")
    restarted = Payments(engine2, chain2, PRICING, EPOCHS)
    assert not restarted.check().ok  # the ledger is behind the chain until reconciled
    assert restarted.reconcile_pending() == {"landed": 2}
    assert restarted.reconcile_pending() == {}
    receipts = restarted.receipts("job-7")
    assert receipts.total_tokens_burned == FRAME_TOKENS and receipts.refund_state == "landed"
    assert chain2.supply() == GRANT - FRAME_TOKENS  # burned once
    assert chain2.escrow_balance() == 0
    assert restarted.charge_frame("job-7", 1, n, FRAME_SECONDS, NODE_SCORE, 2).state == "landed"
    report = restarted.check()
    assert report.ok, report.lines
    engine2.dispose()


def test_epoch_close_crash_is_finished_by_reconcile(
    tmp_path: Path, db_url: str, engine: Engine, chain: CrashingChain
) -> None:
    payments = Payments(engine, chain, PRICING, EPOCHS)
    fund_and_escrow(payments, "job-8", 1_000_000)
    node_a = node()
    payments.charge_frame("job-8", 1, node_a, FRAME_SECONDS, NODE_SCORE, 2)
    chain.crash = "after"
    with pytest.raises(SimulatedCrash):
        payments.close_epoch(1e12, available_nodes=[node_a])
    restarted = Payments(open_database(db_url), CrashingChain(tmp_path / "chain"),
                         PRICING, EPOCHS)
    assert restarted.reconcile_pending() == {"landed": 1}
    earned = restarted.earnings(node_a)
    assert earned.total_minted == 950_000_000  # all of work + availability: the only node
    assert restarted.chain.token_balance(Pubkey.from_string(node_a)) == 950_000_000
    assert restarted.check().ok


# --- other backends and databases -------------------------------------------------------------


def test_key_flow_over_rpc(engine: Engine) -> None:
    with TestRpcServer() as server:
        treasury = Keypair()
        server.svm.airdrop(treasury.pubkey(), 100 * 10**9)
        chain = LossyRpcChain.create_mint(server.url, treasury, decimals=6,
                                          poll_interval_s=0.01)
        assert isinstance(chain, LossyRpcChain)
        try:
            payments = Payments(engine, chain, PRICING, EPOCHS)
            creator = fund_and_escrow(payments, "job-r", 1_000_000)
            n = node()
            payments.charge_frame("job-r", 1, n, FRAME_SECONDS, NODE_SCORE, 2)
            # A refund signed and journaled but never sent, whose blockhash then expires:
            # reconcile sees "dropped" and sends a fresh attempt, exactly once.
            billing_refund = 1_000_000 - FRAME_TOKENS
            chain.lose_next = True
            receipts = payments.settle_job("job-r")
            assert receipts.refund_state == "sent"
            chain.lose_next = False
            server.expire_blockhashes()
            assert payments.reconcile_pending() == {"landed": 1}
            receipts = payments.receipts("job-r")
            assert receipts.refund == billing_refund and receipts.refund_state == "landed"
            summary = payments.close_epoch(1e12, available_nodes=[n])
            assert summary.payouts[0].state == "landed"
            assert chain.token_balance(creator.pubkey()) == GRANT - FRAME_TOKENS
            assert chain.supply() == GRANT - FRAME_TOKENS + 950_000_000
            report = payments.check()
            assert report.ok, report.lines
        finally:
            chain.close()


def test_ledger_tables_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    engine = open_database(postgres_url)
    chain = EmbeddedChain(tmp_path / "chain")
    try:
        payments = Payments(engine, chain, PRICING, EPOCHS)
        fund_and_escrow(payments, "job-pg", 1_000_000)
        n = node()
        for frame in (1, 2):
            payments.charge_frame("job-pg", frame, n, FRAME_SECONDS, NODE_SCORE, 2)
        assert payments.settle_job("job-pg").refund == 1_000_000 - 2 * FRAME_TOKENS
        payments.close_epoch(1e12, available_nodes=[n])
        assert payments.earnings(n).total_minted == 950_000_000
        report = payments.check()
        assert report.ok, report.lines
    finally:
        chain.close()
        engine.dispose()


def test_benchmark_scores_the_reference_scene() -> None:
    result = run_benchmark()  # real bpy in a child: build the scene, warm up, time a render
    assert result.seconds > 0 and result.blender_version
    assert result.score == pytest.approx(REFERENCE_SECONDS / result.seconds)
    assert 0.05 < result.score < 50  # 1.0 on the reference machine; loose for other hosts
    with pytest.raises(ValueError):
        score_from_seconds(0.0)

"""A budget never destroys work: pause, top-up, resume, cancel, on the real store and chain.

The rules are pure (coordinator.domain.budget); the scenarios run the real FarmStore on SQLite,
real Payments on the embedded SVM (SPL Token transactions) and the real settlement sweep.
Frames are delivered through the store's own lease and completion calls; only the
verifier's verdict is written directly (Proof-of-Render has its own tests). The same story
with real nodes and Blender is in test_budget_e2e.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from solders.keypair import Keypair
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from coordinator.api.convert import budget_state, frame_messages
from coordinator.chain import signed_deposit
from coordinator.chain.embedded import EmbeddedChain
from coordinator.domain.budget import (
    CHARGE_SHORT,
    LEASE_SHORT,
    BudgetView,
    frame_price,
    may_charge,
    may_lease,
    pause_reason,
    topup_suggestion,
)
from coordinator.domain.pricing import PricingConfig
from coordinator.domain.states import JobState, TaskState
from coordinator.payments import InsufficientBalance, PaymentError, Payments
from coordinator.payments.results import EscrowShort
from coordinator.settlement import Settlement
from coordinator.storage.database import open_database, sqlite_url
from coordinator.storage.models import FrameResultRecord, JobRecord, SceneRecord, TaskRecord
from coordinator.storage.proof import ProofStore
from coordinator.storage.store import FarmStore, FrameOutputRecord
from frameproof.creator import Creator, InvalidRequest

PRICE = 1_000  # expected price of a frame, base units


# --- the rules (pure) ---------------------------------------------------------------------


def view(deposited: int, charged: int = 0, committed: int = 0, remaining: int = 4,
         price: int = PRICE) -> BudgetView:
    return BudgetView(deposited, charged, committed, remaining, price)


def test_a_lease_must_fit_in_the_escrow_with_everything_in_flight() -> None:
    assert may_lease(view(1_500), 1)
    assert not may_lease(view(1_500, committed=1), 1), "the frame in flight is reserved"
    assert may_lease(view(2_000, committed=1), 1), "exactly covered is enough"
    assert not may_lease(view(2_000, charged=1, committed=1), 1)
    assert not may_lease(view(3_000), 4), "a chunk reserves all of its frames"
    assert may_lease(view(0, price=0), 10), "a free job is never gated"


def test_a_charge_is_whole_or_nothing() -> None:
    assert may_charge(1_000, 1_000) and may_charge(1_000, 0)
    assert not may_charge(999, 1_000), "never a partial burn"
    assert not may_charge(1_000, -1)


def test_the_expected_price_is_the_estimate_then_the_jobs_own_mean() -> None:
    assert frame_price(PRICE, 0, 0) == PRICE
    assert frame_price(PRICE, 5_000, 2) == 2_500, "the estimate stops mattering"
    assert frame_price(PRICE, 5_001, 2) == 2_501, "rounded up: reserve, never under"
    assert frame_price(-5, 0, 0) == 0


def test_the_suggested_topup_finishes_the_job_and_covers_one_frame_at_least() -> None:
    assert topup_suggestion(view(1_500, remaining=4)) == 2_500
    assert topup_suggestion(view(10_000, remaining=1)) == PRICE
    assert topup_suggestion(view(0, remaining=0, price=0)) == 1
    # A frame waiting for money costs 4x the estimate: the rest are expected to as well.
    assert topup_suggestion(view(1_500, remaining=4), waiting_cost=4 * PRICE) == 14_500


def test_the_pause_reason_says_how_much_and_what_to_run() -> None:
    reason = pause_reason("abc", LEASE_SHORT, Decimal("0.0004"), Decimal("0.0005"),
                          Decimal("0.0012345"))
    assert reason.startswith("paused: budget used up ($0.000400 of $0.000500 charged;")
    assert reason.endswith("top up with `frameproof topup abc --usd 0.001235`")
    assert "--usd 12.35`" in pause_reason("abc", CHARGE_SHORT, Decimal(10), Decimal(20),
                                          Decimal("12.341"))


def test_a_job_is_done_only_once_its_frames_are_paid() -> None:
    assert budget_state(JobState.DONE, paused=False, awaiting_charge=False) == JobState.DONE
    assert budget_state(JobState.DONE, paused=False, awaiting_charge=True) == JobState.RENDERING
    assert budget_state(JobState.DONE, paused=True, awaiting_charge=True) == JobState.PAUSED
    assert budget_state(JobState.RENDERING, paused=True,
                        awaiting_charge=False) == JobState.PAUSED
    assert budget_state(JobState.CANCELLED, paused=True,
                        awaiting_charge=True) == JobState.CANCELLED


# --- scenarios on the real store, chain and sweep -------------------------------------------


class Farm:
    """The coordinator's money path without the RPC layer: store, payments, sweep."""

    def __init__(self, engine: Engine, chain: EmbeddedChain) -> None:
        self.engine = engine
        self.chain = chain
        self.store = FarmStore(engine)
        self.payments = Payments(engine, chain, PricingConfig(decimals=chain.decimals))
        self.settlement = Settlement(self.store, ProofStore(engine), self.payments)
        self.store.save_scene(SceneRecord(scene_id="scene", main_file="a.blend",
                                          info_json="{}", created_at=0.0))
        self.node = str(Keypair().pubkey())
        self.store.register_node(self.node, "node", "{}", time.time())

    def submit(self, job_id: str, frames: int, escrow: int, creator: Keypair) -> None:
        self.payments.grant(str(creator.pubkey()))
        self.escrow(job_id, creator, escrow)
        now = time.time()
        self.store.create_job(JobRecord(job_id=job_id, scene_id="scene", creator=str(
            creator.pubkey()), frames_spec=f"1-{frames}", settings_json="{}", created_at=now,
            updated_at=now), [[f] for f in range(1, frames + 1)], now, frame_price_tokens=PRICE)

    def escrow(self, job_id: str, creator: Keypair, amount: int) -> None:
        message = self.payments.deposit_message(str(creator.pubkey()), amount)
        self.payments.open_escrow(job_id, str(creator.pubkey()),
                                  signed_deposit(message, creator), amount)

    def top_up(self, job_id: str, creator: Keypair, amount: int, signer: Keypair | None = None):
        signer = signer or creator
        message = self.payments.deposit_message(str(signer.pubkey()), amount)
        return self.payments.top_up(job_id, str(creator.pubkey()),
                                    signed_deposit(message, signer), amount)

    def lease(self) -> TaskRecord | None:
        return self.store.lease_next_task(self.node, time.time())

    def render(self, task: TaskRecord, seconds: float = 3600.0) -> None:
        """Deliver the task's frame and have Proof-of-Render approve it."""
        output = FrameOutputRecord(frame=task.first_frame, sha256=f"{task.task_id:0<64}"[:64],
                                   size=1, extension="png", render_seconds=seconds)
        assert task.lease_id is not None
        self.store.complete_task(task.lease_id, self.node, [output], time.time())
        with Session(self.engine) as session:
            session.execute(update(FrameResultRecord)
                            .where(col(FrameResultRecord.task_id) == task.task_id)
                            .values(verdict="approved"))
            session.execute(update(TaskRecord).where(col(TaskRecord.task_id) == task.task_id)
                            .values(state=TaskState.DONE))
            session.commit()

    def paused(self, job_id: str) -> bool:
        record = self.store.budget_record(job_id)
        return record is not None and record.paused

    def burned_within_escrow(self, job_id: str) -> None:
        """The invariant: what was charged never exceeds what was escrowed."""
        receipts = self.payments.receipts(job_id)
        assert receipts.total_tokens_burned <= receipts.deposited
        assert all(f.tokens_burned == f.cost_tokens for f in receipts.frames), "no partial burn"


@pytest.fixture(params=["sqlite", "postgresql"])
def farm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Farm]:
    url = (sqlite_url(tmp_path) if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    engine = open_database(url)
    chain = EmbeddedChain(tmp_path / "chain")
    yield Farm(engine, chain)
    chain.close()
    engine.dispose()


def test_a_charge_past_the_escrow_books_nothing(farm: Farm) -> None:
    creator = Keypair()
    farm.submit("short", 1, 1, creator)
    with pytest.raises(EscrowShort, match="escrow holds 1"):
        farm.payments.charge_frame("short", 1, farm.node, 3600.0, 1.0, 3)
    receipts = farm.payments.receipts("short")
    assert (receipts.frames, receipts.total_tokens_burned) == ([], 0)
    assert farm.payments.check().ok


def test_a_paused_job_keeps_its_frames_and_resumes_after_a_topup(farm: Farm) -> None:
    creator = Keypair()
    farm.submit("job", 3, PRICE + PRICE // 2, creator)  # the estimate covers 1.5 frames
    first = farm.lease()
    assert first is not None and first.first_frame == 1
    assert farm.lease() is None, "frame 2 would overshoot the escrow with frame 1 in flight"
    assert farm.paused("job")
    assert farm.store.budget_record("job").reason == LEASE_SHORT  # type: ignore[union-attr]

    farm.render(first)  # the frame in flight is kept, and costs more than the escrow left
    farm.settlement.sweep()
    assert farm.paused("job")
    assert farm.store.budget_record("job").reason == CHARGE_SHORT  # type: ignore[union-attr]
    farm.burned_within_escrow("job")
    assert farm.payments.receipts("job").frames == []
    frame = frame_messages(farm.store.list_tasks("job"), farm.store.list_frame_results("job"),
                           {})[0]
    assert frame.verification.endswith("waiting for its charge")
    image = farm.store.list_frame_results("job")[0].blob_sha256
    assert not farm.store.creator_may_read(str(creator.pubkey()), image), "unpaid: not served"

    receipt = farm.top_up("job", creator, 100_000_000 // 10)
    assert receipt.state == "open" and receipt.signature
    farm.settlement.sweep()
    assert not farm.paused("job")
    farm.burned_within_escrow("job")
    assert [f.frame for f in farm.payments.receipts("job").frames] == [1]
    assert farm.store.creator_may_read(str(creator.pubkey()), image)
    for _ in range(2):
        task = farm.lease()
        assert task is not None
        farm.render(task)
    farm.settlement.sweep()
    farm.settlement.sweep()
    receipts = farm.payments.receipts("job")
    assert [f.frame for f in receipts.frames] == [1, 2, 3]
    assert receipts.state == "settled"
    assert receipts.total_tokens_burned + receipts.refund == receipts.deposited
    assert receipts.deposited == PRICE + PRICE // 2 + 10_000_000
    assert [t.attempts for t in farm.store.list_tasks("job")] == [0, 0, 0], "rendered once"
    report = farm.payments.check()
    assert report.ok, report.lines


def test_only_the_creator_tops_up_an_open_job_with_the_signed_amount(farm: Farm) -> None:
    creator, stranger = Keypair(), Keypair()
    farm.submit("job", 2, PRICE, creator)
    farm.payments.grant(str(stranger.pubkey()))
    message = farm.payments.deposit_message(str(stranger.pubkey()), 5_000)
    with pytest.raises(PaymentError, match="another creator"):
        farm.payments.top_up("job", str(stranger.pubkey()), signed_deposit(message, stranger),
                             5_000)
    with pytest.raises(PaymentError, match="deposit refused"):  # signed by someone else
        farm.top_up("job", creator, 5_000, signer=stranger)
    message = farm.payments.deposit_message(str(creator.pubkey()), 5_000)
    signed = signed_deposit(message, creator)
    with pytest.raises(PaymentError, match="deposit refused"):  # not the amount signed
        farm.payments.top_up("job", str(creator.pubkey()), signed, 6_000)
    farm.payments.top_up("job", str(creator.pubkey()), signed, 5_000)
    with pytest.raises(PaymentError, match="already used"):
        farm.payments.top_up("job", str(creator.pubkey()), signed, 5_000)
    with pytest.raises(InsufficientBalance):
        farm.top_up("job", creator, 10**12)
    assert farm.payments.receipts("job").deposited == PRICE + 5_000
    farm.payments.settle_job("job")
    with pytest.raises(PaymentError, match="settled: nothing to top up"):
        farm.top_up("job", creator, 5_000)
    report = farm.payments.check()
    assert report.ok, report.lines
    assert farm.payments.receipts("job").refund == PRICE + 5_000


def test_cancelling_a_paused_job_refunds_the_rest_and_keeps_unpaid_frames_back(
        farm: Farm) -> None:
    creator = Keypair()
    farm.submit("job", 3, PRICE + PRICE // 2, creator)
    first = farm.lease()
    assert first is not None and farm.lease() is None and farm.paused("job")
    farm.render(first)
    farm.settlement.sweep()
    farm.store.cancel_job("job", time.time())
    farm.settlement.sweep()
    farm.settlement.sweep()
    receipts = farm.payments.receipts("job")
    assert receipts.state == "settled" and receipts.frames == []
    assert receipts.refund == PRICE + PRICE // 2 and receipts.refund_state == "landed"
    frame = frame_messages(farm.store.list_tasks("job"), farm.store.list_frame_results("job"),
                           {})[0]
    assert "never paid" in frame.verification
    image = farm.store.list_frame_results("job")[0].blob_sha256
    assert not farm.store.creator_may_read(str(creator.pubkey()), image)
    assert farm.payments.earnings(farm.node).open_credits == 0, "no credit for unpaid work"
    report = farm.payments.check()
    assert report.ok, report.lines


@pytest.mark.parametrize("usd", [0.0, -1.0, float("nan"), float("inf"), 2e6])
def test_a_bad_topup_amount_fails_before_any_call(usd: float) -> None:
    """Nothing listens on port 1: an InvalidRequest proves no call was made."""
    with Creator.connect("127.0.0.1:1", Keypair()) as creator, \
            pytest.raises(InvalidRequest, match="top-up must be more than"):
        creator.top_up("abc", usd)

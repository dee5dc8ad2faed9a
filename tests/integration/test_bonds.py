"""Node bonds on real SPL Token transactions (LiteSVM): post, return, slash, and the rules.

The chain is the embedded one with the real Token program; the ledger check must agree with
it after every step. The rules (lease limits, slash split, availability) are pure functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from sqlalchemy.engine import Engine

from coordinator.bonding import BondKeeper, busy_reason
from coordinator.chain import signed_deposit
from coordinator.chain.embedded import EmbeddedChain
from coordinator.chain.rpc import RpcChain
from coordinator.chain.testrpc import TestRpcServer
from coordinator.domain.reputation import NodeStanding, check_probability
from coordinator.payments import PaymentError, Payments
from coordinator.payments.bonds import (
    UNBOUNDED,
    BondPolicy,
    NodeEpochFacts,
    availability_weights,
    effective_standing,
    lease_limits,
    slash_plan,
)
from coordinator.payments.results import InsufficientBalance
from coordinator.storage.database import open_database
from coordinator.storage.models import JobRecord, SceneRecord, TaskRecord
from coordinator.storage.proof import ProofStore, VerificationResult
from coordinator.storage.store import FarmStore, FrameOutputRecord, SchedulingPolicy

TOKEN = 10**6
POLICY = BondPolicy(min_bond_tokens=Decimal(10), unbond_cooldown_seconds=100.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_database(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def payments(engine: Engine, tmp_path: Path, clock: Clock) -> Iterator[Payments]:
    chain = EmbeddedChain(tmp_path / "chain")
    yield Payments(engine, chain, clock=clock, bonds=POLICY)
    chain.close()


def post(payments: Payments, node: Keypair, tokens: int) -> None:
    """What `render-node bond` does: prepare, sign with the node's key, post."""
    message = payments.bonds.bond_message(str(node.pubkey()), tokens * TOKEN)
    payments.bonds.post_bond(str(node.pubkey()), signed_deposit(message, node), tokens * TOKEN)


def balance(payments: Payments, key: Keypair | str) -> int:
    owner = key.pubkey() if isinstance(key, Keypair) else Pubkey.from_string(key)
    return payments.chain.token_balance(owner)


def assert_ledger_ok(payments: Payments) -> None:
    report = payments.check()
    assert report.ok, "\n".join(report.lines)


# --- the rules (pure) --------------------------------------------------------------------------


def test_new_or_unbonded_identities_get_a_bounded_share() -> None:
    fresh = NodeStanding()
    proven = NodeStanding(consecutive_verified=POLICY.proven_after, verified=10)
    for standing, bonded in ((fresh, False), (fresh, True), (proven, False)):
        limits = lease_limits(POLICY, standing, bonded)
        assert (limits.max_leases, limits.max_frames_per_job) == (1, 4), (standing, bonded)
    assert "bond" in lease_limits(POLICY, proven, False).reason
    assert "verified record" in lease_limits(POLICY, fresh, True).reason
    assert lease_limits(POLICY, proven, True) == UNBOUNDED
    # A failure resets the run: the node is bounded again until it has a new record.
    assert lease_limits(POLICY, NodeStanding(consecutive_verified=0, verified=99, failed=1),
                        True).bounded


def test_without_a_bond_a_record_does_not_leave_probation() -> None:
    veteran = NodeStanding(score=0.95, consecutive_verified=500, verified=500, delivered=500)
    assert veteran.tier == "tier1" and check_probability(veteran) < 0.1
    held_back = effective_standing(veteran, bonded=False)
    assert held_back.tier == "probation" and check_probability(held_back) == 1.0
    assert effective_standing(veteran, bonded=True) == veteran


def test_slash_split_is_exact_and_pro_rata() -> None:
    plan = slash_plan(POLICY, 10_000_001, {"alice": 3, "bob": 1})
    assert plan.amount == 5_000_000  # half the bond, rounded down
    assert plan.to_creators == {"alice": 3_000_000, "bob": 1_000_000}  # 80% pro rata
    assert plan.to_treasury == 1_000_000
    assert plan.amount == sum(plan.to_creators.values()) + plan.to_treasury
    odd = slash_plan(POLICY, 7, {"a": 1, "b": 1, "c": 1})
    assert odd.amount == sum(odd.to_creators.values()) + odd.to_treasury == 3
    nobody = slash_plan(POLICY, 1000, {})
    assert nobody.to_creators == {} and nobody.to_treasury == 500
    assert slash_plan(POLICY, 0, {"a": 1}).amount == 0


def test_availability_goes_only_to_proven_bonded_capacity() -> None:
    facts = {
        "fast": NodeEpochFacts(bonded=True, quarantined=False, verified_work_ms=3000,
                               answering=True, measured_speed=3.0),
        "slow": NodeEpochFacts(True, False, 9000, True, 1.0),  # more work, less capacity
        "idle-key": NodeEpochFacts(False, False, 0, True),  # merely connected
        "idle-bonded": NodeEpochFacts(True, False, 0, True, 2.0),  # nothing answered this epoch
        "unmeasured": NodeEpochFacts(True, False, 1000, True, None),
        "unbonded-worker": NodeEpochFacts(False, False, 5000, True, 2.0),
        "cheater": NodeEpochFacts(True, True, 9000, True, 5.0),
        "gone": NodeEpochFacts(True, False, 2000, False, 2.0),
        "bogus-speed": NodeEpochFacts(True, False, 2000, True, float("inf")),
    }
    assert availability_weights(facts) == {"fast": 3.0, "slow": 1.0}


# --- bonds on the chain --------------------------------------------------------------------------


def test_bond_then_unbond_round_trip_on_chain(payments: Payments, clock: Clock) -> None:
    operator = Keypair()
    node_id = str(operator.pubkey())
    payments.airdrop(node_id, 25 * TOKEN)
    post(payments, operator, 12)
    status = payments.bonds.status(node_id)
    assert (status.held, status.state, status.bonded) == (12 * TOKEN, "bonded", True)
    assert status.last_signature and status.last_state == "landed"
    assert balance(payments, operator) == 13 * TOKEN
    assert payments.chain.bond_vault_balance() == 12 * TOKEN
    assert payments.bonds.bonded(node_id)
    assert_ledger_ok(payments)

    leaving = payments.bonds.request_unbond(node_id, quarantined=False)
    assert leaving.state == "unbonding" and not payments.bonds.bonded(node_id)
    assert leaving.release_after == clock.now + 100
    assert payments.bonds.release(node_id) is None, "not before the cooldown"
    clock.now += 100
    assert payments.bonds.release(node_id) is not None
    returned = payments.bonds.status(node_id)
    assert (returned.held, returned.returned, returned.state) == (0, 12 * TOKEN, "returned")
    assert returned.last_state == "landed"
    assert balance(payments, operator) == 25 * TOKEN
    assert payments.chain.bond_vault_balance() == 0
    assert_ledger_ok(payments)


def test_bonds_are_refused_when_short_forged_or_reused(payments: Payments) -> None:
    operator, thief = Keypair(), Keypair()
    node_id = str(operator.pubkey())
    with pytest.raises(InsufficientBalance, match="airdrop"):
        post(payments, operator, 5)
    payments.airdrop(node_id, 20 * TOKEN)
    message = payments.bonds.bond_message(node_id, 5 * TOKEN)
    with pytest.raises(PaymentError, match="bond refused"):  # claims more than it moves
        payments.bonds.post_bond(node_id, signed_deposit(message, operator), 6 * TOKEN)
    payments.airdrop(str(thief.pubkey()), 5 * TOKEN)
    theirs = payments.bonds.bond_message(str(thief.pubkey()), 5 * TOKEN)
    with pytest.raises(PaymentError, match="bond refused"):  # another key's bond as ours
        payments.bonds.post_bond(node_id, signed_deposit(theirs, thief), 5 * TOKEN)
    signed = signed_deposit(message, operator)
    payments.bonds.post_bond(node_id, signed, 5 * TOKEN)
    with pytest.raises(PaymentError, match="already used"):
        payments.bonds.post_bond(node_id, signed, 5 * TOKEN)
    status = payments.bonds.status(node_id)
    assert status.held == 5 * TOKEN and status.state == "below-minimum" and not status.bonded
    with pytest.raises(PaymentError, match="quarantined"):
        payments.bonds.request_unbond(node_id, quarantined=True)
    assert_ledger_ok(payments)


def test_slash_pays_cheated_creators_and_the_treasury(payments: Payments) -> None:
    cheater, alice, bob = Keypair(), Keypair(), Keypair()
    node_id = str(cheater.pubkey())
    payments.airdrop(node_id, 40 * TOKEN)
    post(payments, cheater, 40)
    creators = {str(alice.pubkey()): 3, str(bob.pubkey()): 1}
    slash = payments.bonds.slash(node_id, event_id=7, rejected=creators, reason="quarantined")
    assert slash is not None and slash.amount == 20 * TOKEN
    assert balance(payments, alice) == 12 * TOKEN and balance(payments, bob) == 4 * TOKEN
    assert payments.chain.treasury_vault_balance() == 4 * TOKEN
    assert payments.chain.bond_vault_balance() == 20 * TOKEN
    assert payments.bonds.status(node_id).held == 20 * TOKEN
    assert payments.bonds.slash(node_id, 7, creators, "again") is None, "once per quarantine"
    assert_ledger_ok(payments)


def test_ledger_check_catches_a_bond_vault_that_disagrees(payments: Payments) -> None:
    operator = Keypair()
    payments.airdrop(str(operator.pubkey()), 10 * TOKEN)
    post(payments, operator, 10)
    # Someone moves tokens into the vault behind the ledger's back: a real transfer.
    outsider = Keypair()
    payments.airdrop(str(outsider.pubkey()), TOKEN)
    message = payments.chain.build_bond(outsider.pubkey(), TOKEN, memo="fp:outside")
    tx = signed_deposit(message, outsider)
    from coordinator.chain import PreparedTx

    assert payments.chain.send(PreparedTx("x", tx, "outside")) == "landed"
    report = payments.check()
    assert not report.ok
    assert any(line.startswith("MISMATCH bonds:") for line in report.lines)


def test_bond_and_escrow_live_apart(payments: Payments) -> None:
    creator, operator = Keypair(), Keypair()
    payments.grant(str(creator.pubkey()))
    message = payments.deposit_message(str(creator.pubkey()), 3 * TOKEN)
    payments.open_escrow("job-1", str(creator.pubkey()), signed_deposit(message, creator),
                         3 * TOKEN)
    payments.airdrop(str(operator.pubkey()), 10 * TOKEN)
    post(payments, operator, 10)
    assert payments.chain.escrow_balance() == 3 * TOKEN
    assert payments.chain.bond_vault_balance() == 10 * TOKEN
    assert_ledger_ok(payments)


def test_bonds_over_the_rpc_backend(engine: Engine, clock: Clock) -> None:
    treasury = Keypair()
    with TestRpcServer() as server:
        server.svm.airdrop(treasury.pubkey(), 100 * 10**9)
        chain = RpcChain.create_mint(server.url, treasury, poll_interval_s=0.01)
        try:
            payments = Payments(engine, chain, clock=clock,
                                bonds=BondPolicy(unbond_cooldown_seconds=0))
            operator = Keypair()
            payments.airdrop(str(operator.pubkey()), 10 * TOKEN)
            post(payments, operator, 10)
            assert chain.bond_vault_balance() == 10 * TOKEN
            payments.bonds.request_unbond(str(operator.pubkey()), quarantined=False)
            assert payments.bonds.release(str(operator.pubkey())) is not None
            assert chain.token_balance(operator.pubkey()) == 10 * TOKEN
            assert_ledger_ok(payments)
        finally:
            chain.close()


# --- the rules applied to the farm's real tables -----------------------------------------------

SCHEDULING = SchedulingPolicy(lease_seconds=10, max_attempts=3, max_failures_per_node=2)


def add_job(store: FarmStore, job_id: str, chunks: list[list[int]], creator: str = "",
            queued_at: float = 0.0) -> None:
    if store.get_scene("scene") is None:
        store.save_scene(SceneRecord(scene_id="scene", main_file="a.blend", info_json="{}",
                                     created_at=0.0))
    store.create_job(JobRecord(job_id=job_id, scene_id="scene", frames_spec="", creator=creator,
                               settings_json="{}", created_at=0.0, updated_at=0.0), chunks,
                     queued_at)


def complete(store: FarmStore, node: str, task: TaskRecord) -> None:
    assert task.lease_id
    numbers = list(range(task.first_frame, task.last_frame + 1))
    outputs = [FrameOutputRecord(frame=n, sha256=f"{n:064x}", size=1, extension="png",
                                 render_seconds=1.0) for n in numbers]
    store.complete_task(task.lease_id, node, outputs, 1.0, frozenset(numbers))


def bounded_lease(store: FarmStore, node: str) -> TaskRecord | None:
    limits = lease_limits(POLICY, NodeStanding(), bonded=False)
    return store.lease_next_task(node, 1.0, max_leases=limits.max_leases,
                                 max_frames_per_job=limits.max_frames_per_job)


def test_a_new_identity_holds_one_lease_and_a_few_frames_per_job(engine: Engine) -> None:
    store = FarmStore(engine, SCHEDULING)
    add_job(store, "big", [[n] for n in range(1, 21)])
    add_job(store, "other", [[1]], queued_at=0.5)  # queued after the big job
    first = bounded_lease(store, "fresh")
    assert first is not None and first.job_id == "big"
    assert bounded_lease(store, "fresh") is None, "one lease in flight"
    taken = [first]
    while True:  # deliver and ask again, as a node would
        complete(store, "fresh", taken[-1])
        task = bounded_lease(store, "fresh")
        if task is None or task.job_id != "big":
            break
        taken.append(task)
    assert len(taken) == POLICY.new_node_frames_per_job, "frames of one job are bounded"
    assert task is not None and task.job_id == "other", "other jobs still get the node"
    # Without limits (bonded, with a record) the same node goes on with the big job.
    complete(store, "fresh", task)
    more = store.lease_next_task("fresh", 1.0)
    assert more is not None and more.job_id == "big"
    assert store.lease_next_task("fresh", 1.0) is not None, "and may hold several leases"


def test_a_chunk_larger_than_the_limit_is_not_stuck(engine: Engine) -> None:
    store = FarmStore(engine, SCHEDULING)
    add_job(store, "chunky", [list(range(1, 7)), list(range(7, 13))])
    first = bounded_lease(store, "fresh")
    assert first is not None and first.last_frame - first.first_frame + 1 == 6
    complete(store, "fresh", first)
    assert bounded_lease(store, "fresh") is None, "but one such chunk is all it gets"


def test_the_keeper_slashes_a_quarantined_cheater_for_its_creators(
        engine: Engine, payments: Payments) -> None:
    store, proof = FarmStore(engine, SCHEDULING), ProofStore(engine, SCHEDULING)
    cheater, alice, bob = Keypair(), Keypair(), Keypair()
    node_id = str(cheater.pubkey())
    payments.airdrop(node_id, 10 * TOKEN)
    post(payments, cheater, 10)
    add_job(store, "a", [[1]], creator=str(alice.pubkey()))
    add_job(store, "b", [[1]], creator=str(bob.pubkey()))
    keeper = BondKeeper(store, proof, payments.bonds)
    rejected = VerificationResult(passed=False, reason="blank", mode="exact", pixel_sha256="",
                                  details={})
    for now in (2.0, 3.0):
        task = store.lease_next_task(node_id, now)
        assert task is not None
        complete(store, node_id, task)
        check = proof.lease_verification("v1", now, lease_seconds=10)
        assert check is not None
        proof.finish_verification(check.verification_id, "v1", rejected, now)
        keeper.sweep()
        if now == 2.0:
            assert payments.bonds.status(node_id).slashed == 0, "one failure is no proof"
    assert proof.standing(node_id).quarantined
    status = payments.bonds.status(node_id)
    assert status.slashed == 5 * TOKEN and status.held == 5 * TOKEN
    assert balance(payments, alice) == 2 * TOKEN and balance(payments, bob) == 2 * TOKEN
    assert payments.chain.treasury_vault_balance() == TOKEN
    keeper.sweep()
    assert payments.bonds.status(node_id).slashed == 5 * TOKEN, "once per quarantine"
    with pytest.raises(PaymentError, match="quarantined"):
        payments.bonds.request_unbond(node_id, quarantined=True)
    assert_ledger_ok(payments)


def test_a_failure_found_while_quarantined_does_not_slash_again(
        engine: Engine, payments: Payments) -> None:
    """Frames delivered before the quarantine are verified after it: their failures belong
    to the same quarantine, which slashes once."""
    store, proof = FarmStore(engine, SCHEDULING), ProofStore(engine, SCHEDULING)
    cheater, creator = Keypair(), Keypair()
    node_id = str(cheater.pubkey())
    payments.airdrop(node_id, 10 * TOKEN)
    post(payments, cheater, 10)
    for job in ("a", "b", "c"):
        add_job(store, job, [[1]], creator=str(creator.pubkey()))
    for now in (1.0, 2.0, 3.0):  # all three delivered before any check
        task = store.lease_next_task(node_id, now)
        assert task is not None
        complete(store, node_id, task)
    keeper = BondKeeper(store, proof, payments.bonds)
    rejected = VerificationResult(passed=False, reason="blank", mode="exact", pixel_sha256="",
                                  details={})
    for now in (4.0, 5.0, 6.0):
        check = proof.lease_verification("v1", now, lease_seconds=10)
        assert check is not None
        proof.finish_verification(check.verification_id, "v1", rejected, now)
        keeper.sweep()
    assert proof.standing(node_id).quarantined
    status = payments.bonds.status(node_id)
    assert status.slashed == 5 * TOKEN and status.held == 5 * TOKEN, "once per quarantine"
    assert len(payments.bonds.slashes(node_id)) == 1
    assert_ledger_ok(payments)


def test_the_keeper_returns_a_bond_only_without_work_in_flight(
        engine: Engine, payments: Payments, clock: Clock) -> None:
    store, proof = FarmStore(engine, SCHEDULING), ProofStore(engine, SCHEDULING)
    operator = Keypair()
    node_id = str(operator.pubkey())
    payments.airdrop(node_id, 10 * TOKEN)
    post(payments, operator, 10)
    add_job(store, "job", [[1]])
    task = store.lease_next_task(node_id, 1.0)
    assert task is not None
    payments.bonds.request_unbond(node_id, quarantined=False)
    clock.now += POLICY.unbond_cooldown_seconds
    keeper = BondKeeper(store, proof, payments.bonds)
    keeper.sweep()
    assert busy_reason(store, node_id) == "1 lease(s) in flight"
    assert payments.bonds.status(node_id).state == "unbonding"
    complete(store, node_id, task)
    keeper.sweep()
    assert busy_reason(store, node_id) == "1 frame(s) still being verified"
    assert payments.bonds.status(node_id).state == "unbonding"
    check = proof.lease_verification("v1", 2.0, lease_seconds=10)
    assert check is not None
    proof.finish_verification(check.verification_id, "v1", VerificationResult(
        passed=True, reason="ok", mode="exact", pixel_sha256="", details={}), 2.0)
    keeper.sweep()
    assert payments.bonds.status(node_id).state == "returned"
    assert balance(payments, operator) == 10 * TOKEN
    assert_ledger_ok(payments)

"""The verification queue's rules on a real SQLite store: fair order, sized and renewed
leases, stuck checks escalated, checks of cancelled jobs dropped."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import pytest

from coordinator.domain.states import TaskState
from coordinator.storage.database import open_database
from coordinator.storage.models import JobRecord, SceneRecord
from coordinator.storage.proof import ProofStore, VerificationGone, VerificationResult
from coordinator.storage.quarantine import VERIFICATION, Quarantine
from coordinator.storage.store import FarmStore, FrameOutputRecord, SchedulingPolicy
from coordinator.storage.verification_queue import (
    LEASE_CAP_SECONDS,
    LEASE_COST_FACTOR,
    LEASE_FLOOR_SECONDS,
    MAX_CHECK_FAILURES,
    MAX_CHECK_SECONDS,
    Candidate,
    fair_order,
    lease_seconds_for,
)

POLICY = SchedulingPolicy(lease_seconds=10, max_attempts=3, max_failures_per_node=2)
PASS = VerificationResult(passed=True, reason="all 3 tiles passed", mode="exact",
                          pixel_sha256="", details={"render_seconds": 200.0})


# ---------------------------------------------------------------- the pure rules

def test_fair_order_serves_the_least_recently_served_creator_then_job_then_oldest() -> None:
    a1 = Candidate("a1", "alice", oldest=1.0)
    a2 = Candidate("a2", "alice", oldest=2.0)
    b1 = Candidate("b1", "bob", oldest=5.0)
    c1 = Candidate("c1", "carol", oldest=9.0)
    # Nobody served yet: oldest first.
    assert fair_order([c1, b1, a2, a1], {}, {}) == [a1, a2, b1, c1]
    # Alice was just served (job a1): Bob and Carol, never served, go first; then Alice's
    # other job a2 before a1 again.
    served_creator = {"alice": 10.0}
    served_job = {"a1": 10.0}
    assert fair_order([a1, a2, b1, c1], served_creator, served_job) == [b1, c1, a2, a1]
    # Everyone served: the creator served longest ago first.
    assert fair_order([a1, b1, c1], {"alice": 12.0, "bob": 11.0, "carol": 13.0}, {}) == [
        b1, a1, c1]


def test_a_lease_is_sized_from_the_measured_cost_within_floor_and_cap() -> None:
    assert lease_seconds_for(None, 1.0) == LEASE_FLOOR_SECONDS
    assert lease_seconds_for(None, 100.0) == LEASE_COST_FACTOR * 100.0
    assert lease_seconds_for(200.0, 1.0) == LEASE_COST_FACTOR * 200.0, "measured wins"
    assert lease_seconds_for(None, 1e9) == LEASE_CAP_SECONDS
    assert lease_seconds_for(None, -5.0) == LEASE_FLOOR_SECONDS


# ---------------------------------------------------------------- the store

@pytest.fixture
def stores(db_url: str) -> Iterator[tuple[FarmStore, ProofStore]]:
    engine = open_database(db_url)
    yield FarmStore(engine, POLICY), ProofStore(engine, POLICY)
    engine.dispose()


def add_job(store: FarmStore, job_id: str, creator: str, frames: int, at: float) -> None:
    if store.get_scene("scene") is None:
        store.save_scene(SceneRecord(scene_id="scene", main_file="a.blend", info_json="{}",
                                     created_at=0.0))
    store.create_job(JobRecord(job_id=job_id, scene_id="scene", frames_spec="",
                               settings_json="{}", created_at=at, updated_at=at,
                               creator=creator),
                     [[n] for n in range(1, frames + 1)], at)


def deliver_all(store: FarmStore, node: str, now: float, render_seconds: float = 1.0) -> None:
    """The node renders every queued task, one frame each, a moment apart (so checks are
    created in submission order)."""
    while (task := store.lease_next_task(node, now=now)) is not None:
        assert task.lease_id
        store.complete_task(task.lease_id, node, [FrameOutputRecord(
            frame=task.first_frame, sha256=hashlib.sha256(task.task_id.encode()).hexdigest(),
            size=1, extension="png", render_seconds=render_seconds)], now,
            frozenset({task.first_frame}))
        now += 0.01


def test_a_backlog_of_one_job_does_not_hold_another_creators_job(stores):
    store, proof = stores
    add_job(store, "slow", "alice", frames=4, at=0.0)
    deliver_all(store, "node", now=1.0)
    add_job(store, "small", "bob", frames=2, at=2.0)
    deliver_all(store, "node", now=3.0)
    order = []
    while (check := proof.lease_verification("v", now=4.0 + len(order))) is not None:
        order.append(check.job_id)
    # Oldest first would be slow x4 then small x2; fair order alternates creators.
    assert order == ["slow", "small", "slow", "small", "slow", "slow"]


def test_two_verifiers_never_get_the_same_check(stores):
    store, proof = stores
    add_job(store, "job", "alice", frames=3, at=0.0)
    deliver_all(store, "node", now=1.0)
    taken = [proof.lease_verification(f"v{n}", now=2.0) for n in range(4)]
    ids = [c.verification_id for c in taken if c is not None]
    assert len(ids) == 3 == len(set(ids)) and taken[3] is None


def test_a_check_is_leased_with_its_job_scene_and_frame(stores):
    store, proof = stores
    add_job(store, "job", "alice", frames=1, at=0.0)
    deliver_all(store, "node", now=1.0, render_seconds=3.0)
    leased = proof.lease_check("v", now=2.0, lease_seconds=30.0)
    assert leased is not None
    check, job, frame = leased
    assert (check.state, check.verifier_id, check.lease_expires_at) == ("leased", "v", 32.0)
    assert job is not None and (job.creator, job.scene_id, job.main_file) == \
        ("alice", "scene", "a.blend")
    assert frame is not None and (frame.job_id, frame.frame, frame.render_seconds) == \
        ("job", 1, 3.0)
    assert proof.lease_check("w", now=2.0) is None, "the only check is leased"


def test_a_sized_lease_is_renewed_by_the_heartbeat_until_the_job_is_cancelled(stores):
    store, proof = stores
    add_job(store, "job", "alice", frames=3, at=0.0)
    deliver_all(store, "node", now=1.0, render_seconds=100.0)
    check = proof.lease_verification("v", now=2.0)
    assert check is not None
    assert check.lease_expires_at == pytest.approx(2.0 + LEASE_COST_FACTOR * 100.0)
    renewal = proof.extend_verification(check.verification_id, "v", now=250.0)
    assert renewal.keep and renewal.expires_at == pytest.approx(250.0 + LEASE_COST_FACTOR * 100)
    assert proof.requeue_expired_verifications(now=400.0) == 0, "renewed: still live"
    assert not proof.extend_verification(check.verification_id, "other", now=251.0).keep
    # The verifier finished: the next check of the job is sized from what it measured.
    proof.finish_verification(check.verification_id, "v", PASS, now=300.0)
    second = proof.lease_verification("v", now=301.0)
    assert second is not None
    assert second.lease_expires_at == pytest.approx(301.0 + LEASE_COST_FACTOR * 200.0)
    store.cancel_job("job", now=302.0)
    stop = proof.extend_verification(second.verification_id, "v", now=303.0)
    assert not stop.keep and "cancelled" in stop.reason
    assert proof.lease_verification("v", now=304.0) is None, "a cancelled job's check waits"


def test_checks_of_a_cancelled_job_are_dropped_and_its_frames_not_charged(stores):
    store, proof = stores
    add_job(store, "job", "alice", frames=3, at=0.0)
    deliver_all(store, "node", now=1.0)
    approved = proof.lease_verification("v", now=2.0)
    leased = proof.lease_verification("v", now=2.0)
    assert approved is not None and leased is not None
    proof.finish_verification(approved.verification_id, "v", PASS, now=3.0)
    store.cancel_job("job", now=4.0)
    assert proof.drop_cancelled_checks(now=5.0) == ["job"]
    assert proof.drop_cancelled_checks(now=6.0) == [], "once"
    states = {c.frame: c.state for c in proof.verifications_of("job")}
    assert sorted(states.values()) == ["cancelled", "cancelled", "done"]
    counts = store.frame_counts(["job"])["job"]
    assert counts.get(TaskState.VERIFYING, 0) == 0, "nothing waits: the job can settle"
    assert counts[TaskState.DONE] == 1 and counts[TaskState.CANCELLED] == 2
    # Settlement charges approved frames only (store.uncharged_frames): the other two never.
    verdicts = {r.frame: (r.verdict, r.verification) for r in store.list_frame_results("job")}
    assert verdicts.pop(approved.frame)[0] == "approved"
    assert set(verdicts.values()) == {("pending", "not verified: job cancelled (not charged)")}
    with pytest.raises(VerificationGone):
        proof.finish_verification(leased.verification_id, "v", PASS, now=7.0)


def test_a_check_that_keeps_failing_is_held_with_its_reason_not_retried_forever(stores):
    store, proof = stores
    add_job(store, "job", "alice", frames=1, at=0.0)
    deliver_all(store, "node", now=1.0)
    now = 2.0
    for attempt in range(MAX_CHECK_FAILURES):
        check = proof.lease_verification("v", now=now)
        assert check is not None, f"attempt {attempt + 1} should be leased"
        if attempt == 0:
            assert proof.release_verification(check.verification_id, "v",
                                              "TransferError: blob store away", now)
        else:
            assert proof.requeue_expired_verifications(now=math.inf) == 1
        now += 1
    assert proof.lease_verification("v", now=now) is None, "held, not leased again"
    standing = proof.queue_standing("job")
    assert standing.stuck == 1 and "lapsed" in standing.stuck_reason
    held = {h.key: h.reason for h in Quarantine(proof.engine).held()
            if h.kind == VERIFICATION}
    assert check.verification_id in held and "stuck after 3 failures" in held[
        check.verification_id]
    # The operator releases it (doctor --release): leased again with a clean slate.
    assert proof.requeue_held_verification(check.verification_id)
    again = proof.lease_verification("v", now=now)
    assert again is not None and again.verification_id == check.verification_id
    assert proof.queue_standing("job").stuck == 0


def test_queue_standing_says_where_a_job_waits(stores):
    store, proof = stores
    add_job(store, "big", "alice", frames=3, at=0.0)
    deliver_all(store, "node", now=1.0)
    add_job(store, "small", "bob", frames=1, at=2.0)
    deliver_all(store, "node", now=3.0)
    assert proof.queue_standing("small").position == 2, "alice's older check goes first"
    proof.lease_verification("v", now=4.0)  # alice's
    standing = proof.queue_standing("small")
    assert (standing.waiting, standing.position, standing.verifiers_busy) == (1, 1, 1)
    big = proof.queue_standing("big")
    assert (big.waiting, big.in_progress, big.position) == (2, 1, 2)


def test_renewals_stop_at_the_longest_a_check_may_take(stores):
    """A verifier that renews forever (hung, or a peer hoarding checks) is stopped."""
    store, proof = stores
    add_job(store, "job", "alice", frames=1, at=0.0)
    deliver_all(store, "node", now=1.0)
    check = proof.lease_verification("v", now=2.0)
    assert check is not None
    now = 2.0
    while now < 2.0 + MAX_CHECK_SECONDS:
        now += LEASE_FLOOR_SECONDS / 2
        assert proof.extend_verification(check.verification_id, "v", now).keep
    stop = proof.extend_verification(check.verification_id, "v", now + LEASE_FLOOR_SECONDS)
    assert not stop.keep and "more than 2 h" in stop.reason
    again = proof.lease_verification("w", now=now + LEASE_FLOOR_SECONDS)
    assert again is not None and again.verification_id == check.verification_id

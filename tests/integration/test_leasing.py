"""The node hot path (coordinator/storage/leasing.py) on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from coordinator.domain.errors import Refused
from coordinator.payments.bonds import BondPolicy
from coordinator.storage.database import open_database, sqlite_url
from coordinator.storage.leasing import Grant, JobFacts, LeasedTask, LeaseHotPath, LeaseResult
from coordinator.storage.models import (
    FrameLogRecord,
    FrameResultRecord,
    JobRecord,
    NodeStandingRecord,
    SceneRecord,
    VerificationRecord,
)
from coordinator.storage.payment_models import BondRecord
from coordinator.storage.store import FarmStore, FrameOutputRecord, LeaseLost, SchedulingPolicy

POLICY = SchedulingPolicy(lease_seconds=10, max_attempts=3, max_failures_per_node=2)
NODES = [f"node-{i}" for i in range(8)]


@pytest.fixture(params=["sqlite", "postgresql"])
def leasing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LeaseHotPath]:
    if request.param == "sqlite":
        engine = open_database(sqlite_url(tmp_path))
    else:  # a database of this test's own (tests/conftest.py)
        engine = open_database(request.getfixturevalue("migrated_postgres_url"))
    store = FarmStore(engine, POLICY)
    with Session(engine) as session:  # trusted, bonded nodes: no probation limits
        for node in NODES:
            session.add(NodeStandingRecord(node_id=node, score=0.99, consecutive_verified=100,
                                           verified=100, delivered=100))
            session.add(BondRecord(node_id=node, held=10, posted=10, created_at=0.0,
                                   updated_at=0.0))
        session.commit()
    for node in NODES:
        store.register_node(node, node, "{}", 0.0)
    yield LeaseHotPath(store, 10, BondPolicy(min_bond_tokens=0))
    engine.dispose()


def add_job(leasing: LeaseHotPath, job_id: str, frames: int, *, creator: str = "",
            scene: str = "scene", now: float = 0.0) -> None:
    store = leasing.store
    if store.get_scene(scene) is None:
        store.save_scene(SceneRecord(scene_id=scene, main_file=f"{scene}.blend",
                                     info_json="{}", created_at=now))
    store.create_job(JobRecord(job_id=job_id, scene_id=scene, creator=creator, frames_spec="",
                               settings_json='{"samples": 3}', created_at=now, updated_at=now),
                     [[n] for n in range(1, frames + 1)], now)


def output(frame: int, sha: str = "a" * 64) -> FrameOutputRecord:
    return FrameOutputRecord(frame=frame, sha256=sha, size=1, extension="png",
                             render_seconds=2.0)


def lease_one(leasing: LeaseHotPath, node: str, now: float, **options: Any) -> Grant | None:
    grants, _ = leasing.lease(node, now, **options)
    assert len(grants) <= 1
    return grants[0] if grants else None


def test_lease_heartbeat_complete_in_a_few_statements(leasing: LeaseHotPath):
    add_job(leasing, "job", 2)
    grants, gate = leasing.lease("node-0", now=1.0)
    grant = grants[0]
    assert not gate.limits.bounded
    assert (grant.job_id, grant.first_frame, grant.last_frame) == ("job", 1, 1)
    assert grant.job.main_file == "scene.blend" and grant.expires_at == 11.0
    assert leasing.extend(grant.lease_id, "node-0", now=5.0) == 15.0
    with pytest.raises(LeaseLost, match="another node"):
        leasing.extend(grant.lease_id, "node-1", now=5.0)
    with pytest.raises(LeaseLost, match="another node"):
        leasing.complete(grant.lease_id, "node-1", [output(1)], 6.0, lambda gate: frozenset())
    with pytest.raises(ValueError, match="covers frames"):
        leasing.complete(grant.lease_id, "node-0", [output(2)], 6.0, lambda gate: frozenset())
    task, recorded, tiles = leasing.complete(grant.lease_id, "node-0", [output(1)], 6.0,
                                             lambda gate: frozenset({1}))
    assert recorded and tiles == {1} and task.job_id == "job"
    again = leasing.complete(grant.lease_id, "node-0", [output(1)], 7.0,
                             lambda gate: frozenset())
    assert again[1] is False, "a retried completion records nothing"
    with pytest.raises(LeaseLost, match="verifying"):
        leasing.extend(grant.lease_id, "node-0", now=8.0)
    with Session(leasing.engine) as session:
        result = session.get(FrameResultRecord, ("job", 1))
        assert result is not None and result.node_id == "node-0" and result.verdict == "pending"
        checks = session.exec(select(VerificationRecord)).all()
        assert [(c.frame, c.render_tiles, c.state) for c in checks] == [(1, True, "queued")]
        standing = session.get(NodeStandingRecord, "node-0")
        assert standing is not None and standing.leases_completed == 1
    assert leasing.store.list_tasks("job")[0].state == "verifying"


def test_a_frame_image_over_2_gib_is_recorded_with_its_size(leasing: LeaseHotPath):
    """Blobs may reach 8 GiB (a 16K multilayer EXR does): PostgreSQL refused the completion
    of one over 2 GiB while blob_size was an INTEGER column."""
    add_job(leasing, "job", 1)
    grant = lease_one(leasing, "node-0", now=1.0)
    assert grant is not None
    size = 3 * 1024**3
    image = FrameOutputRecord(frame=1, sha256="b" * 64, size=size, extension="exr",
                              render_seconds=2.0)
    _, recorded, _ = leasing.complete(grant.lease_id, "node-0", [image], 2.0,
                                      lambda gate: frozenset())
    assert recorded
    with Session(leasing.engine) as session:
        result = session.get(FrameResultRecord, ("job", 1))
        assert result is not None and result.blob_size == size


def test_a_small_job_is_served_next_to_a_big_one(leasing: LeaseHotPath):
    """Fair share: a second creator's job alternates with the first one's from the head."""
    add_job(leasing, "big", 200, creator="alice", now=1.0)
    add_job(leasing, "small", 3, creator="bob", now=2.0)
    jobs = []
    for index in range(6):
        grant = lease_one(leasing, NODES[index], now=3.0)
        assert grant is not None
        jobs.append(grant.job_id)
    assert jobs == ["big", "small", "big", "small", "big", "small"]


def test_a_creators_own_jobs_stay_in_submission_order(leasing: LeaseHotPath):
    add_job(leasing, "first", 3, creator="alice", now=1.0)
    add_job(leasing, "second", 1, creator="alice", now=2.0)
    jobs = [lease_one(leasing, node, now=3.0) for node in NODES[:4]]
    assert [g.job_id for g in jobs if g] == ["first", "first", "first", "second"]


def test_a_node_gets_a_task_of_a_scene_it_holds_first(leasing: LeaseHotPath):
    add_job(leasing, "a", 4, creator="alice", scene="scene-a", now=1.0)
    add_job(leasing, "b", 4, creator="bob", scene="scene-b", now=2.0)
    grant = lease_one(leasing, "node-0", now=3.0, cached_scenes=["scene-b"])
    assert grant is not None and grant.job.scene_id == "scene-b"
    grant = lease_one(leasing, "node-1", now=3.0)
    assert grant is not None and grant.job.scene_id == "scene-a", "no cache: queue order"


def test_several_tasks_in_one_call_each_its_own_lease(leasing: LeaseHotPath):
    add_job(leasing, "a", 3, creator="alice", now=1.0)
    add_job(leasing, "b", 3, creator="bob", now=2.0)
    grants, _ = leasing.lease("node-0", now=3.0, max_tasks=4)
    assert [(g.job_id, g.first_frame) for g in grants] == [
        ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert len({g.lease_id for g in grants}) == 4
    for grant in grants:
        leasing.complete(grant.lease_id, "node-0", [output(grant.first_frame)], 4.0,
                         lambda gate: frozenset())
    rest, _ = leasing.lease("node-1", now=5.0, max_tasks=16)
    assert sorted((g.job_id, g.first_frame) for g in rest) == [("a", 3), ("b", 3)]


def test_a_quarantined_node_is_not_leased_anything(leasing: LeaseHotPath):
    add_job(leasing, "job", 1)
    with Session(leasing.engine) as session:
        record = session.get(NodeStandingRecord, "node-0")
        assert record is not None
        record.quarantined = True
        session.add(record)
        session.commit()
    grants, gate = leasing.lease("node-0", now=1.0)
    assert grants == [] and gate.quarantined


def test_an_unbonded_node_keeps_its_probation_limits(leasing: LeaseHotPath):
    """One lease in flight for a new identity (bonds.py)."""
    add_job(leasing, "job", 4)
    leasing.store.register_node("fresh", "fresh", "{}", 0.0)
    first, gate = leasing.lease("fresh", now=1.0, max_tasks=4)
    assert len(first) == 1 and gate.limits.bounded and gate.limits.max_leases == 1
    assert leasing.lease("fresh", now=1.0)[0] == []


def bounded(leasing: LeaseHotPath, leases: int, frames_per_job: int) -> LeaseHotPath:
    """The same database, a policy whose new identities hold `leases` leases and
    `frames_per_job` frames of any one job."""
    return LeaseHotPath(leasing.store, 10, BondPolicy(
        min_bond_tokens=0, new_node_leases=leases, new_node_frames_per_job=frames_per_job))


def deliver(leasing: LeaseHotPath, node: str, grants: list[Grant]) -> None:
    for grant in grants:
        frames = range(grant.first_frame, grant.last_frame + 1)
        leasing.complete(grant.lease_id, node, [output(n) for n in frames], 2.0,
                         lambda gate: frozenset())


def test_a_new_identity_is_held_to_its_share_of_each_job(leasing: LeaseHotPath):
    """The bounds of bonds.py in the lease's own transaction: its leases in flight, and its
    frames of a job, found past a window of that job's tasks."""
    add_job(leasing, "big", 40)  # the window (16 tasks) is all of it
    add_job(leasing, "other", 1, now=0.5)  # the same creator: queued behind it
    fresh = bounded(leasing, leases=3, frames_per_job=4)
    leasing.store.register_node("fresh", "fresh", "{}", 0.0)
    first, gate = fresh.lease("fresh", now=1.0, max_tasks=8)
    assert gate.limits.max_leases == 3
    assert [g.job_id for g in first] == ["big"] * 3, "three leases in flight"
    assert fresh.lease("fresh", now=1.0, max_tasks=8)[0] == []
    deliver(fresh, "fresh", first)
    fourth, _ = fresh.lease("fresh", now=2.0, max_tasks=8)
    assert [g.job_id for g in fourth] == ["big"], "four frames of the big job, no more"
    deliver(fresh, "fresh", fourth)
    after, _ = fresh.lease("fresh", now=3.0, max_tasks=8)
    assert [g.job_id for g in after] == ["other"], "other jobs still get the node"
    # Bonded, with a record, the same node goes on with the big job, several at a time.
    deliver(fresh, "fresh", after)
    assert [g.job_id for g in leasing.lease("node-0", now=4.0, max_tasks=4)[0]] == ["big"] * 4


def test_a_task_larger_than_a_new_identitys_share_is_not_stuck(leasing: LeaseHotPath):
    leasing.store.save_scene(SceneRecord(scene_id="scene", main_file="scene.blend",
                                         info_json="{}", created_at=0.0))
    leasing.store.create_job(JobRecord(job_id="chunky", scene_id="scene", frames_spec="",
                                       settings_json="{}", created_at=0.0, updated_at=0.0),
                             [list(range(1, 7)), list(range(7, 13))], 0.0)
    fresh = bounded(leasing, leases=2, frames_per_job=4)
    leasing.store.register_node("fresh", "fresh", "{}", 0.0)
    first, _ = fresh.lease("fresh", now=1.0, max_tasks=2)
    assert [(g.first_frame, g.last_frame) for g in first] == [(1, 6)], "one such chunk"
    deliver(fresh, "fresh", first)
    assert fresh.lease("fresh", now=2.0, max_tasks=2)[0] == [], "and only one"


def test_concurrent_leases_never_share_a_task(leasing: LeaseHotPath):
    """Eight threads lease at once (on PostgreSQL: FOR UPDATE SKIP LOCKED); every task goes to
    exactly one of them."""
    add_job(leasing, "job", 40)
    got: list[str] = []
    lock = threading.Lock()

    def lease_all(node: str) -> None:
        while True:
            grants, _ = leasing.lease(node, now=1.0, max_tasks=3)
            if not grants:
                return
            with lock:
                got.extend(grant.task_id for grant in grants)

    threads = [threading.Thread(target=lease_all, args=(node,)) for node in NODES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 40 and len(set(got)) == 40


def batch_prepare(missing: set[str]) -> Any:
    """The servicer's per-lease checks, reduced to "was the image uploaded"."""
    def prepare(result: LeaseResult, task: LeasedTask | None,
                facts: JobFacts | None) -> list[FrameOutputRecord]:
        for record in result.outputs:
            if record.sha256 in missing:
                raise Refused(f"frame {record.frame}: image was not uploaded")
        return list(result.outputs)
    return prepare


def test_a_batch_is_checked_and_answered_lease_by_lease(leasing: LeaseHotPath):
    """One foreign lease, one expired lease, one with a missing image, one with the wrong
    frames: each refused on its own, the two good ones recorded; the same batch again
    records nothing more (nothing counted or queued for checks twice)."""
    add_job(leasing, "job", 5)
    grants, _ = leasing.lease("node-0", now=1.0, max_tasks=5)
    assert len(grants) == 5
    good, late, unseen, wrong, other = grants
    # Every lease but `late` is renewed in one call; then the reaper takes `late` back.
    renewed = leasing.extend_many([good.lease_id, unseen.lease_id, wrong.lease_id,
                                   other.lease_id, "f" * 32], "node-0", now=8.0)
    assert renewed[:4] == [18.0] * 4
    assert isinstance(renewed[4], LeaseLost) and "unknown lease" in str(renewed[4])
    assert [t.task_id for t in leasing.store.requeue_expired(12.0)] == [late.task_id]
    foreign = lease_one(leasing, "node-1", now=12.5)
    assert foreign is not None and foreign.task_id == late.task_id
    leasing.complete(other.lease_id, "node-0", [output(other.first_frame)], 12.5,
                     lambda gate: frozenset())

    def batch() -> list[LeaseResult]:
        def result(grant: Grant, frame: int | None = None, sha: str = "a" * 64) -> LeaseResult:
            frame = grant.first_frame if frame is None else frame
            return LeaseResult(grant.lease_id, [output(frame, sha)], {frame: "log"})
        return [result(good), result(late), result(foreign), result(unseen, sha="b" * 64),
                result(wrong, frame=99), result(other)]

    done = leasing.complete_many("node-0", batch(), 13.0, batch_prepare({"b" * 64}),
                                 lambda gate, frames: frozenset(frames))
    assert [d.lease_id for d in done] == [r.lease_id for r in batch()]
    assert [(d.recorded, type(d.error).__name__) for d in done] == [
        (True, "NoneType"), (False, "LeaseLost"), (False, "LeaseLost"), (False, "Refused"),
        (False, "ValueError"), (False, "NoneType")], "the last one is a retry: recorded before"
    assert "unknown lease" in str(done[1].error)
    assert "another node" in str(done[2].error)
    assert done[0].tiles == {good.first_frame}
    again = leasing.complete_many("node-0", batch(), 14.0, batch_prepare({"b" * 64}),
                                  lambda gate, frames: frozenset(frames))
    assert [d.recorded for d in again] == [False] * 6
    assert again[0].error is None, "a retried completion is accepted, not recorded again"
    states = {t.task_id: t.state for t in leasing.store.list_tasks("job")}
    assert states[good.task_id] == states[other.task_id] == "verifying"
    assert states[late.task_id] == "leased", "node-1 holds it"
    assert states[unseen.task_id] == states[wrong.task_id] == "leased", "still node-0's"
    with Session(leasing.engine) as session:
        results = session.exec(select(FrameResultRecord)).all()
        assert sorted(r.frame for r in results) == sorted([good.first_frame, other.first_frame])
        checks = session.exec(select(VerificationRecord)).all()
        assert sorted(c.frame for c in checks) == sorted([good.first_frame, other.first_frame])
        standing = session.get(NodeStandingRecord, "node-0")
        assert standing is not None and standing.leases_completed == 2
        logs = session.exec(select(FrameLogRecord)).all()
        assert [(log.frame, log.text) for log in logs] == [(good.first_frame, "log")]


def test_renewing_several_leases_reports_each(leasing: LeaseHotPath):
    add_job(leasing, "job", 3)
    mine, _ = leasing.lease("node-0", now=1.0, max_tasks=2)
    theirs = lease_one(leasing, "node-1", now=1.0)
    assert theirs is not None
    leasing.complete(mine[1].lease_id, "node-0", [output(mine[1].first_frame)], 2.0,
                     lambda gate: frozenset())
    found = leasing.extend_many([mine[0].lease_id, theirs.lease_id, mine[1].lease_id],
                                "node-0", now=3.0)
    assert found[0] == 13.0
    assert isinstance(found[1], LeaseLost) and "another node" in str(found[1])
    assert isinstance(found[2], LeaseLost) and "verifying" in str(found[2])
    assert leasing.extend(theirs.lease_id, "node-1", now=4.0) == 14.0, "theirs untouched"


def test_a_lease_reaped_while_its_frames_are_delivered_ends_one_way(leasing: LeaseHotPath):
    """The reaper (on the event loop) and a late completion (on the storage thread) meet on
    one expired lease: either the frames are recorded and the task is being verified, or the
    completion is refused and the task is queued again, never both. On PostgreSQL the reaper
    read the task unlocked and then overwrote the delivered task with 'queued'."""
    add_job(leasing, "job", 1)
    grant = lease_one(leasing, "node-0", now=1.0)
    assert grant is not None
    reaped: list[list[str]] = []

    def reap_meanwhile(_gate: object) -> frozenset[int]:
        # The completion holds the task (locked on PostgreSQL) while the reaper runs.
        reaper = threading.Thread(target=lambda: reaped.append(
            [t.task_id for t in leasing.store.requeue_expired(now=30.0)]))
        reaper.start()
        reaper.join(timeout=2.0)  # blocked on the completion's lock, or done
        return frozenset()

    try:
        _, recorded, _ = leasing.complete(grant.lease_id, "node-0", [output(1)], 30.0,
                                          reap_meanwhile)
    except LeaseLost:
        recorded = False
    deadline = time.monotonic() + 30
    while not reaped and time.monotonic() < deadline:
        time.sleep(0.05)
    (task,) = leasing.store.list_tasks("job")
    with Session(leasing.engine) as session:
        results = session.exec(select(FrameResultRecord)).all()
        checks = session.exec(select(VerificationRecord)).all()
    if recorded:
        assert (task.state, reaped, len(results), len(checks)) == ("verifying", [[]], 1, 1)
    else:
        assert (task.state, reaped, results, checks) == ("queued", [[task.task_id]], [], [])


def test_a_lease_notes_the_node_alive_in_its_own_transaction(leasing: LeaseHotPath):
    add_job(leasing, "job", 1)
    store = leasing.store
    before = store.get_node("node-0")
    assert before is not None and before.last_seen_at == 0.0
    leasing.lease("node-0", now=7.0)
    seen = store.get_node("node-0")
    assert seen is not None and seen.last_seen_at == 0.0, "seen=False writes nothing"
    assert leasing.lease("node-0", now=9.0, seen=True)[0] == [], "the one task is leased"
    seen = store.get_node("node-0")
    assert seen is not None and seen.last_seen_at == 9.0, "noted even with nothing to lease"

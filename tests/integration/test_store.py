"""Scheduling rules in the store, on SQLite and on PostgreSQL (when it runs here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text, update
from sqlmodel import Session, col

from coordinator.domain.states import TaskState
from coordinator.storage.database import open_database, sqlite_url
from coordinator.storage.models import JobRecord, SceneRecord, TaskRecord
from coordinator.storage.store import FarmStore, FrameOutputRecord, LeaseLost, SchedulingPolicy

POLICY = SchedulingPolicy(lease_seconds=10, max_attempts=3, max_failures_per_node=2)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FarmStore]:
    if request.param == "sqlite":
        engine = open_database(sqlite_url(tmp_path))
    else:
        engine = open_database(request.getfixturevalue("migrated_postgres_url"))
    yield FarmStore(engine, POLICY)
    engine.dispose()


def add_job(store: FarmStore, job_id: str, frames: list[list[int]], now: float = 0.0) -> None:
    if store.get_scene("scene") is None:
        store.save_scene(SceneRecord(scene_id="scene", main_file="a.blend", info_json="{}",
                                     created_at=now))
    store.create_job(JobRecord(job_id=job_id, scene_id="scene", frames_spec="",
                               settings_json="{}", created_at=now, updated_at=now), frames, now)


def output(frame: int) -> FrameOutputRecord:
    return FrameOutputRecord(frame=frame, sha256="a" * 64, size=1, extension="png",
                             render_seconds=1.0)


def test_a_task_is_leased_to_one_node_only(store: FarmStore):
    add_job(store, "job", [[1]])
    first = store.lease_next_task("node-a", now=1.0)
    second = store.lease_next_task("node-b", now=1.0)
    assert first is not None and first.node_id == "node-a"
    assert second is None


def test_tasks_are_leased_oldest_job_first_in_frame_order(store: FarmStore):
    add_job(store, "old", [[1], [2]], now=1.0)
    add_job(store, "new", [[1]], now=2.0)
    leased = [store.lease_next_task(f"n{i}", now=3.0) for i in range(3)]
    assert [(t.job_id, t.first_frame) for t in leased if t] == [("old", 1), ("old", 2), ("new", 1)]


def test_an_expired_lease_goes_back_to_the_queue_and_to_another_node(store: FarmStore):
    add_job(store, "job", [[1]])
    task = store.lease_next_task("node-a", now=0.0)
    assert task is not None
    assert store.requeue_expired(now=5.0) == []  # still live
    expired = store.requeue_expired(now=11.0)
    assert [t.task_id for t in expired] == [task.task_id]
    assert store.lease_next_task("node-a", now=12.0) is None, "not back to the node that dropped it"
    again = store.lease_next_task("node-b", now=12.0)
    assert again is not None and again.task_id == task.task_id and again.attempts == 1
    with pytest.raises(LeaseLost):
        store.extend_lease(task.lease_id or "", "node-a", now=12.0)


def test_heartbeats_keep_a_lease_alive(store: FarmStore):
    add_job(store, "job", [[1]])
    task = store.lease_next_task("node-a", now=0.0)
    assert task is not None and task.lease_id
    store.extend_lease(task.lease_id, "node-a", now=8.0)
    assert store.requeue_expired(now=15.0) == []
    assert store.requeue_expired(now=19.0) != []


def test_a_task_failing_too_often_is_given_up(store: FarmStore):
    add_job(store, "job", [[1]])
    for node in ("a", "b", "c"):
        task = store.lease_next_task(node, now=0.0)
        assert task is not None and task.lease_id
        store.fail_task(task.lease_id, node, "Blender crashed", now=0.0)
    assert store.list_tasks("job")[0].state == TaskState.FAILED
    assert store.lease_next_task("d", now=0.0) is None


def test_leases_given_back_by_stopping_nodes_are_not_attempts(store: FarmStore):
    """Three nodes restarting in turn hand the frame back unstarted: it stays queued."""
    add_job(store, "job", [[1]])
    for node in ("a", "b", "c", "d"):
        task = store.lease_next_task(node, now=0.0)
        assert task is not None and task.lease_id
        store.fail_task(task.lease_id, node, "node stopping: not started", now=0.0)
    (task,) = store.list_tasks("job")
    assert (task.state, task.attempts) == (TaskState.QUEUED, 0)
    store.fail_task(store.lease_next_task("e", now=0.0).lease_id, "e", "Blender crashed", now=0.0)
    assert store.list_tasks("job")[0].attempts == 1


def test_a_node_that_keeps_failing_a_job_stops_getting_it(store: FarmStore):
    add_job(store, "job", [[1], [2], [3]])
    for _ in range(2):
        task = store.lease_next_task("flaky", now=0.0)
        assert task is not None and task.lease_id
        store.fail_task(task.lease_id, "flaky", "out of memory", now=0.0)
    assert store.lease_next_task("flaky", now=0.0) is None
    assert store.lease_next_task("good", now=0.0) is not None


def test_completion_records_frames_once_and_is_idempotent(store: FarmStore):
    add_job(store, "job", [[1, 2]])
    task = store.lease_next_task("node", now=0.0)
    assert task is not None and task.lease_id
    with pytest.raises(ValueError, match="covers frames"):
        store.complete_task(task.lease_id, "node", [output(1)], now=1.0)
    assert store.complete_task(task.lease_id, "node", [output(1), output(2)], now=1.0)[1]
    retry = store.complete_task(task.lease_id, "node", [output(1), output(2)], now=2.0)
    assert retry[1] is False, "a retried completion records nothing new"
    assert [r.frame for r in store.list_frame_results("job")] == [1, 2]
    # Delivered frames wait for Proof-of-Render before the task is done.
    assert store.frame_counts(["job"])["job"] == {TaskState.VERIFYING: 2}
    with pytest.raises(LeaseLost):
        store.complete_task(task.lease_id, "intruder", [output(1), output(2)], now=2.0)


def test_cancel_drops_unfinished_work_and_keeps_finished_frames(store: FarmStore):
    add_job(store, "job", [[1], [2]])
    task = store.lease_next_task("node", now=0.0)
    assert task is not None and task.lease_id
    store.complete_task(task.lease_id, "node", [output(1)], now=1.0)
    assert store.cancel_job("job", now=2.0)
    # Delivered work is still verified (and paid for); what was not started is dropped.
    assert store.frame_counts(["job"])["job"] == {TaskState.VERIFYING: 1,
                                                  TaskState.CANCELLED: 1}
    assert store.lease_next_task("node", now=3.0) is None


def test_a_restart_gives_live_leases_a_fresh_grace_period(store: FarmStore):
    add_job(store, "job", [[1]])
    task = store.lease_next_task("node", now=0.0)
    assert task is not None
    assert store.grant_grace(now=100.0) == 1
    assert store.requeue_expired(now=105.0) == []


def _set_task_state(store: FarmStore, job_id: str, first_frame: int, state: TaskState) -> None:
    with Session(store.engine) as session:
        session.execute(update(TaskRecord).where(col(TaskRecord.job_id) == job_id)
                        .where(col(TaskRecord.first_frame) == first_frame).values(state=state))
        session.commit()


def test_only_jobs_with_nothing_in_flight_are_offered_for_settlement(store: FarmStore):
    add_job(store, "queued", [[1]], now=0.0)
    add_job(store, "verifying", [[1], [2]], now=1.0)
    _set_task_state(store, "verifying", 1, TaskState.DONE)
    _set_task_state(store, "verifying", 2, TaskState.VERIFYING)
    add_job(store, "cancelled", [[1], [2]], now=2.0)
    store.cancel_job("cancelled", now=2.0)
    add_job(store, "cancelled-verifying", [[1], [2]], now=3.0)
    _set_task_state(store, "cancelled-verifying", 1, TaskState.VERIFYING)
    store.cancel_job("cancelled-verifying", now=3.0)
    add_job(store, "ended", [[1], [2]], now=4.0)
    _set_task_state(store, "ended", 1, TaskState.DONE)
    _set_task_state(store, "ended", 2, TaskState.FAILED)
    add_job(store, "settled", [[1]], now=5.0)
    _set_task_state(store, "settled", 1, TaskState.DONE)
    store.mark_settled("settled", now=5.0)
    # Jobs still rendering or being verified are not even read: the sweep stays small.
    assert [job.job_id for job in store.jobs_ready_to_settle()] == ["cancelled", "ended"]


def test_a_listing_holds_the_newest_jobs_oldest_first_and_counts_them_all(store: FarmStore):
    for n in range(5):
        add_job(store, f"job-{n}", [[1]], now=float(n))
    with Session(store.engine) as session:
        session.exec(update(JobRecord).where(col(JobRecord.job_id) == "job-4")  # type: ignore
                     .values(creator="someone-else"))
        session.commit()
    jobs, total = store.list_jobs(limit=3)
    assert ([job.job_id for job in jobs], total) == (["job-2", "job-3", "job-4"], 5)
    jobs, total = store.list_jobs(creator="", limit=2)
    assert ([job.job_id for job in jobs], total) == (["job-2", "job-3"], 4)
    jobs, total = store.list_jobs(creator="nobody", limit=2)
    assert (jobs, total) == ([], 0)


@pytest.mark.sqlite_only(reason="reads SQLite's query plan; PostgreSQL's planner picks by "
                         "table statistics")
def test_the_settlement_sweeps_query_uses_the_settled_index(tmp_path: Path):
    """An older database gets the index from the first revision (tests/unit/test_migrations)."""
    engine = open_database(sqlite_url(tmp_path))
    with engine.connect() as connection:
        plan = connection.execute(text(
            "EXPLAIN QUERY PLAN SELECT job_id FROM job WHERE settled = 0")).all()
    engine.dispose()
    assert any("ix_job_settled" in str(row) for row in plan), plan


def test_a_node_reads_a_scene_only_while_its_lease_is_live(store: FarmStore):
    """Live: leased to this node and not expired, even if the reaper has not run yet."""
    add_job(store, "job", [[1], [2]])
    task = store.lease_next_task("node-a", now=0.0)
    assert task is not None and task.lease_id
    assert store.node_may_read("node-a", "scene", now=5.0)
    assert not store.node_may_read("node-b", "scene", now=5.0), "no lease, no read"
    assert not store.node_may_read("node-a", "scene", now=10.5), "expired, not yet reaped"
    store.extend_lease(task.lease_id, "node-a", now=6.0)  # a heartbeat keeps it readable
    assert store.node_may_read("node-a", "scene", now=15.0)
    store.complete_task(task.lease_id, "node-a", [output(1)], now=7.0)
    assert not store.node_may_read("node-a", "scene", now=7.5), "delivered: the lease is over"
    other = store.lease_next_task("node-b", now=8.0)
    assert other is not None and other.lease_id
    store.fail_task(other.lease_id, "node-b", "gave up", now=9.0)
    assert not store.node_may_read("node-b", "scene", now=9.5), "given back: over too"


def test_blob_owners_are_per_key_and_existing_jobs_adopt_their_scenes(store: FarmStore):
    from coordinator.storage.owners import BlobOwners

    owners = BlobOwners(store.engine)
    store.save_scene(SceneRecord(scene_id="m" * 64, main_file="a.blend", info_json="{}",
                                 created_at=0.0), ["m" * 64, "f" * 64])
    for job_id in ("j1", "j2"):  # two jobs of one creator: adopted once
        store.create_job(JobRecord(job_id=job_id, scene_id="m" * 64, creator="alice",
                                   frames_spec="1", settings_json="{}", created_at=0.0,
                                   updated_at=0.0), [[1]], 0.0)
    assert owners.adopt_existing_jobs() == 2
    assert owners.adopt_existing_jobs() == 0
    assert owners.owned("alice", ["m" * 64, "f" * 64, "e" * 64]) == {"m" * 64, "f" * 64}
    owners.add("bob", "e" * 64)
    owners.add("bob", "e" * 64)  # twice is harmless
    assert owners.owns("bob", "e" * 64) and not owners.owns("alice", "e" * 64)
    assert owners.owned("bob", ["m" * 64]) == set()


def test_a_job_done_is_not_cancelled_and_one_in_flight_is(store: FarmStore):
    """The done check runs in the cancel's own transaction: no window in which the last
    frame's approval lands between the check and the write."""
    from coordinator.domain.errors import Refused

    add_job(store, "done", [[1], [2]])
    _set_task_state(store, "done", 1, TaskState.DONE)
    _set_task_state(store, "done", 2, TaskState.DONE)
    with pytest.raises(Refused, match="already done"):
        store.cancel_job("done", now=1.0)
    assert not store.get_job("done").cancelled
    add_job(store, "running", [[1], [2]])
    _set_task_state(store, "running", 1, TaskState.DONE)
    assert store.cancel_job("running", now=1.0)
    assert store.get_job("running").cancelled
    assert [t.state for t in store.list_tasks("running")] == [TaskState.DONE, TaskState.CANCELLED]

"""Job control rules in the store (SQLite and PostgreSQL): pause, priority, requeue, prefixes."""

from __future__ import annotations

import pytest
from test_store import add_job, output, store  # noqa: F401 - `store` is the fixture

from coordinator.domain.states import TaskState
from coordinator.storage.control import ControlError, JobControl
from coordinator.storage.store import FarmStore


def _creator(farm_store: FarmStore, job_id: str, creator: str) -> None:
    from sqlalchemy import update
    from sqlmodel import Session, col

    from coordinator.storage.models import JobRecord

    with Session(farm_store.engine) as session:
        session.execute(update(JobRecord).where(col(JobRecord.job_id) == job_id)
                        .values(creator=creator))
        session.commit()


def _leased_job(farm_store: FarmStore, now: float) -> str | None:
    task = farm_store.lease_next_task("node", now)
    return None if task is None else task.job_id


def test_a_paused_job_leases_nothing_until_resumed(store: FarmStore):  # noqa: F811
    control = JobControl(store.engine)
    add_job(store, "aaaa0001", [[1], [2]])
    first = store.lease_next_task("node", 1.0)
    assert first is not None
    assert control.set_paused("aaaa0001", True, 2.0)
    assert store.lease_next_task("node", 3.0) is None, "a paused job leases nothing"
    # The frame in flight still completes: nothing is lost.
    task, recorded = store.complete_task(first.lease_id, "node", [output(1)], 4.0)
    assert recorded and task.state == TaskState.VERIFYING
    assert not control.set_paused("aaaa0001", True, 5.0), "pausing twice changes nothing"
    assert control.set_paused("aaaa0001", False, 6.0)
    again = store.lease_next_task("node", 7.0)
    assert again is not None and again.first_frame == 2


def test_priority_orders_a_creators_own_jobs_never_ahead_of_others(store: FarmStore):  # noqa: F811
    control = JobControl(store.engine)
    add_job(store, "a1a1a1a1", [[1], [2]], now=1.0)  # alice, oldest
    add_job(store, "b1b1b1b1", [[1], [2]], now=2.0)  # bob
    add_job(store, "a2a2a2a2", [[1], [2]], now=3.0)  # alice, newest, urgent
    for job_id, creator in (("a1a1a1a1", "alice"), ("b1b1b1b1", "bob"),
                            ("a2a2a2a2", "alice")):
        _creator(store, job_id, creator)
    control.set_priority("a2a2a2a2", 10, 4.0)
    order = [_leased_job(store, 10.0 + i) for i in range(6)]
    # Alice's turns (her oldest work comes first) go to her urgent job; Bob keeps his place:
    # the FIFO decides whose turn it is, her priority only which of her jobs takes it.
    # Without priority: a1 a1 b1 b1 a2 a2. Alice's two first turns go to a2; Bob's stay 3 and 4.
    assert order == ["a2a2a2a2", "a2a2a2a2", "b1b1b1b1", "b1b1b1b1", "a1a1a1a1", "a1a1a1a1"]
    with pytest.raises(ControlError, match="between"):
        control.set_priority("a2a2a2a2", 1000, 5.0)


def test_requeue_takes_done_or_failed_frames_only(store: FarmStore):  # noqa: F811
    control = JobControl(store.engine)
    add_job(store, "cccc0001", [[1], [2], [3]])
    task = store.lease_next_task("node", 1.0)
    assert task is not None and task.first_frame == 1
    with pytest.raises(ControlError, match="frame 1 is leased"):
        control.requeue("cccc0001", [1], 2.0)
    with pytest.raises(ControlError, match="frame 2 is queued"):
        control.requeue("cccc0001", [2], 2.0)
    with pytest.raises(ControlError, match="frame 9 is not part"):
        control.requeue("cccc0001", [9], 2.0)
    from sqlalchemy import update
    from sqlmodel import Session, col

    from coordinator.storage.models import TaskRecord

    with Session(store.engine) as session:  # frame 1 approved (the verifier's part)
        session.execute(update(TaskRecord).where(col(TaskRecord.task_id) == task.task_id)
                        .values(state=TaskState.DONE))
        session.commit()
    assert control.requeue("cccc0001", [1], 3.0) == [1]
    states = {t.first_frame: t.state for t in store.list_tasks("cccc0001")}
    assert states[1] == TaskState.QUEUED
    # Requeued work goes to the back of the FIFO: frames 2 and 3 come first.
    assert [store.lease_next_task("node", 4.0 + i).first_frame for i in range(3)] == [2, 3, 1]


def test_job_ids_by_unique_prefix_of_ones_own_jobs(store: FarmStore):  # noqa: F811
    control = JobControl(store.engine)
    add_job(store, "deadbeef00000001", [[1]])
    add_job(store, "deadbeef00000002", [[1]])
    add_job(store, "feedface00000001", [[1]])
    _creator(store, "feedface00000001", "alice")
    assert control.resolve("deadbeef00000001", "anyone") == "deadbeef00000001"
    assert control.resolve("feed", "alice") == "feedface00000001"
    assert control.resolve("feed", "mallory") is None, "others' jobs are not matched"
    assert control.resolve("feed", None) == "feedface00000001"  # an admin sees all
    with pytest.raises(ControlError, match="ambiguous"):
        control.resolve("deadbeef", None)
    with pytest.raises(ControlError, match="too short"):
        control.resolve("fee", "alice")


def test_a_budget_pause_and_a_creator_pause_are_lifted_separately(store: FarmStore):  # noqa: F811
    from coordinator.domain.budget import LEASE_SHORT
    from coordinator.storage.models import JobRecord

    control = JobControl(store.engine)
    add_job(store, "dddd0000", [])  # the scene row
    store.create_job(JobRecord(job_id="dddd0001", scene_id="scene", frames_spec="",
                               settings_json="{}", created_at=0.0, updated_at=0.0), [[1]], 0.0,
                     frame_price_tokens=10)  # a job with a budget
    assert store.pause_job("dddd0001", LEASE_SHORT, 1.0)  # out of escrow
    control.set_paused("dddd0001", True, 2.0)  # and paused by its creator
    control.set_paused("dddd0001", False, 3.0)
    assert store.lease_next_task("node", 4.0) is None, "the creator's resume keeps the budget's"
    assert store.resume_job("dddd0001", 5.0)  # the escrow covers it again (a top-up)
    control.set_paused("dddd0001", True, 6.0)
    assert store.lease_next_task("node", 7.0) is None, "and the budget's keeps the creator's"
    control.set_paused("dddd0001", False, 8.0)
    assert store.lease_next_task("node", 9.0) is not None

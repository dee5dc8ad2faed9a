"""The task state machine and the job state derived from it: every path through it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.domain.states import (
    TERMINAL_TASK_STATES,
    IllegalTransition,
    JobState,
    TaskEvent,
    TaskState,
    job_state_from_frames,
    next_task_state,
)

MAX_ATTEMPTS = 3


def test_the_happy_path_and_the_retries() -> None:
    state = next_task_state(TaskState.QUEUED, TaskEvent.LEASE)
    assert state is TaskState.LEASED
    assert next_task_state(state, TaskEvent.FAIL, attempts=1, max_attempts=3) is TaskState.QUEUED
    assert next_task_state(state, TaskEvent.FAIL, attempts=3, max_attempts=3) is TaskState.FAILED
    state = next_task_state(state, TaskEvent.DELIVER)
    assert state is TaskState.VERIFYING
    assert next_task_state(state, TaskEvent.APPROVE) is TaskState.DONE
    assert next_task_state(TaskState.DONE, TaskEvent.REQUEUE) is TaskState.QUEUED


@pytest.mark.parametrize(("state", "event"), [
    (TaskState.QUEUED, TaskEvent.DELIVER),  # a result for a task nobody leased
    (TaskState.QUEUED, TaskEvent.FAIL),
    (TaskState.LEASED, TaskEvent.LEASE),  # two nodes never hold one task
    (TaskState.DONE, TaskEvent.APPROVE),
    (TaskState.CANCELLED, TaskEvent.REQUEUE),  # a cancelled job stays cancelled
    (TaskState.VERIFYING, TaskEvent.REQUEUE),
])
def test_moves_that_are_refused(state: TaskState, event: TaskEvent) -> None:
    with pytest.raises(IllegalTransition, match=f"a {state} task cannot {event}"):
        next_task_state(state, event)


@given(st.lists(st.sampled_from(list(TaskEvent)), max_size=60))
def test_any_sequence_of_events_obeys_the_rules(events: list[TaskEvent]) -> None:
    """Drive one task with any events (refused ones leave it where it was) and check what a
    task must never do: leave CANCELLED, be DONE without approval, exceed its attempts."""
    state, attempts, approved_since_delivery = TaskState.QUEUED, 0, False
    for event in events:
        tried = attempts + 1 if event is TaskEvent.FAIL else attempts
        try:
            new = next_task_state(state, event, attempts=tried, max_attempts=MAX_ATTEMPTS)
        except IllegalTransition:
            # a live task can always be cancelled
            assert state in TERMINAL_TASK_STATES or event is not TaskEvent.CANCEL
            continue
        if event is TaskEvent.FAIL:
            attempts = tried
        assert state is not TaskState.CANCELLED, "cancelled is final"
        if new is TaskState.DONE:
            assert state is TaskState.VERIFYING and event is TaskEvent.APPROVE
            approved_since_delivery = True
        if new is TaskState.FAILED:
            assert attempts >= MAX_ATTEMPTS
        if state in TERMINAL_TASK_STATES:
            assert event is TaskEvent.REQUEUE and new is TaskState.QUEUED
        state = new
    assert state is not TaskState.DONE or approved_since_delivery


@given(st.dictionaries(st.sampled_from(list(TaskState)), st.integers(0, 5)), st.booleans())
def test_job_state_follows_its_frames(counts: dict[TaskState, int], cancelled: bool) -> None:
    state = job_state_from_frames(counts, cancelled=cancelled)
    total = sum(counts.values())
    done = counts.get(TaskState.DONE, 0)
    if cancelled:
        assert state is JobState.CANCELLED
    elif total and done == total:
        assert state is JobState.DONE
    elif state is JobState.QUEUED:
        assert not (done or counts.get(TaskState.LEASED) or counts.get(TaskState.VERIFYING))
    assert state is not JobState.PAUSED  # the budget pauses a job, never its frames


def test_a_lease_is_live_only_for_its_holder_while_leased() -> None:
    from coordinator.domain.states import lease_refusal

    assert lease_refusal("node-a", TaskState.LEASED, "node-a") is None
    assert lease_refusal("node-b", TaskState.LEASED, "node-a") == \
        "the lease belongs to another node"
    assert lease_refusal("node-a", TaskState.QUEUED, "node-a") == "the task is queued now"
    assert lease_refusal(None, TaskState.QUEUED, "node-a") == "the lease belongs to another node"

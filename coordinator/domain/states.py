"""Task, job and verification states, and how a job's state follows from its tasks'."""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"  # a node holds a lease and is rendering
    VERIFYING = "verifying"  # rendered; Proof-of-Render has not approved every frame yet
    DONE = "done"  # every frame approved
    FAILED = "failed"  # gave up after too many attempts
    CANCELLED = "cancelled"


class JobState(StrEnum):
    QUEUED = "queued"
    RENDERING = "rendering"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"  # the escrow left does not cover the next frame (coordinator.domain.budget)


class VerificationState(StrEnum):
    """A Proof-of-Render check (table `verification`)."""

    QUEUED = "queued"
    LEASED = "leased"  # a verifier holds it and heartbeats
    DONE = "done"  # its verdict is applied
    CANCELLED = "cancelled"  # its job was cancelled, or its task rejected on another frame
    HELD = "held"  # stuck or not applicable: waits for the operator (render-coordinator doctor)


class TaskEvent(StrEnum):
    """What happens to a task; :func:`next_task_state` says where it goes."""

    LEASE = "lease"  # a node claimed it
    DELIVER = "deliver"  # the node's result was accepted: Proof-of-Render checks it
    APPROVE = "approve"  # every frame of it was approved
    FAIL = "fail"  # a lease ended without an accepted result, or Proof-of-Render rejected it
    CANCEL = "cancel"  # its creator cancelled the job (or its checks were dropped)
    REQUEUE = "requeue"  # its creator asked for the frames again


class IllegalTransition(ValueError):
    """A task cannot go there from where it is (a bug or a race the caller lost)."""


TERMINAL_TASK_STATES = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED})
_MOVES: dict[tuple[TaskState, TaskEvent], TaskState] = {
    (TaskState.QUEUED, TaskEvent.LEASE): TaskState.LEASED,
    (TaskState.LEASED, TaskEvent.DELIVER): TaskState.VERIFYING,
    (TaskState.VERIFYING, TaskEvent.APPROVE): TaskState.DONE,
    (TaskState.DONE, TaskEvent.REQUEUE): TaskState.QUEUED,
    (TaskState.FAILED, TaskEvent.REQUEUE): TaskState.QUEUED,
    **{(live, TaskEvent.CANCEL): TaskState.CANCELLED
       for live in (TaskState.QUEUED, TaskState.LEASED, TaskState.VERIFYING)},
}
FAILABLE = frozenset({TaskState.LEASED, TaskState.VERIFYING})


def next_task_state(state: TaskState | str, event: TaskEvent, *, attempts: int = 0,
                    max_attempts: int = 1) -> TaskState:
    """The task's state after `event`. A failure counts as an attempt (`attempts` includes
    it): the task goes back to the queue until `max_attempts`, then it is given up."""
    state = TaskState(state)
    if event is TaskEvent.FAIL and state in FAILABLE:
        return TaskState.FAILED if attempts >= max_attempts else TaskState.QUEUED
    try:
        return _MOVES[state, event]
    except KeyError:
        raise IllegalTransition(f"a {state} task cannot {event}") from None
TERMINAL_JOB_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


def job_state_from_frames(counts: dict[TaskState, int], *, cancelled: bool) -> JobState:
    """Derive a job's state from how many of its frames are in each task state.

    The job's state is never stored on its own, so it cannot drift from its
    tasks after a crash between two writes.
    """
    if cancelled:
        return JobState.CANCELLED
    total = sum(counts.values())
    done = counts.get(TaskState.DONE, 0)
    failed = counts.get(TaskState.FAILED, 0)
    if total and done == total:
        return JobState.DONE
    if total and done + failed == total:
        return JobState.FAILED
    if done or failed or counts.get(TaskState.LEASED, 0) or counts.get(TaskState.VERIFYING, 0):
        return JobState.RENDERING
    return JobState.QUEUED


UNKNOWN_LEASE = "unknown lease"  # no task holds the lease the node names


def lease_refusal(holder: str | None, state: str, node_id: str) -> str | None:
    """Why the task holding a lease the node names is not its live lease any more (None:
    it is).

    One rule for both lease paths (the hot path and the store), so a node hears the same
    reason whichever answered it."""
    if holder != node_id:
        return "the lease belongs to another node"
    if state != TaskState.LEASED:
        return f"the task is {state} now"
    return None

"""Task and job states, and how a job's state follows from its tasks'."""

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


TERMINAL_TASK_STATES = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED})
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

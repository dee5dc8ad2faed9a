"""Who may steer a job, and when: the creator's own controls (pause, resume, priority,
requeue, top-up, logs, cancel) are refused for other creators' jobs and for jobs that ended."""

from __future__ import annotations

from coordinator.domain.errors import Forbidden, Refused


def check_creator(job_id: str, creator: str, caller: str, action: str) -> None:
    """Only a job's creator may do ``action`` ("pause it", "read its logs") to it; not even
    an admin (a frame log may show the scene's names)."""
    if creator != caller:
        raise Forbidden(f"job {job_id} belongs to another creator: only its creator "
                        f"may {action}")


def check_steerable(job_id: str, *, cancelled: bool) -> None:
    """A cancelled job is not paused, resumed, reprioritised or requeued."""
    if cancelled:
        raise Refused(f"job {job_id} is cancelled")


def check_top_up(job_id: str, *, cancelled: bool, settled: bool) -> None:
    """A job that ended takes no more escrow: what was not charged is refunded."""
    if cancelled or settled:
        ended = "cancelled" if cancelled else "finished"
        raise Refused(f"job {job_id} is {ended}: nothing to top up (what was not "
                      "charged is refunded)")


def check_cancellable(job_id: str, *, done: bool) -> None:
    """Every frame approved: there is nothing left to stop, and "cancelled" would misreport
    a finished job (and hide it from `watch`'s done hook)."""
    if done:
        raise Refused(f"job {job_id} is already done: nothing to cancel")

"""Job control by a job's creator: pause, resume, priority, requeue, and job ids by prefix.

Kept apart from the budget's pause (coordinator.domain.budget, table job_budget): a job paused for
both reasons leases nothing until both are lifted, and the creator's resume never lifts the
budget's pause. See docs/ARCHITECTURE.md ("Job control").
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from coordinator.domain.states import TaskState
from coordinator.domain.verdicts import FrameVerdict
from coordinator.storage.models import (
    FrameLogRecord,
    FrameResultRecord,
    JobControlRecord,
    JobRecord,
    TaskRecord,
)
from frameproof.limits import FRAME_LOG_BYTES

MIN_PREFIX = 4  # shorter prefixes match too much to be typed on purpose
MAX_PRIORITY = 100
REQUEUEABLE = (TaskState.DONE, TaskState.FAILED)


class ControlError(ValueError):
    """A control request that cannot apply to the job as it stands (one line for people)."""


class JobControl:
    """Reads and writes `job_control` rows and requeues tasks, each in one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def resolve(self, job_id: str, creator: str | None) -> str | None:
        """The full id of the job `job_id` names: itself, or the one job whose id starts with it.

        `creator`: only their jobs are matched by prefix (None: an admin, every job). None when
        nothing matches; ControlError when the prefix is ambiguous or too short.
        """
        with self._session() as session:
            if session.get(JobRecord, job_id) is not None:
                return job_id
            if len(job_id) < MIN_PREFIX:
                raise ControlError(f"job id {job_id!r} is too short: give at least "
                                   f"{MIN_PREFIX} characters of it")
            query = select(JobRecord.job_id).where(col(JobRecord.job_id).startswith(job_id))
            if creator is not None:
                query = query.where(JobRecord.creator == creator)
            matches = list(session.exec(query.limit(3)))
        if len(matches) > 1:
            raise ControlError(f"job id prefix {job_id} is ambiguous ({', '.join(matches[:2])}, "
                               "...): give more characters")
        return matches[0] if matches else None

    def get(self, job_ids: Iterable[str]) -> dict[str, JobControlRecord]:
        ids = list(job_ids)
        if not ids:
            return {}
        with self._session() as session:
            rows = session.exec(select(JobControlRecord)
                                .where(col(JobControlRecord.job_id).in_(ids)))
            return {row.job_id: row for row in rows}

    def set_paused(self, job_id: str, paused: bool, now: float) -> bool:
        """Pause or resume leasing of the job's frames; True when that changed something."""
        with self._session() as session:
            row = session.get(JobControlRecord, job_id) or JobControlRecord(job_id=job_id)
            changed = row.paused != paused
            row.paused = paused
            row.updated_at = now
            session.add(row)
            session.commit()
            return changed

    def set_priority(self, job_id: str, priority: int, now: float) -> None:
        if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
            raise ControlError(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
        with self._session() as session:
            row = session.get(JobControlRecord, job_id) or JobControlRecord(job_id=job_id)
            row.priority = priority
            row.updated_at = now
            session.add(row)
            session.commit()

    def requeue(self, job_id: str, frames: list[int], now: float) -> list[int]:
        """Queue the tasks holding `frames` again; return every frame queued (whole tasks).

        Only finished (done) or failed tasks: frames still queued, rendering or being verified
        are refused, so nothing in flight is lost. The old image stays served until the new one
        is approved and replaces it; the new render is charged again (docs/PAYMENTS.md).
        """
        wanted = set(frames)
        with self._session() as session:
            job = session.get(JobRecord, job_id)
            if job is None:
                raise ControlError(f"no job {job_id}")
            if job.cancelled:
                raise ControlError(f"job {job_id} is cancelled: once it has settled, "
                                   "`frameproof requeue` renders the frames as a new job")
            if job.settled:
                raise ControlError(
                    f"job {job_id} is settled (its escrow is closed): `frameproof requeue` "
                    "renders the frames as a new job, escrowed like a submit")
            tasks = list(session.exec(
                select(TaskRecord).where(TaskRecord.job_id == job_id)
                .where(col(TaskRecord.first_frame) <= max(wanted))
                .where(col(TaskRecord.last_frame) >= min(wanted))))
            chosen = [task for task in tasks
                      if any(task.first_frame <= f <= task.last_frame for f in wanted)]
            covered = {f for task in chosen for f in range(task.first_frame, task.last_frame + 1)}
            missing = sorted(wanted - covered)
            if missing:
                raise ControlError(f"frame {missing[0]} is not part of job {job_id}")
            busy = [task for task in chosen if task.state not in REQUEUEABLE]
            if busy:
                raise ControlError(f"frame {busy[0].first_frame} is {busy[0].state}: only done "
                                   "or failed frames can be requeued")
            waiting = session.exec(
                select(FrameResultRecord.frame).where(FrameResultRecord.job_id == job_id)
                .where(col(FrameResultRecord.frame).in_(sorted(covered)))
                .where(FrameResultRecord.verdict == FrameVerdict.APPROVED)
                .where(col(FrameResultRecord.charged).is_(False))).first()
            if waiting is not None:  # its node is paid for it first; the sweep takes a second
                raise ControlError(f"frame {waiting} is waiting for its charge: try again in a "
                                   "moment")
            for task in chosen:
                moved = session.execute(
                    update(TaskRecord)
                    .where(col(TaskRecord.task_id) == task.task_id)
                    .where(col(TaskRecord.state).in_(list(REQUEUEABLE)))
                    .values(state=TaskState.QUEUED, lease_id=None, node_id=None,
                            lease_expires_at=None, queued_at=now, updated_at=now, error="")
                )
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    session.rollback()
                    raise ControlError(f"frame {task.first_frame} changed meanwhile: try again")
            session.commit()
        return sorted(covered)


def save_frame_logs(engine: Engine, job_id: str, node_id: str, logs: dict[int, str],
                    now: float) -> None:
    """Keep each frame's Blender output from the node whose result was just recorded."""
    if not logs:
        return
    with Session(engine) as session:
        for frame, text in logs.items():
            session.merge(FrameLogRecord(job_id=job_id, frame=frame, node_id=node_id,
                                         text=text[:FRAME_LOG_BYTES], created_at=now))
        session.commit()


def frame_log(engine: Engine, job_id: str, frame: int) -> FrameLogRecord | None:
    with Session(engine) as session:
        return session.get(FrameLogRecord, (job_id, frame))

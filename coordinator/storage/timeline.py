"""A job's timeline: the phases recorded for it and the timings the farm keeps anyway."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine
from sqlmodel import Session, select

from coordinator.domain.timeline import CheckTiming, FrameTiming, Phase, Timeline, build
from coordinator.storage.models import (
    FrameTimingRecord,
    JobPhaseRecord,
    JobRecord,
    VerificationRecord,
)


class TimelineStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, job_id: str, phases: Iterable[Phase]) -> None:
        """Keep these phases of the job (a phase recorded again replaces the earlier one)."""
        with Session(self.engine) as session:
            for phase in phases:
                session.merge(JobPhaseRecord(job_id=job_id, phase=phase.name,
                                             started_at=phase.started_at,
                                             ended_at=phase.ended_at, seconds=phase.seconds))
            session.commit()

    def timeline(self, job: JobRecord, frames_total: int) -> Timeline:
        with Session(self.engine) as session:
            recorded = [Phase(r.phase, r.started_at, r.ended_at, r.seconds)
                        for r in session.exec(select(JobPhaseRecord)
                                              .where(JobPhaseRecord.job_id == job.job_id))]
            timings = [FrameTiming(r.frame, r.node_id, r.at, r.wall_seconds, r.claimed_seconds)
                       for r in session.exec(select(FrameTimingRecord)
                                             .where(FrameTimingRecord.job_id == job.job_id))]
            checks = [CheckTiming(r.frame, r.created_at, r.finished_at, r.passed)
                      for r in session.exec(select(VerificationRecord)
                                            .where(VerificationRecord.job_id == job.job_id))]
        return build(recorded, job.created_at, frames_total, timings, checks)

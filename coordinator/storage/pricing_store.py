"""What pricing keeps: probes, job quotes, per-frame timings (claims vs network)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from coordinator.domain.pricing import measured_speed
from coordinator.storage.models import (
    FrameTimingRecord,
    JobQuoteRecord,
    NodeStandingRecord,
    PriceProbeRecord,
    ReputationEventRecord,
)
from coordinator.storage.proof import standing_of

CLAIM_MISMATCH = "claim_mismatch"  # reputation event kind: claims far from the network's measure
SPEED_SAMPLES = 50  # a node's measured speed: the median over its latest frames


class PricingStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------ probes and quotes

    def probe(self, probe_key: str) -> PriceProbeRecord | None:
        with self._session() as session:
            return session.get(PriceProbeRecord, probe_key)

    def save_probe(self, record: PriceProbeRecord) -> None:
        with self._session() as session:
            session.merge(record)
            session.commit()

    def save_quote(self, record: JobQuoteRecord) -> None:
        with self._session() as session:
            session.merge(record)
            session.commit()

    def quote(self, job_id: str) -> JobQuoteRecord | None:
        with self._session() as session:
            return session.get(JobQuoteRecord, job_id)

    # ------------------------------------------------------------ timings

    def timing(self, job_id: str, frame: int) -> FrameTimingRecord | None:
        with self._session() as session:
            return session.get(FrameTimingRecord, (job_id, frame))

    def node_job_seconds(self, job_id: str, node_id: str) -> list[float]:
        """The seconds a node claimed for each of its frames of a job (its timing shape)."""
        with self._session() as session:
            return list(session.exec(
                select(FrameTimingRecord.claimed_seconds)
                .where(FrameTimingRecord.job_id == job_id)
                .where(FrameTimingRecord.node_id == node_id)))

    def set_work(self, job_id: str, frame: int, work: int) -> None:
        with self._session() as session:
            record = session.get(FrameTimingRecord, (job_id, frame))
            if record is not None:
                record.work_ms = work
                session.add(record)
                session.commit()

    def node_speed(self, node_id: str) -> float | None:
        """Reference seconds of work per wall second, measured by the coordinator."""
        with self._session() as session:
            rows = session.exec(
                select(FrameTimingRecord.work_ms, FrameTimingRecord.wall_seconds)
                .where(FrameTimingRecord.node_id == node_id)
                .where(col(FrameTimingRecord.work_ms) > 0)
                .order_by(col(FrameTimingRecord.at).desc())
                .limit(SPEED_SAMPLES)).all()
        return measured_speed([(work, wall) for work, wall in rows])

    def node_speeds(self, node_ids: Iterable[str]) -> dict[str, float | None]:
        return {node_id: self.node_speed(node_id) for node_id in node_ids}

    # ------------------------------------------------------------ claim mismatches

    def flagged(self, node_id: str, job_id: str) -> bool:
        with self._session() as session:
            return session.exec(
                select(ReputationEventRecord.id)
                .where(ReputationEventRecord.node_id == node_id)
                .where(ReputationEventRecord.job_id == job_id)
                .where(ReputationEventRecord.kind == CLAIM_MISMATCH)).first() is not None

    def flag_claim_mismatch(self, node_id: str, job_id: str, frame: int, reason: str,
                            details: dict[str, float], now: float) -> None:
        """An audit entry in the node's history; its score is unchanged (the price rule is
        what protects the creator: claims do not set prices)."""
        with self._session() as session:
            standing = standing_of(session.get(NodeStandingRecord, node_id))
            session.add(ReputationEventRecord(
                node_id=node_id, at=now, kind=CLAIM_MISMATCH, score_before=standing.score,
                score_after=standing.score, tier_after=standing.tier, reason=reason,
                job_id=job_id, frame=frame, details_json=json.dumps(details)))
            session.commit()

"""Who holds which blob: the record that makes deduplication safe across creators.

A blob's sha256 is seen by many (every node that renders a scene reads its manifest), so
knowing it must not be worth anything. A key owns a blob once it has sent the blob's bytes:
uploaded them first, or streamed them again over a stored copy (a proof of possession, see
``coordinator.blobstore.BlobProof``). Only owners may reuse a blob in a job, and
FindMissingBlobs reports stored blobs as stored only to their owners.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from coordinator.storage.models import BlobOwnerRecord, JobRecord, SceneFileRecord

QUERY_BATCH = 500  # shas per IN (...) query: well under every database's parameter limit


class BlobOwners:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def owns(self, owner: str, sha256: str) -> bool:
        with Session(self.engine) as session:
            return session.get(BlobOwnerRecord, (sha256, owner)) is not None

    def owned(self, owner: str, shas: Iterable[str]) -> set[str]:
        """The subset of ``shas`` that ``owner`` holds."""
        wanted = list(dict.fromkeys(shas))
        found: set[str] = set()
        with Session(self.engine) as session:
            for start in range(0, len(wanted), QUERY_BATCH):
                batch = wanted[start:start + QUERY_BATCH]
                found.update(session.exec(
                    select(BlobOwnerRecord.sha256)
                    .where(BlobOwnerRecord.owner == owner)
                    .where(col(BlobOwnerRecord.sha256).in_(batch))
                ))
        return found

    def add(self, owner: str, sha256: str, now: float | None = None) -> None:
        """Record that ``owner`` holds ``sha256``; recording it twice is harmless."""
        with Session(self.engine) as session:
            if session.get(BlobOwnerRecord, (sha256, owner)) is None:
                session.add(BlobOwnerRecord(sha256=sha256, owner=owner))
                try:
                    session.commit()
                except IntegrityError:  # a concurrent upload by the same key recorded it first
                    session.rollback()
                    if session.get(BlobOwnerRecord, (sha256, owner)) is None:
                        raise

    def adopt_existing_jobs(self, now: float | None = None) -> int:
        """Give the creator of every job ownership of its scene's files, once.

        Databases from before ownership was recorded have jobs but no owners; without this
        their creators could not submit on their own scenes again without uploading them.
        """
        at = time.time() if now is None else now
        held = select(BlobOwnerRecord.sha256).where(
            BlobOwnerRecord.sha256 == SceneFileRecord.sha256,
            BlobOwnerRecord.owner == JobRecord.creator).exists()
        pairs = (
            select(SceneFileRecord.sha256, JobRecord.creator)
            .join(JobRecord, col(JobRecord.scene_id) == col(SceneFileRecord.scene_id))
            .where(JobRecord.creator != "")
            .where(~held)
            .distinct()
        )
        with Session(self.engine) as session:
            rows = list(session.exec(pairs))
            if rows:
                session.execute(insert(BlobOwnerRecord), [
                    {"sha256": sha, "owner": creator, "at": at} for sha, creator in rows])
                session.commit()
            return len(rows)

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

from sqlalchemy import bindparam, insert, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from coordinator.storage import driver
from coordinator.storage.models import BlobOwnerRecord, JobRecord, SceneFileRecord

QUERY_BATCH = 500  # shas per IN (...) query: well under every database's parameter limit
_OWNS = text("SELECT 1 FROM blob_owner WHERE sha256 = :sha AND owner = :owner")
_OWNED = text("SELECT sha256 FROM blob_owner WHERE owner = :owner AND sha256 IN :shas"
              ).bindparams(bindparam("shas", expanding=True))
# A concurrent upload by the same key may have recorded it first: nothing to do then.
_ADD = text("INSERT INTO blob_owner (sha256, owner) VALUES (:sha, :owner) "
            "ON CONFLICT DO NOTHING")


class BlobOwners:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # Plain SQL: FindMissingBlobs, UploadBlob and CompleteTask ask these for every frame.
    def owns(self, owner: str, sha256: str) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(_OWNS, {"sha": sha256, "owner": owner}).first() is not None

    def owned(self, owner: str, shas: Iterable[str], connection: Connection | None = None
              ) -> set[str]:
        """The subset of ``shas`` that ``owner`` holds (in `connection`'s transaction, if
        given)."""
        wanted = list(dict.fromkeys(shas))
        found: set[str] = set()
        if not wanted:
            return found
        if connection is None:
            with self.engine.connect() as own:
                return self.owned(owner, wanted, own)
        for start in range(0, len(wanted), QUERY_BATCH):
            batch = wanted[start:start + QUERY_BATCH]
            found.update(driver.run(connection, _OWNED,
                                    {"owner": owner, "shas": batch}).scalars())
        return found

    def add(self, owner: str, sha256: str, now: float | None = None) -> None:
        """Record that ``owner`` holds ``sha256``; recording it twice is harmless.

        (`now` is accepted for the callers' sake: the table keeps no time.)"""
        with self.engine.begin() as connection:
            connection.execute(_ADD, {"sha": sha256, "owner": owner})

    def add_many(self, owner: str, shas: Iterable[str], connection: Connection | None = None
                 ) -> None:
        """`add` for several blobs, in one transaction (a batch upload), or in
        `connection`'s (a node's delivery, with its results)."""
        rows = [{"sha": sha, "owner": owner} for sha in dict.fromkeys(shas)]
        if not rows:
            return
        if connection is None:
            with self.engine.begin() as own:
                driver.run_many(own, _ADD, rows)
        else:
            driver.run_many(connection, _ADD, rows)

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

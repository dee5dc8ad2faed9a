"""Records the money path could not process, held out so everything else goes on.

The settlement sweep, epoch close and the verdict path treat each frame, job and node on its
own: a step that raises something other than its expected, retryable error puts its record
here with the reason, and later sweeps skip it. One poisoned record then costs only itself,
never the other creators' charges and refunds or the nodes' epoch. The operator sees them
with `render-coordinator doctor` (and a line of `ledger check`), fixes the cause and releases
them with `render-coordinator doctor --release KIND KEY`: the next sweep tries again.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Field, Session, SQLModel, col, select

from coordinator.chain.base import ChainError

log = logging.getLogger(__name__)

FRAME_CHARGE = "frame_charge"  # key: "JOB_ID:FRAME"
JOB_SETTLE = "job_settle"  # key: job id
ORPHAN_REFUND = "orphan_refund"  # key: job id of an escrow without a job
EPOCH_PARTICIPANT = "epoch_participant"  # key: node id
VERIFICATION = "verification"  # key: verification id
# Not the record's fault: the database or the chain is away, or the disk is full. The step
# fails as a whole and the next sweep retries it.
TRANSIENT: tuple[type[BaseException], ...] = (OperationalError, ChainError, OSError)
KINDS = (FRAME_CHARGE, JOB_SETTLE, ORPHAN_REFUND, EPOCH_PARTICIPANT, VERIFICATION)
MAX_REASON_BYTES = 500
MAX_KEY_BYTES = 200


class QuarantinedRecord(SQLModel, table=True):
    """One record held out of the money path, and why."""

    __tablename__ = "quarantined_record"
    kind: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    reason: str
    at: float


@dataclass(frozen=True)
class Held:
    kind: str
    key: str
    reason: str
    at: float


class Quarantine:
    """The quarantined_record table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, kind: str, key: str, reason: str, now: float | None = None) -> None:
        """Hold `key` out; a record already held keeps its first reason."""
        now = time.time() if now is None else now
        reason = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
        with Session(self.engine) as session:
            session.add(QuarantinedRecord(kind=kind, key=key[:MAX_KEY_BYTES], reason=reason,
                                          at=now))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return
        log.error("quarantined %s %s: %s (render-coordinator doctor lists it)", kind, key,
                  reason)

    def keys(self, kind: str) -> set[str]:
        with Session(self.engine) as session:
            return set(session.exec(select(QuarantinedRecord.key)
                                    .where(QuarantinedRecord.kind == kind)).all())

    def held(self) -> list[Held]:
        with Session(self.engine) as session:
            rows = session.exec(select(QuarantinedRecord)
                                .order_by(col(QuarantinedRecord.at))).all()
            return [Held(r.kind, r.key, r.reason, r.at) for r in rows]

    def release(self, kind: str, key: str) -> bool:
        """Let the next sweep try this record again; False when it was not held."""
        with Session(self.engine) as session:
            gone = session.exec(delete(QuarantinedRecord)
                                .where(col(QuarantinedRecord.kind) == kind)
                                .where(col(QuarantinedRecord.key) == key)).rowcount
            session.commit()
        return bool(gone)

    @contextlib.contextmanager
    def isolated(self, kind: str, key: str, *,
                 expected: tuple[type[BaseException], ...] = TRANSIENT,
                 now: float | None = None) -> Iterator[None]:
        """Run one record's step; anything it raises, other than `expected`, quarantines it.

        The exception is swallowed, so the caller's loop goes on with the next record.
        `expected` errors (an unreachable database or chain) propagate: the caller retries.
        """
        try:
            yield
        except expected:
            raise
        except Exception as error:  # the point: one record's failure is that record's only
            self.add(kind, key, describe(error), now)


def describe(error: BaseException) -> str:
    """The error's type, message and where it was raised: enough for the operator to start."""
    where = ""
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        last = frames[-1]
        where = f" (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name})"
    return f"{type(error).__name__}: {error}{where}"


def quarantine_lines(engine: Engine) -> list[str]:
    """What `ledger check` says about held records (they do not make it fail)."""
    held = Quarantine(engine).held()
    if not held:
        return []
    kinds: dict[str, int] = {}
    for record in held:
        kinds[record.kind] = kinds.get(record.kind, 0) + 1
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    return [f"held     {len(held)} record(s) quarantined out of settlement ({summary}); "
            "`render-coordinator doctor` lists them"]

"""What several coordinators on one PostgreSQL database share beyond the farm's tables.

- `SharedNonceLog`: accepted call nonces in the database, so a call accepted by one
  coordinator is refused as a replay by every other (the file journal of
  coordinator/api/nonce_journal.py only covers one process across its restarts).
- `LeaderLock`: one coordinator at a time runs the background duties that must not run twice
  at once (settlement sweep and epoch close, the lease reaper, bond returns and slashing). It
  is a PostgreSQL session advisory lock held on a connection of its own: when the holder dies,
  its connection closes, PostgreSQL frees the lock and the next coordinator that asks takes it.

SQLite stays the single-process default: there the file journal is used and the one process
is always the leader (`LeaderLock.always`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import psycopg2
from sqlalchemy import Table, delete, make_url, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

log = logging.getLogger(__name__)

# pg_advisory_lock's key: any 64-bit number the farm's database uses for nothing else
# (the first 8 bytes of "frameproof" read as an integer).
LEADER_LOCK_KEY = 0x6672616D6570726F


class CallNonceRecord(SQLModel, table=True):
    """One accepted call: `pubkey:nonce`, and when it arrived (rows older than the replay
    window are deleted: their timestamps are refused as stale anyway)."""

    __tablename__ = "call_nonce"
    key: str = Field(primary_key=True, max_length=120)
    seen_at: float = Field(index=True)


class FarmChainRecord(SQLModel, table=True):
    """The token mint this database's ledger is about: every coordinator must use it."""

    __tablename__ = "farm_chain"
    mint: str = Field(primary_key=True, max_length=64)
    recorded_at: float


class DifferentChain(Exception):
    """This coordinator's chain is not the one the shared database's ledger records."""


def claim_chain(engine: Engine, mint: str, now: float) -> None:
    """Record the farm's mint on first start; refuse a coordinator on another one.

    Two coordinators each on its own embedded chain (LiteSVM lives inside one process)
    would book one ledger against two token supplies; this is the one clear error instead.
    """
    table = _table(FarmChainRecord)
    with engine.begin() as connection:
        connection.execute(pg_insert(table).on_conflict_do_nothing(),
                           {"mint": mint, "recorded_at": now})
        known = [row[0] for row in connection.execute(text("SELECT mint FROM farm_chain"))]
    if known != [mint]:
        raise DifferentChain(
            f"this database's ledger is about mint {', '.join(known)}, this coordinator's chain "
            f"has mint {mint}: coordinators sharing a database must share one chain (an RPC "
            "cluster: --cluster URL --treasury-keypair K --mint M; the embedded chain lives "
            "inside one process). See docs/DEPLOY.md, 'Several coordinators'.")


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq connection string for psycopg2."""
    parsed = make_url(url)
    parts = {"host": parsed.host, "port": parsed.port, "user": parsed.username,
             "password": parsed.password, "dbname": parsed.database, "connect_timeout": 5,
             **parsed.query}
    return " ".join(f"{key}={_quote(str(value))}" for key, value in parts.items()
                    if value is not None)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def is_shared(url: str) -> bool:
    """Whether several coordinators may serve from this database (anything but SQLite)."""
    return not url.startswith("sqlite")


# One statement whatever the batch's size (the keys as two arrays): a multi-row VALUES was
# compiled anew for each size, 4% of a coordinator's GIL samples at 500 nodes (stop 28).
_RECORD_KEYS = text("""
INSERT INTO call_nonce (key, seen_at)
SELECT * FROM unnest(CAST(:keys AS varchar[]), CAST(:seen AS double precision[]))
ON CONFLICT (key) DO NOTHING RETURNING key
""")


class SharedNonceLog:
    """`NonceLog` over the database: `record` answers False when any coordinator already
    accepted the key, so the insert itself is the replay check (its primary key decides).

    Calls arriving together share one transaction (group commit): a writer thread takes every
    key waiting, inserts them in one statement and answers each caller from the rows it
    inserted. One call alone still costs one transaction; 1,000 nodes' calls cost a few round
    trips instead of one transaction each (BEGIN, INSERT, COMMIT and the pool's ping).
    """

    blocking = True  # callers wait for the database: the interceptor runs it off the loop
    MAX_BATCH = 500

    def __init__(self, engine: Engine, window_seconds: float, *,
                 prune_every: float = 10.0) -> None:
        self.engine = engine
        self.window = window_seconds
        self.prune_every = prune_every
        self._pruned_at = 0.0
        self._queue: queue.SimpleQueue[tuple[str, float, Future[bool]] | None] = (
            queue.SimpleQueue())
        self._writer: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._table = _table(CallNonceRecord)
        self.batches = 0  # transactions written (diagnostics, tests)

    def load(self, since: float) -> list[tuple[str, float]]:
        """Nothing to preload: every call is checked against the table itself."""
        return []

    def record(self, key: str, now: float) -> bool:
        """Insert the key; False when it was already there (a replay, perhaps elsewhere)."""
        answer: Future[bool] = Future()
        self._queue.put((key, now, answer))
        self._ensure_writer()
        return answer.result()

    def _ensure_writer(self) -> None:
        if self._writer is not None:
            return
        with self._start_lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="nonce-log",
                                                daemon=True)
                self._writer.start()

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[str, float, Future[bool]]]) -> None:
        rows = {key: now for key, now, _ in batch}  # a key twice in one batch: one row
        try:
            with self.engine.begin() as connection:
                inserted = set(connection.execute(_RECORD_KEYS, {
                    "keys": list(rows), "seen": list(rows.values())}).scalars())
            self.batches += 1
        except Exception as error:  # each caller's call fails as one call alone would
            for _, _, answer in batch:
                answer.set_exception(error)
            return
        latest = max(now for _, now, _ in batch)
        if latest - self._pruned_at >= self.prune_every:  # before answering: callers see it
            self._pruned_at = latest
            try:
                with self.engine.begin() as connection:
                    connection.execute(delete(self._table)
                                       .where(self._table.c.seen_at < latest - self.window))
            except Exception:  # stale rows are refused by their timestamps anyway
                log.warning("pruning old call nonces failed; retried later", exc_info=True)
        for key, _, answer in batch:  # the same key twice in one batch: the first one wins
            answer.set_result(key in inserted)
            inserted.discard(key)

    def close(self) -> None:
        """Stop the writer once the keys already waiting are written."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=10)


class LeaderLock:
    """Whether this coordinator runs the once-only background duties now.

    `hold()` is called every second or so from a worker thread: it keeps the lock, or tries
    to take it, and returns whether this process holds it. A connection lost (database
    restart, network) means the lock is lost too; the next `hold()` reconnects and competes
    again. `on_elected` runs once each time the lock is taken, before `hold()` returns True
    (the coordinator finishes half-done chain operations there).
    """

    def __init__(self, engine: Engine | None, *, key: int = LEADER_LOCK_KEY,
                 on_elected: Callable[[], object] | None = None) -> None:
        self.engine = engine
        self.key = key
        self.on_elected = on_elected
        self._connection: Any = None  # psycopg2's connection holding the lock, while held
        self.held = engine is None
        self.elected_at: float | None = time.time() if engine is None else None

    @classmethod
    def always(cls) -> LeaderLock:
        """The single-process case (SQLite): always the leader."""
        return cls(None)

    def hold(self) -> bool:
        if self.engine is None:
            return True
        if self._connection is not None:
            try:
                with self._connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                return True
            except Exception:
                log.warning("lost the database connection holding the leader lock")
                self._drop()
        try:
            # A connection of its own, outside the pool: closing it (or this process dying)
            # frees the lock. Autocommit: no transaction stays open while the lock is held.
            connection = psycopg2.connect(
                libpq_dsn(self.engine.url.render_as_string(hide_password=False)))
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                taken = bool(cursor.fetchone()[0])
        except Exception:
            log.exception("cannot reach the database to compete for the leader lock")
            return False
        if not taken:
            connection.close()
            return False
        self._connection = connection
        if self.on_elected is not None:
            try:
                self.on_elected()
            except Exception:  # elected but unready: let another coordinator (or us) retry
                log.exception("taking over the once-only duties failed; giving the lock back")
                self.release()
                return False
        self.held = True
        self.elected_at = time.time()
        log.info("this coordinator now runs settlement, epochs, bonds and the lease reaper")
        return True

    def release(self) -> None:
        if self._connection is not None:
            try:
                with self._connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except Exception:  # closing the connection frees it anyway
                pass
        self._drop()

    def _drop(self) -> None:
        self.held = self.engine is None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


def _table(model: type[SQLModel]) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


def holder_pid(engine: Engine, key: int = LEADER_LOCK_KEY) -> int | None:
    """The PostgreSQL backend pid holding this database's leader lock, or None (diagnostics,
    tests). pg_locks lists every database's locks: farms on one server share the key."""
    with engine.connect() as connection:
        row = connection.execute(text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((classid::bigint << 32) | objid::bigint) = :key"), {"key": key}).first()
    return None if row is None else int(row[0])

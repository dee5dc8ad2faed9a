"""Engine creation: SQLite in WAL mode by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, exc, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from coordinator.storage import limits, migrations  # noqa: F401  (limits: stored-size limits)

log = logging.getLogger(__name__)
SQLITE_WAL_CHECKPOINT_PAGES = 10_000  # pages in the WAL before it is checkpointed
SQLITE_WAL_KEEP_BYTES = 64 * 1024**2  # the WAL file's size kept after a checkpoint
SQLITE_CACHE_KIB = 2048  # page cache per SQLite connection (SQLite's own default is ~2 MB)
CHECKPOINT_SECONDS = 1.0  # how often the checkpoint thread copies the WAL into the database


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'farm.db').resolve()}"


def database_url(text: str) -> str:
    """The URL as SQLAlchemy should open it: bare `postgresql://` (and `postgres://`) URLs,
    as operators write them, use psycopg2, the driver Frameproof installs (SQLAlchemy 2.1
    would pick psycopg 3 for them, which is not a dependency)."""
    for bare in ("postgresql://", "postgres://"):
        if text.startswith(bare):
            return "postgresql+psycopg2://" + text[len(bare):]
    return text


def open_engine(url: str) -> Engine:
    """The engine alone, schema untouched (`open_database` also migrates).

    SQLite runs in WAL mode with synchronous=NORMAL: a killed coordinator loses
    no committed transaction (only a power cut could lose the last few). `sqlite://` is one
    in-memory database shared by every session of the engine (the unit tests' store).
    """
    url = database_url(url)
    if url.startswith("sqlite"):
        memory = _sqlite_memory(url)
        # LIFO: the storage thread gets back the connection it just used, whose page cache
        # is still valid, not the pool's oldest (SQLite would read its pages again).
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               poolclass=StaticPool if memory else None,
                               **({} if memory else {"pool_use_lifo": True}))
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # Sized for the threads that may hold a connection at once (32 worker threads with a
        # shared database, the storage thread, the sweeps, the nonce writer): with
        # SQLAlchemy's default five, the rest were overflow connections, closed on return and
        # re-opened (a PostgreSQL backend fork each) on the next call.
        engine = create_engine(url, pool_size=12, max_overflow=40)
        _ping_when_idle(engine)
    return engine


PING_IDLE_SECONDS = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat unused for PING_IDLE_SECONDS.

    Why: `pool_pre_ping` pings on every checkout, a round trip before each transaction of
    the hot path (12% of a coordinator's samples under 500 nodes on PostgreSQL; docs/
    BENCHMARKS.md, "verifier calls off the event loop (stop 26)"). A connection used within
    the last seconds is alive but for a server restart in between, and then the statement
    fails, SQLAlchemy invalidates the whole pool and the caller's retry gets a fresh
    connection. The check is the dialect's own ping; a dead connection raises
    DisconnectionError, on which the pool connects anew (SQLAlchemy's documented custom
    pre-ping).
    """
    @event.listens_for(engine, "checkin")
    def returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def lent(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < PING_IDLE_SECONDS:
            return  # new, or used moments ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # whatever the driver raises for a dead connection
            raise exc.DisconnectionError(str(error)) from error
        if not alive:
            raise exc.DisconnectionError("the database did not answer a ping")


def _sqlite_memory(url: str) -> bool:
    return url in ("sqlite://", "sqlite:///:memory:")


def open_database(url: str) -> Engine:
    """The engine, its schema migrated to the newest revision (storage/migrations)."""
    engine = open_engine(url)
    migration = migrations.upgrade(engine)
    if migration.changed:
        log.info("database %s: %s", safe_url(url), migration.describe())
    return engine


def create_database(server: str, prefix: str = "fp") -> str:
    """A new, empty PostgreSQL database on `server` (a URL without the database name);
    returns its URL. For tests and benches that need a database of their own."""
    import uuid

    from sqlalchemy import text

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{server.rstrip('/')}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return f"{server.rstrip('/')}/{name}"


def drop_database(url: str) -> None:
    """Drop the database `create_database` made, whoever is still connected to it."""
    from sqlalchemy import text

    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Checkpoint the WAL every ~40 MB instead of SQLite's ~4 MB: a page written by many
    # commits meanwhile is copied into the database once, not once per 4 MB (0.62 -> 0.56 ms
    # of coordinator CPU a frame cycle, docs/BENCHMARKS.md "cycles"); the file is cut back to
    # 64 MiB after a checkpoint so an idle coordinator does not keep a large one.
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_CHECKPOINT_PAGES}")
    cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_KEEP_BYTES}")
    # Each connection keeps its own page cache; with the pool's 5 kept connections this caps
    # SQLite's share of the coordinator's memory near 5 x 2 MiB however large the file grows.
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


class WalCheckpointer:
    """Copies SQLite's WAL into the database from a thread and connection of its own.

    Without it the commit that fills the WAL past `wal_autocheckpoint` copies the pages and
    fsyncs inside the storage thread's transaction: with 1,000 nodes that was a 20-35 ms stall
    every five seconds, the calls queued behind it included (the LeaseTask p99). A PASSIVE
    checkpoint takes no lock a writer needs and sqlite3 lets go of the GIL while it runs, so
    the hot path keeps committing meanwhile. The connections' own autocheckpoint stays as the
    fallback: it finds the pages already copied and has little left to do.
    """

    def __init__(self, url: str, interval: float = CHECKPOINT_SECONDS) -> None:
        self.path = make_url(database_url(url)).database or ""
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)

    @staticmethod
    def wanted(url: str) -> bool:
        """Whether `url` is a SQLite file (an in-memory database has no WAL)."""
        url = database_url(url)
        return url.startswith("sqlite") and not _sqlite_memory(url)

    def start(self) -> WalCheckpointer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:  # the next pass retries; the fallback still runs
                    log.exception("WAL checkpoint failed")
        finally:
            connection.close()


def analyze_changed_tables(engine: Engine) -> list[str]:
    """ANALYZE the PostgreSQL tables that changed much since their statistics were taken
    (autovacuum's rule: 50 rows + 10%); returns their names. Nothing on SQLite.

    The lease query's plan depends on them: with statistics from an emptier table, PostgreSQL
    scanned and sorted every queued task instead of walking the queue index (0.5 s instead of
    1.4 ms per lease with 20,000 queued, two-coordinator bench) until the tables were analyzed.
    Autovacuum does this when it is on, a minute or more later; it is off on some servers
    (this project's CI among them), so the coordinator does not rely on it.
    """
    if engine.dialect.name != "postgresql":
        return []
    from sqlalchemy import text

    with engine.connect() as connection:
        tables = [row[0] for row in connection.execute(text(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() "
            "AND n_mod_since_analyze > 50 + 0.1 * n_live_tup ORDER BY relname"))]
    if tables:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE " + ", ".join(f'"{t}"' for t in tables)))
    return tables


"""The SQLite WAL is copied into the database by a thread of its own, off the hot path."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

from sqlalchemy import text

from coordinator.storage.database import WalCheckpointer, open_database, sqlite_url


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_checkpoint_thread_copies_commits_into_the_database_file(tmp_path: Path):
    url = sqlite_url(tmp_path)
    engine = open_database(url)
    assert WalCheckpointer.wanted(url) and not WalCheckpointer.wanted("sqlite://")
    database = tmp_path / "farm.db"
    with sqlite3.connect(database) as connection:  # start from a WAL copied in full
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = _digest(database)
    with engine.begin() as connection:  # a commit lands in the WAL, below the autocheckpoint
        connection.execute(text("CREATE TABLE probe (n INTEGER)"))
        connection.execute(text("INSERT INTO probe VALUES (1), (2), (3)"))
    assert _digest(database) == before, "the commit itself copied nothing into the file"
    checkpointer = WalCheckpointer(url, interval=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while _digest(database) == before and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        checkpointer.close()
        engine.dispose()
    assert _digest(database) != before, "the thread checkpointed the WAL into the file"
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM probe").fetchone() == (3,)

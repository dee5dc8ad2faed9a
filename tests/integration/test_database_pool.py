"""The PostgreSQL pool checks a connection before use only when it sat idle
(coordinator/storage/database.py ``_ping_when_idle``): no round trip before each hot-path
transaction, and still no error from a connection the server dropped while it was idle.
Real PostgreSQL; a backend is killed with pg_terminate_backend.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, exc
from sqlalchemy.engine import Engine

from coordinator.storage import database
from coordinator.storage.database import open_engine


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def terminate(url: str, pid: int) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
    finally:
        admin.dispose()


def counting_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    real = engine.dialect.do_ping

    def ping(dbapi_connection: Any) -> bool:
        pings.append(1)
        return bool(real(dbapi_connection))

    monkeypatch.setattr(engine.dialect, "do_ping", ping)
    return pings


def test_a_connection_used_moments_ago_is_lent_without_a_ping(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = open_engine(postgres_url)
    try:
        pings = counting_pings(engine, monkeypatch)
        pids = {backend_pid(engine) for _ in range(5)}
        assert len(pids) == 1 and not pings  # one pooled connection, never pinged
        monkeypatch.setattr(database, "PING_IDLE_SECONDS", 0.0)
        backend_pid(engine)
        assert len(pings) == 1  # idle "long enough": checked once before use
    finally:
        engine.dispose()


def test_a_connection_dropped_while_idle_is_replaced_without_an_error(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "PING_IDLE_SECONDS", 0.0)
    engine = open_engine(postgres_url)
    try:
        first = backend_pid(engine)
        terminate(postgres_url, first)
        assert backend_pid(engine) != first  # the ping found it dead; a new one served
    finally:
        engine.dispose()


def test_a_connection_dropped_moments_after_use_fails_one_statement_only(
        postgres_url: str) -> None:
    """The price of not pinging a connection just used: a server that dropped it in those
    seconds fails that statement; SQLAlchemy then refreshes the pool and the retry works."""
    engine = open_engine(postgres_url)
    try:
        first = backend_pid(engine)
        terminate(postgres_url, first)
        with pytest.raises(exc.OperationalError):
            backend_pid(engine)
        assert backend_pid(engine) != first
    finally:
        engine.dispose()

"""The node hot path's plain statements, straight to SQLite's driver.

For the hot path's small statements SQLAlchemy's per-statement work (parameter processing,
the result object) cost more CPU than SQLite itself (docs/BENCHMARKS.md, "cycles"). sqlite3
takes a `text()` statement's `:name` parameters as written, so on SQLite these go to the
connection's own DBAPI cursor, inside the same transaction; a list parameter (`IN :leases`)
is spelled out as `IN (:leases_0, ...)` as SQLAlchemy would. PostgreSQL keeps SQLAlchemy:
psycopg2 spells parameters otherwise, and SQLAlchemy sends an INSERT's rows as one
multi-row statement instead of a round trip each.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import TextClause
from sqlalchemy.engine import Connection


class Done:
    """A statement's rows (SELECT) and the rows it changed (rowcount)."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def scalars(self) -> list[Any]:
        return [row[0] for row in self.rows]


_SPELLED: dict[tuple[str, tuple[tuple[str, int], ...]], str] = {}


def run(connection: Connection, statement: TextClause,
        params: Mapping[str, Any] | None = None) -> Done:
    """One statement in the connection's transaction."""
    params = dict(params or {})
    if connection.dialect.name != "sqlite":
        result = connection.execute(statement, dict(params))
        return Done(list(result.all()) if result.returns_rows else [], result.rowcount)
    sql = statement.text
    lists = tuple((name, len(value)) for name, value in params.items()
                  if isinstance(value, list | tuple))
    if lists:
        key = (sql, lists)
        spelled = _SPELLED.get(key)
        if spelled is None:
            spelled = sql
            for name, count in lists:
                spelled = re.sub(rf":{name}\b", "(" + ", ".join(
                    f":{name}__{i}" for i in range(count)) + ")", spelled)
            if len(_SPELLED) < 4096:  # lists are at most a call's leases long
                _SPELLED[key] = spelled
        flat = {name: value for name, value in params.items()
                if not isinstance(value, list | tuple)}
        for name, _ in lists:
            flat.update({f"{name}__{i}": item for i, item in enumerate(params[name])})
        sql = spelled
        params = flat
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, params)
        return Done(list(cursor.fetchall()) if cursor.description else [], cursor.rowcount)
    finally:
        cursor.close()


def run_many(connection: Connection, statement: TextClause,
             rows: list[dict[str, Any]]) -> int:
    """A plain statement once per row, in the connection's transaction; the rows it changed."""
    if connection.dialect.name != "sqlite":
        return int(connection.execute(statement, rows).rowcount)
    cursor = connection.connection.cursor()
    try:
        cursor.executemany(statement.text, rows)
        return int(cursor.rowcount)
    finally:
        cursor.close()

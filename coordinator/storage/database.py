"""Engine creation: SQLite in WAL mode by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Table, event, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine

from coordinator.storage import limits, models  # noqa: F401  (tables; stored-size limits)

SQLITE_CACHE_KIB = 2048  # page cache per SQLite connection (SQLite's own default is ~2 MB)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'farm.db').resolve()}"


def open_database(url: str) -> Engine:
    """Create the engine and the tables.

    SQLite runs in WAL mode with synchronous=NORMAL: a killed coordinator loses
    no committed transaction (only a power cut could lose the last few).
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    SQLModel.metadata.create_all(engine)
    add_missing_columns(engine)
    create_missing_indexes(engine)
    return engine


def add_missing_columns(engine: Engine, tables: Iterable[Table] | None = None) -> list[str]:
    """Add nullable columns declared after a database was created; returns "table.column"s.

    `create_all` skips existing tables, so a column added to a model later would be missing
    from existing databases. Only nullable columns without a server default are added (the
    rows already there get NULL), which is the one column change that needs no migration.
    """
    added = []
    existing_tables = set(inspect(engine).get_table_names())
    for table in tables if tables is not None else SQLModel.metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {column["name"] for column in inspect(engine).get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise RuntimeError(f"{table.name}.{column.name} is new and NOT NULL: "
                                   "it needs a migration")
            kind = column.type.compile(dialect=engine.dialect)
            with engine.begin() as connection:
                connection.execute(text(
                    f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))
            added.append(f"{table.name}.{column.name}")
    return added


def create_missing_indexes(engine: Engine) -> None:
    """Add indexes declared after a database was created.

    `create_all` skips tables that already exist, indexes included; an index is safe to add
    at any time, so this is the one schema change that needs no migration tool.
    """
    for table in SQLModel.metadata.sorted_tables:
        for index in table.indexes:
            index.create(engine, checkfirst=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Each connection keeps its own page cache; with the pool's 5 kept connections this caps
    # SQLite's share of the coordinator's memory near 5 x 2 MiB however large the file grows.
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()

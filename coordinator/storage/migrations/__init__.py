"""Schema migrations (Alembic): the database's schema is whatever its revisions made it.

`upgrade` runs every revision a database lacks; the coordinator calls it on start and
`render-coordinator migrate` on demand. The first revision is the schema of 2026-12-05 and
also adopts databases made before migrations existed (it adds the tables, nullable columns
and indexes they lack). After it, a model change ships with a revision: `differences` must be
empty on a migrated database (tests/unit/test_migrations.py), and

    PYTHONPATH=$PWD python -m coordinator.storage.migrations revision "what changed"

writes one from the difference between the models and a database at head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Integer, MetaData, inspect, text
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
# PostgreSQL: coordinators starting together on one database migrate one after the other.
POSTGRES_LOCK = 0x46_50_4D_49  # "FPMI", an arbitrary application-wide advisory lock key


@dataclass(frozen=True)
class Migration:
    """What `upgrade` did: the revision before (None: none recorded) and after."""

    before: str | None
    after: str
    had_tables: bool  # before: a database made before migrations has tables but no revision

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def describe(self) -> str:
        if not self.changed:
            return f"already at {self.after} (head)"
        if self.before is not None:
            return f"upgraded from {self.before} to {self.after} (head)"
        if self.had_tables:
            return f"upgraded from a schema without revisions to {self.after} (head)"
        return f"created at {self.after} (head)"


def target_metadata() -> MetaData:
    """Every table's model, imported here so a revision sees the whole schema."""
    from sqlmodel import SQLModel

    import coordinator.storage.cluster
    import coordinator.storage.models
    import coordinator.storage.payment_models
    import coordinator.storage.quarantine
    import coordinator.storage.verification_queue  # noqa: F401

    return SQLModel.metadata


def config(connection: Connection | None = None) -> Config:
    settings = Config()
    settings.set_main_option("script_location", str(HERE))
    settings.set_main_option("path_separator", "os")
    if connection is not None:
        settings.attributes["connection"] = connection
    return settings


def head() -> str:
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> Migration:
    """Bring the database to the newest revision, in one transaction where the engine allows."""
    target = head()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_LOCK})
        before = current(connection)
        had_tables = bool(inspect(connection).get_table_names())
        if before != target:
            command.upgrade(config(connection), "head")
    return Migration(before, target, had_tables)


def compare_type(context: MigrationContext, _inspected: Any, _column: Any,
                 inspected_type: Any, model_type: Any) -> bool | None:
    """Alembic's type comparison, except that SQLite's one INTEGER (64 bits) is every integer
    type: a column widened for PostgreSQL (0004's BIGINT) needs no copy of a SQLite table."""
    if (context.dialect.name == "sqlite" and isinstance(inspected_type, Integer)
            and isinstance(model_type, Integer)):
        return False
    return None


def differences(engine: Engine) -> list[Any]:
    """What the models declare that the database lacks or has otherwise: [] when in step."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": compare_type})
        return list(compare_metadata(context, target_metadata()))


def revision(engine: Engine, message: str) -> None:
    """Write a new revision from the models' difference to `engine` (migrated to head first)."""
    upgrade(engine)
    with engine.begin() as connection:
        command.revision(config(connection), message=message, autogenerate=True,
                         rev_id=f"{int(head().split('_')[0]) + 1:04d}")


"""Schema migrations on SQLite: a new database, the previous release's database, the CLI.

`differences` is Alembic's autogenerate comparison: empty means the head revision builds
exactly what the models declare, so a model change without a revision fails here. The same
on PostgreSQL: tests/integration/test_release_upgrade.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import release_data
from sqlalchemy import text

from coordinator.cli import main as coordinator_cli
from coordinator.storage import migrations
from coordinator.storage.database import open_engine, sqlite_url


def test_autogenerate_finds_no_difference_between_the_models_and_a_new_database(
        empty_db_url: str) -> None:
    engine = open_engine(empty_db_url)
    migration = migrations.upgrade(engine)
    assert (migration.before, migration.after, migration.had_tables) == (
        None, migrations.head(), False)
    assert migration.describe() == f"created at {migrations.head()} (head)"
    assert migrations.differences(engine) == []
    again = migrations.upgrade(engine)
    assert not again.changed and again.describe().startswith("already at")


@pytest.mark.sqlite_only(reason="the release's SQLite file; its PostgreSQL dump upgrades in "
                         "integration/test_release_upgrade.py")
def test_the_previous_releases_database_upgrades_to_the_models(tmp_path: Path) -> None:
    engine = open_engine(release_data.restore("sqlite", tmp_path / "farm"))
    try:
        release_data.assert_upgrades(engine)
    finally:
        engine.dispose()


def test_a_missing_column_the_first_revision_cannot_fill_is_one_clear_error(
        empty_db_url: str) -> None:
    engine = open_engine(empty_db_url)
    with engine.begin() as db:  # a table of a schema older than any release: no name column
        db.execute(text("CREATE TABLE node (node_id VARCHAR PRIMARY KEY)"))
    with pytest.raises(RuntimeError, match=r"node\.name is missing and NOT NULL"):
        migrations.upgrade(engine)


@pytest.mark.sqlite_only(reason="`migrate --data-dir` opens the data dir's SQLite file")
def test_migrate_says_what_it_did_in_one_line(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    new = tmp_path / "new"
    new.mkdir()
    assert coordinator_cli(["migrate", "--data-dir", str(new)]) == 0
    assert capsys.readouterr().out == (
        f"{sqlite_url(new)}: created at {migrations.head()} (head)\n")
    assert coordinator_cli(["migrate", "--data-dir", str(new)]) == 0
    assert capsys.readouterr().out == (
        f"{sqlite_url(new)}: already at {migrations.head()} (head)\n")
    release_data.restore("sqlite", tmp_path / "old")
    assert coordinator_cli(["migrate", "--db", sqlite_url(tmp_path / "old")]) == 0
    assert capsys.readouterr().out == (f"{sqlite_url(tmp_path / 'old')}: upgraded from a "
                                       f"schema without revisions to {migrations.head()} (head)\n")
    assert coordinator_cli(["migrate", "--data-dir", str(tmp_path / "absent")]) == 2
    unreachable = "postgresql+psycopg2://nobody:secret@127.0.0.1:1/x"
    assert coordinator_cli(["migrate", "--db", unreachable]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert errors[0] == f"render-coordinator: no data dir {tmp_path / 'absent'}"
    assert len(errors) == 2 and errors[1].startswith(
        "render-coordinator: migrate postgresql+psycopg2://nobody:***@127.0.0.1:1/x: ")


def test_a_bare_postgresql_url_opens_with_the_installed_driver() -> None:
    """README and DEPLOY write `postgresql://…`; SQLAlchemy 2.1 alone would load psycopg 3."""
    from coordinator.storage.database import database_url, open_engine

    assert database_url("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert database_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert database_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"
    engine = open_engine("postgresql://postgres@127.0.0.1:5432/test")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("select 1").scalar() == 1
    engine.dispose()

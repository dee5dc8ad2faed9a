"""Shared fixtures: real processes, real Blender, loopback gRPC."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from coordinator.cli import MACHINE_SCORE_ENV
from coordinator.storage.database import sqlite_url
from frameproof.localfarm import LOCAL_POSTGRES, LocalFarm, postgres_server_for_tests

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SCENE = ROOT / "samples" / "spinning_cube.blend"
SHARED_SCENES = ROOT.parent / "shared" / "scenes" / "bat"

# Coordinators started by tests take this as their machine's benchmark score instead of
# measuring it (10-30 s each on a loaded box). tests/e2e/test_pricing_e2e.py removes it and
# measures.
os.environ.setdefault(MACHINE_SCORE_ENV, "1.0")


@pytest.fixture
def shared_scenes() -> Path:
    """The third-party scenes beside the checkout; tests skip when they are absent."""
    if not SHARED_SCENES.is_dir():
        pytest.skip("../shared/scenes is not present")
    return SHARED_SCENES


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[LocalFarm]:
    """A coordinator-and-nodes farm of real processes; everything stopped afterwards."""
    with LocalFarm(tmp_path / "farm", lease_seconds=4.0) as local_farm:
        yield local_farm


# FRAMEPROOF_TEST_DB=postgresql (`make test-pg`): every test that makes a coordinator store or
# a farm runs it on PostgreSQL, each on a database of its own (see tests/README.md).
TEST_DB_SERVER = postgres_server_for_tests()
ON_POSTGRES = TEST_DB_SERVER is not None
POSTGRES_SERVER = TEST_DB_SERVER or LOCAL_POSTGRES


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only(reason): about SQLite itself; skipped by FRAMEPROOF_TEST_DB "
        "runs (make test runs it)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("sqlite_only")
    if ON_POSTGRES and marker is not None:
        pytest.skip(f"SQLite only: {marker.kwargs.get('reason') or marker.args[0]}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A FRAMEPROOF_TEST_DB run is the PostgreSQL half of the tests parametrized over both
    databases (`params=["sqlite", "postgresql"]`): `make test` already runs their SQLite case."""
    if not ON_POSTGRES:
        return
    sqlite = {item for item in items
              if "sqlite" in getattr(getattr(item, "callspec", None), "params", {}).values()}
    if sqlite:
        config.hook.pytest_deselected(items=list(sqlite))
        items[:] = [item for item in items if item not in sqlite]


@pytest.fixture
def db_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """This test's coordinator database, for `open_database`: a SQLite file in tmp_path, or
    under FRAMEPROOF_TEST_DB a PostgreSQL database of its own, already migrated, dropped
    afterwards."""
    if not ON_POSTGRES:
        return sqlite_url(tmp_path)
    return str(request.getfixturevalue("migrated_postgres_url"))


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest) -> str:
    """An empty database, schema untouched: SQLite in memory, or under FRAMEPROOF_TEST_DB a
    new PostgreSQL database of this test's own, dropped afterwards."""
    return str(request.getfixturevalue("postgres_url")) if ON_POSTGRES else "sqlite://"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new empty PostgreSQL database of this test's own, dropped afterwards.

    Its own name, so tests (and engineers' runs side by side) never share or drop each
    other's tables; skips when the server is unreachable.
    """
    with _new_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """A new empty PostgreSQL database shared by one module's tests, dropped afterwards
    (for Hypothesis tests, which take no per-test fixtures)."""
    with _new_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def _migrated_template() -> Iterator[str]:
    """One database per session at the head revision, the template of the migrated ones."""
    from coordinator.storage.database import open_database

    with _new_postgres_database(prefix="fp_template") as url:
        open_database(url).dispose()
        yield url


@pytest.fixture
def migrated_postgres_url(_migrated_template: str) -> Iterator[str]:
    """A new PostgreSQL database at the head revision, of this test's own, dropped afterwards.

    Copied from the session's migrated template (tens of milliseconds; migrating takes
    seconds), so no rows, sequences or locks carry over from another test.
    """
    with _new_postgres_database(template=make_url(_migrated_template).database) as url:
        yield url


@contextlib.contextmanager
def _new_postgres_database(prefix: str = "fp_test", template: str | None = None
                           ) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect() as db:
            db.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    except OperationalError:
        admin.dispose()
        if ON_POSTGRES or template is not None:  # a PostgreSQL run must not pass by skipping
            raise
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_SERVER}")
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with admin.connect() as db:
            db.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

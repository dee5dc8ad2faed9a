"""Shared fixtures: real processes, real Blender, loopback gRPC."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from coordinator.cli import MACHINE_SCORE_ENV
from frameproof.localfarm import LocalFarm

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SCENE = ROOT / "samples" / "spinning_cube.blend"
SHARED_SCENES = ROOT.parent / "shared" / "scenes" / "bat"
POSTGRES_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"

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



@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new empty PostgreSQL database of this test's own, dropped afterwards.

    Its own name, so tests (and engineers' runs side by side) never share or drop each
    other's tables; skips when the server on 127.0.0.1:5432 is unreachable.
    """
    with _new_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def _migrated_postgres() -> Iterator[str]:
    from coordinator.storage.database import open_database

    with _new_postgres_database() as url:
        open_database(url).dispose()
        yield url


@pytest.fixture
def migrated_postgres_url(_migrated_postgres: str) -> str:
    """A PostgreSQL database at the head revision, emptied for this test.

    One per session, its rows deleted before each test: migrating a new database per test
    would cost seconds each.
    """
    engine = create_engine(_migrated_postgres)
    with engine.begin() as db:
        tables = ", ".join(f'"{name}"' for name in inspect(db).get_table_names()
                           if name != "alembic_version")
        db.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return _migrated_postgres


@contextlib.contextmanager
def _new_postgres_database() -> Iterator[str]:
    name = f"fp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{POSTGRES_SERVER}/test", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as db:
            db.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        admin.dispose()
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with admin.connect() as db:
            db.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

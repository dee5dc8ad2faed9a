"""The previous release's farm (tests/data/release-2026-11-23), restored for upgrade tests.

Made by tests/data/make_release_farm.py with the code of 2026-11-23 (da2f59f): a settled
two-frame job, its burns, refund and an epoch's mint, in the schema of that release.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from coordinator.storage import migrations

RELEASE = Path(__file__).resolve().parent / "data" / "release-2026-11-23"
KINDS = ("sqlite", "postgresql")
# Tables the release did not have yet (bonds, budgets, pricing, job control, frame logs, ...).
NEWER_TABLES = {"pay_bond", "pay_slash", "job_budget", "blob_owner", "price_probe",
                "job_quote", "frame_timing", "job_control", "frame_log",
                "quarantined_record", "verification_trouble"}


def restore(kind: str, data_dir: Path, postgres_url: str | None = None) -> str:
    """Copy the release's data dir to `data_dir`, its database where it belongs; its URL.

    PostgreSQL: the release's dump is loaded into `postgres_url` (an empty database), which
    the data dir's saved config then names.
    """
    source = RELEASE / kind
    shutil.copytree(source, data_dir, ignore=shutil.ignore_patterns("farm.db.gz", "farm.sql"))
    if kind == "sqlite":
        (data_dir / "farm.db").write_bytes(gzip.decompress((source / "farm.db.gz").read_bytes()))
        return f"sqlite:///{data_dir.resolve() / 'farm.db'}"
    assert postgres_url is not None
    engine = create_engine(postgres_url)
    try:
        connection = engine.raw_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute((source / "farm.sql").read_text())
            connection.commit()
        finally:
            connection.close()
    finally:
        engine.dispose()
    saved = json.loads((data_dir / "coordinator.json").read_text())
    (data_dir / "coordinator.json").write_text(json.dumps({**saved, "db_url": postgres_url}))
    return postgres_url


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as db:
        return {table: db.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one()
                for table in inspect(db).get_table_names() if table != "alembic_version"}


def assert_upgrades(engine: Engine) -> None:
    """The release's database (restored on `engine`) migrates to the models, every row kept."""
    before = row_counts(engine)
    assert before["job"] == 1 and before["pay_payout"] == 1
    assert not NEWER_TABLES & set(before)
    assert migrations.differences(engine)  # the release's schema is behind the models
    migration = migrations.upgrade(engine)
    assert migration.describe() == (
        f"upgraded from a schema without revisions to {migrations.head()} (head)")
    assert migrations.differences(engine) == []
    after = row_counts(engine)
    assert {table: after[table] for table in before} == before
    assert set(after) >= NEWER_TABLES
    with engine.connect() as db:  # the column added since: there, empty on the old rows
        assert db.execute(text("SELECT count(*) FROM pay_chain_op WHERE node_id IS NULL")
                          ).scalar_one() == before["pay_chain_op"]
    assert not migrations.upgrade(engine).changed

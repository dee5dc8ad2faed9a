"""The previous release's farm upgrades and runs: SQLite and PostgreSQL.

`render-coordinator migrate` brings the release's database to the head revision (one line),
then a coordinator of this release serves it: the creator's job is listed with its frames and
receipts, and `ledger check` finds the ledger and the chain in agreement, running and stopped.
PostgreSQL's migration checks here too (the unit tier has SQLite's).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import release_data
from farm_helpers import coordinator_cli

from coordinator.storage import migrations
from coordinator.storage.database import open_engine
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb


def test_autogenerate_finds_no_difference_on_postgresql(postgres_url: str) -> None:
    engine = open_engine(postgres_url)
    try:
        assert migrations.upgrade(engine).describe() == f"created at {migrations.head()} (head)"
        assert migrations.differences(engine) == []
    finally:
        engine.dispose()


def test_the_previous_releases_postgresql_database_upgrades(tmp_path: Path,
                                                            postgres_url: str) -> None:
    engine = open_engine(release_data.restore("postgresql", tmp_path / "farm", postgres_url))
    try:
        release_data.assert_upgrades(engine)
    finally:
        engine.dispose()


def test_coordinators_starting_together_on_postgresql_migrate_once(postgres_url: str) -> None:
    engines = [open_engine(postgres_url) for _ in range(3)]
    results: list[migrations.Migration] = []
    threads = [threading.Thread(target=lambda e=e: results.append(migrations.upgrade(e)))
               for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(m.changed for m in results) == [False, False, True]
    assert migrations.differences(engines[0]) == []
    for engine in engines:
        engine.dispose()


@pytest.mark.parametrize("kind", release_data.KINDS)
def test_a_coordinator_serves_the_previous_releases_farm_after_migrate(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    farm_root = tmp_path / "farm"
    postgres = request.getfixturevalue("postgres_url") if kind == "postgresql" else None
    url = release_data.restore(kind, farm_root / "coordinator", postgres)
    migrated = coordinator_cli("migrate", "--data-dir", str(farm_root / "coordinator"))
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.splitlines() == [
        f"{url}: upgraded from a schema without revisions to {migrations.head()} (head)"]
    with LocalFarm(farm_root, lease_seconds=4.0) as farm:
        farm.creator_keypair.write_bytes(
            (release_data.RELEASE / kind / "creator-keypair.json").read_bytes())
        farm.start_coordinator(extra_args=("--db", url) if postgres else ())
        with farm.client() as client:
            listed = client.jobs.ListJobs(pb.ListJobsRequest(), timeout=30, wait_for_ready=True)
            (job,) = listed.jobs
            assert job.state == pb.JOB_STATE_DONE
            frames = client.jobs.ListFrames(pb.ListFramesRequest(job_id=job.job_id), timeout=30)
            assert [f.frame for f in frames.frames] == [1, 2]
            receipts = client.jobs.GetReceipts(pb.ReceiptsRequest(job_id=job.job_id), timeout=30)
            assert receipts.state == "settled" and receipts.refund_state == "landed"
            assert receipts.total_tokens_burned + receipts.refunded == receipts.escrowed
        running = coordinator_cli("ledger", "check", "--data-dir", str(farm.data_dir))
        assert running.returncode == 0, running.stdout + running.stderr
        farm.stop()
    stopped = coordinator_cli("ledger", "check", "--data-dir", str(farm.data_dir), "--json")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert json.loads(stopped.stdout)["ok"] is True

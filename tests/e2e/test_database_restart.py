"""A coordinator whose PostgreSQL connections were dropped (a server restart, an operator's
pg_terminate_backend) answers the next calls with statuses clients retry with a new
signature (ABORTED, coordinator/api/auth.py ``storage_failures_answered``), never UNKNOWN,
and serves again once the pool has reconnected, now that it pings only idle connections
(coordinator/storage/database.py). Real coordinator, real PostgreSQL.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, make_url

from frameproof.client import transient
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb


def drop_connections(url: str) -> int:
    """Terminate every backend of url's database (the coordinator's pool, its listeners)."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return len(connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %(db)s AND pid <> pg_backend_pid()",
                {"db": make_url(url).database}).fetchall())
    finally:
        admin.dispose()


def test_dropped_database_connections_are_answered_unavailable_then_served(
        postgres_url: str, tmp_path: Path) -> None:
    with LocalFarm(tmp_path / "farm") as farm:
        farm.start_coordinator(extra_args=("--db", postgres_url, "--no-verifier"))
        with farm.client() as client:
            client.jobs.ListJobs(pb.ListJobsRequest(), timeout=30)
            assert drop_connections(postgres_url) > 0
            codes = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    client.jobs.ListJobs(pb.ListJobsRequest(), timeout=30)
                    break
                except grpc.RpcError as error:
                    codes.append(error.code())
                    assert transient(error), (error.code(), error.details())
                    time.sleep(0.2)
            else:
                pytest.fail(f"still failing after a minute: {codes}")
        assert grpc.StatusCode.UNKNOWN not in codes

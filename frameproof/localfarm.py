"""A whole farm on one machine, as real processes: for the demo and the end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from frameproof.client import FarmClient
from frameproof.identity import load_or_create_keypair

DEMO_BOND_TOKENS = "10"  # the coordinator's default minimum bond
# Tests: run each farm's coordinator on a PostgreSQL database of its own instead of SQLite.
# "postgresql" means the server on 127.0.0.1:5432 (user postgres); or a SQLAlchemy server
# URL without the database name. The database is created on first start, dropped on exit.
TEST_DB_ENV = "FRAMEPROOF_TEST_DB"
LOCAL_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def postgres_server_for_tests() -> str | None:
    """The PostgreSQL server URL (no database name) that FRAMEPROOF_TEST_DB asks tests to use,
    or None for SQLite."""
    server = os.environ.get(TEST_DB_ENV, "")
    if server in ("", "sqlite"):
        return None
    return LOCAL_POSTGRES if server == "postgresql" else server.rstrip("/")


class LocalFarm:
    """Starts a coordinator and nodes as child processes; stops them all on exit."""

    def __init__(self, root: Path, *, lease_seconds: float = 60.0,
                 db_url: str | None = None) -> None:
        self.root = root
        self.lease_seconds = lease_seconds
        self.db_url = db_url
        self._made_database: str | None = None  # the URL of the database to drop on exit
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.address = ""
        (root / "logs").mkdir(parents=True, exist_ok=True)

    def start_coordinator(self, port: int = 0, extra_args: tuple[str, ...] = (),
                          env: dict[str, str] | None = None) -> str:
        """Start (or restart, on the same data dir) the coordinator; return its address."""
        log = open(self.root / "logs" / "coordinator.log", "ab")  # noqa: SIM115
        database = () if "--db" in extra_args else self._database_args()
        self.coordinator = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli", "serve",
             "--listen", f"127.0.0.1:{port}", "--data-dir", str(self.root / "coordinator"),
             "--lease-seconds", str(self.lease_seconds),
             "--heartbeat-seconds", str(max(0.5, self.lease_seconds / 6)), *database,
             *extra_args],
            stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        assert self.coordinator.stdout is not None
        line = self.coordinator.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"coordinator did not start; see {log.name}")
        # The line is printed once the server is started and reports SERVING.
        self.address = line.split()[-1]
        return self.address

    @property
    def data_dir(self) -> Path:
        return self.root / "coordinator"

    @property
    def database_url(self) -> str:
        """The URL of the coordinator's database (known once it started): the PostgreSQL
        database FRAMEPROOF_TEST_DB made for it, or the SQLite file in its data dir."""
        if self.db_url is not None:
            return self.db_url
        from coordinator.storage.database import sqlite_url

        return sqlite_url(self.data_dir)

    @property
    def creator_keypair(self) -> Path:
        """The test creator's wallet; made on first use."""
        return self.root / "creator-keypair.json"

    def client(self, keypair: Path | None = None) -> FarmClient:
        """A signed client as the creator (or as the owner of another keypair file)."""
        return FarmClient(self.address, load_or_create_keypair(keypair or self.creator_keypair))

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def bond_node(self, name: str, tokens: str = DEMO_BOND_TOKENS) -> None:
        """Airdrop test tokens to node `name`'s key and bond them, as its operator would with
        `render-node airdrop` and `render-node bond` (embedded chain and test clusters)."""
        from render_node import bonding

        keypair = load_or_create_keypair(self.root / name / "node-keypair.json")
        with FarmClient(self.address, keypair) as client:
            bonding.airdrop(client, tokens)
            bonding.post_bond(client, tokens)

    def start_node(self, name: str, *, threads: int = 1, extra_args: tuple[str, ...] = (),
                   bond: str | None = DEMO_BOND_TOKENS) -> subprocess.Popen[bytes]:
        """Start node `name`, first bonded with `bond` tokens (None: a fresh, unbonded key,
        which the coordinator gives only a new identity's bounded share of work)."""
        if bond is not None:
            self.bond_node(name, bond)
        log = open(self.root / "logs" / f"{name}.log", "ab")  # noqa: SIM115
        node = subprocess.Popen(
            [sys.executable, "-m", "render_node.cli", "run", "--coordinator", self.address,
             "--work-dir", str(self.root / name), "--threads", str(threads), "--name", name,
             # Nodes sharing one machine skip the first-start benchmark (demo and tests).
             "--benchmark-score", "1.0", *extra_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.nodes.append(node)
        return node

    def kill_coordinator(self) -> None:
        """SIGKILL: no chance to flush or say goodbye."""
        assert self.coordinator is not None
        os.killpg(self.coordinator.pid, signal.SIGKILL)
        self.coordinator.wait()

    def stop(self) -> None:
        for process in [*self.nodes, self.coordinator]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in [*self.nodes, self.coordinator]:
            if process is None:
                continue
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def _database_args(self) -> tuple[str, ...]:
        if self.db_url is None and (server := postgres_server_for_tests()):
            self.db_url = self._make_database(server)
        return ("--db", self.db_url) if self.db_url else ()

    def _make_database(self, server: str) -> str:
        from coordinator.storage.database import create_database

        url = create_database(server, prefix="fp_farm")
        self._made_database = url
        return url

    def _drop_database(self) -> None:
        if self._made_database is not None:
            from coordinator.storage.database import drop_database

            drop_database(self._made_database)
            self._made_database = None

    def __enter__(self) -> LocalFarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._drop_database()


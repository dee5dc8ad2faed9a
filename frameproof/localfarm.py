"""A whole farm on one machine, as real processes: for the demo and the end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class LocalFarm:
    """Starts a coordinator and nodes as child processes; stops them all on exit."""

    def __init__(self, root: Path, *, lease_seconds: float = 60.0) -> None:
        self.root = root
        self.lease_seconds = lease_seconds
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.address = ""
        (root / "logs").mkdir(parents=True, exist_ok=True)

    def start_coordinator(self, port: int = 0) -> str:
        """Start (or restart, on the same data dir) the coordinator; return its address."""
        log = open(self.root / "logs" / "coordinator.log", "ab")  # noqa: SIM115
        self.coordinator = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli", "serve",
             "--listen", f"127.0.0.1:{port}", "--data-dir", str(self.root / "coordinator"),
             "--lease-seconds", str(self.lease_seconds),
             "--heartbeat-seconds", str(max(0.5, self.lease_seconds / 6))],
            stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        )
        assert self.coordinator.stdout is not None
        line = self.coordinator.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"coordinator did not start; see {log.name}")
        self.address = line.split()[-1]
        wait_until_serving(self.address)
        return self.address

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def start_node(self, name: str, *, threads: int = 1) -> subprocess.Popen[bytes]:
        log = open(self.root / "logs" / f"{name}.log", "ab")  # noqa: SIM115
        node = subprocess.Popen(
            [sys.executable, "-m", "render_node.cli", "run", "--coordinator", self.address,
             "--work-dir", str(self.root / name), "--threads", str(threads), "--name", name],
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

    def __enter__(self) -> LocalFarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until_serving(address: str, timeout: float = 60.0) -> None:
    """Block until the coordinator's health service says SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2,
                                     wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

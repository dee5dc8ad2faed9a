"""Change notifications shared by every coordinator on one PostgreSQL database.

`JobEvents` (coordinator/events.py) wakes watchers in this process only. With several
coordinators on one database, a job submitted to one must wake the nodes long-polling
another, and a frame approved through one must wake the creator watching through another.
`SharedJobEvents` sends each change as a PostgreSQL NOTIFY on one channel and LISTENs on it:
every coordinator, this one included, turns what it hears into its local events.

One connection of its own (psycopg2, autocommit) both listens and notifies; it is read by the
event loop when its socket is readable, so nothing blocks or polls. Notifications sent in
one loop turn are coalesced into one NOTIFY (a burst of requeues is one statement). When the
connection is lost, events stay local until it is back (every second or so); long polls time
out and ask again meanwhile, so nothing waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from typing import Any

import psycopg2
import psycopg2.extensions

from coordinator.events import JobEvents
from coordinator.storage.cluster import libpq_dsn

log = logging.getLogger(__name__)

CHANNEL = "frameproof_events"
WORK = "work"
SETTLE = "settle"
CHECKS = "checks"
RECONNECT_SECONDS = 1.0
MAX_PAYLOAD = 7_000  # NOTIFY payloads stop at 8,000 bytes


class SharedJobEvents(JobEvents):
    """`JobEvents` whose changes reach every coordinator listening on the database."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.dsn = libpq_dsn(url)
        self.origin = uuid.uuid4().hex[:8]  # our own notifications were already applied
        self._connection: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[str] = set()
        self._flush_scheduled = False
        self._keeper: asyncio.Task[None] | None = None
        self.received = 0  # notifications from other coordinators (diagnostics, tests)

    async def start(self) -> None:
        """Listen now (so no change after start-up is missed), and keep listening."""
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(psycopg2.Error):
            self._connect()
        self._keeper = asyncio.create_task(self._keep_connected())

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        self._disconnect()

    # Local changes: applied here at once, then sent to the others.
    def changed(self, job_id: str) -> None:
        super().changed(job_id)
        self._send(f"job:{job_id}")

    def node_changed(self, node_id: str) -> None:
        super().node_changed(node_id)
        self._send(f"node:{node_id}")

    def work_queued(self) -> None:
        super().work_queued()
        self._send(WORK)

    def settle_soon(self) -> None:
        """Approved here, settled by the leader (which may be another coordinator)."""
        super().settle_soon()
        self._send(SETTLE)

    def checks_queued(self) -> None:
        """Queued here, checked by whichever coordinator's verifier asks first."""
        super().checks_queued()
        self._send(CHECKS)

    def _send(self, what: str) -> None:
        if self._loop is None:
            return
        self._pending.add(what)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, set()
        if self._connection is None or not pending:
            return
        payloads, current = [], self.origin
        for what in sorted(pending):  # "job:..." before "work": one payload, or a few
            if len(current) + 1 + len(what) > MAX_PAYLOAD:
                payloads.append(current)
                current = self.origin
            current += " " + what
        payloads.append(current)
        try:
            with self._connection.cursor() as cursor:
                for payload in payloads:
                    cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        except psycopg2.Error:
            log.warning("lost the notification connection; events stay local until it is back")
            self._disconnect()
            return
        self._drain()  # notifications that arrived while we were talking

    # Remote changes: read when the socket is readable.
    def _readable(self) -> None:
        try:
            self._connection.poll()
        except psycopg2.Error:
            log.warning("lost the notification connection; events stay local until it is back")
            self._disconnect()
            return
        self._drain()

    def _drain(self) -> None:
        if self._connection is None:
            return
        notifies, self._connection.notifies[:] = list(self._connection.notifies), []
        for notify in notifies:
            origin, _, rest = notify.payload.partition(" ")
            if origin == self.origin:
                continue
            self.received += 1
            for what in rest.split():
                if what == WORK:
                    JobEvents.work_queued(self)
                elif what == SETTLE:
                    JobEvents.settle_soon(self)
                elif what == CHECKS:
                    JobEvents.checks_queued(self)
                elif what.startswith("job:"):
                    JobEvents.changed(self, what[4:])
                elif what.startswith("node:"):
                    JobEvents.node_changed(self, what[5:])

    def _connect(self) -> None:
        connection = psycopg2.connect(self.dsn)
        connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        self._connection = connection
        assert self._loop is not None
        self._loop.add_reader(connection.fileno(), self._readable)
        # Changes while we were away are unknown: wake everyone, they look for themselves.
        JobEvents.work_queued(self)
        JobEvents.checks_queued(self)
        for job_id in list(self._events.keys()):
            JobEvents.changed(self, job_id)

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(connection.fileno())
        with contextlib.suppress(Exception):
            connection.close()

    async def _keep_connected(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_SECONDS)
            if self._connection is not None:
                continue
            try:
                self._connect()
                log.info("notification connection back (pid %d)", os.getpid())
            except psycopg2.Error as error:
                log.debug("notification connection still down: %s", error)

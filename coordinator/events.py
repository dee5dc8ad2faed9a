"""In-process change notifications, so watchers wake on change instead of polling."""

from __future__ import annotations

import asyncio
import contextlib
import weakref


class JobEvents:
    """One event per watched job; `changed` wakes every current watcher of it."""

    def __init__(self) -> None:
        # Weak values: an event lives only while a watcher waits on it, so jobs that were
        # watched once (the watcher gone, the job finished) leave nothing behind.
        self._events: weakref.WeakValueDictionary[str, asyncio.Event] = (
            weakref.WeakValueDictionary())
        self._work = asyncio.Event()
        self._checks = asyncio.Event()
        self._settle = asyncio.Event()

    def subscribe(self, job_id: str) -> asyncio.Event:
        """Take the event *before* reading the job, so no change slips between."""
        return self._events.setdefault(job_id, asyncio.Event())

    def changed(self, job_id: str) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()

    def subscribe_node(self, node_id: str) -> asyncio.Event:
        """Set when something that may lift the node's own lease limits happened (a frame of
        it verified): a bounded new identity waits on this instead of re-asking on a timer."""
        return self._events.setdefault(f"node:{node_id}", asyncio.Event())

    def node_changed(self, node_id: str) -> None:
        event = self._events.pop(f"node:{node_id}", None)
        if event is not None:
            event.set()

    def subscribe_work(self) -> asyncio.Event:
        """Set when tasks become leasable (a new job, a requeue): idle nodes wake on it."""
        return self._work

    def work_queued(self) -> None:
        event, self._work = self._work, asyncio.Event()
        event.set()

    def subscribe_checks(self) -> asyncio.Event:
        """Set when checks join the verification queue (a frame delivered, a check handed
        back or lapsed): idle verifiers wait on it instead of asking every half second."""
        return self._checks

    def checks_queued(self) -> None:
        event, self._checks = self._checks, asyncio.Event()
        event.set()

    def settle_soon(self) -> None:
        """A task's last frame was approved: the settlement sweep runs now rather than at
        its next tick, so a finished job is charged, settled and reported without waiting."""
        self._settle.set()

    async def settle_due(self, timeout: float) -> None:
        """Return when settle_soon was called, or after timeout seconds."""
        await self.wait(self._settle, timeout)
        self._settle.clear()

    @staticmethod
    async def wait(event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    @staticmethod
    async def wait_any(events: list[asyncio.Event], timeout: float) -> None:
        """Return when any of `events` is set, or after timeout seconds."""
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

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

    def subscribe(self, job_id: str) -> asyncio.Event:
        """Take the event *before* reading the job, so no change slips between."""
        return self._events.setdefault(job_id, asyncio.Event())

    def changed(self, job_id: str) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()

    def subscribe_work(self) -> asyncio.Event:
        """Set when tasks become leasable (a new job, a requeue): idle nodes wake on it."""
        return self._work

    def work_queued(self) -> None:
        event, self._work = self._work, asyncio.Event()
        event.set()

    @staticmethod
    async def wait(event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

"""The storage thread: the event loop hands database work here and awaits it.

grpc.aio handlers are coroutines on one event loop; a synchronous query run there stops
every other call until it returns. One dedicated thread runs the hot path's transactions in
arrival order instead: the loop keeps reading, writing and checking signatures meanwhile,
and the transactions of one process never contend with each other for SQLite's write lock.
Running them one at a time also keeps what the synchronous code relied on (a node's two
concurrent LeaseTask calls are decided one after the other).

`backlog` (calls handed over and not yet answered) lets a servicer shed work that can wait:
an overloaded coordinator answers new lease requests "retry later" at once instead of queueing
them behind the heartbeats and completions that keep work already leased alive.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class StorageExecutor:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage")
        self._backlog = 0  # changed on the event loop only

    @property
    def backlog(self) -> int:
        """Calls waiting for or running on the storage thread."""
        return self._backlog

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the storage thread; its exceptions are raised here."""
        loop = asyncio.get_running_loop()
        self._backlog += 1
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        finally:
            self._backlog -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True)

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
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any],
             tuple[Any, ...], dict[str, Any]]


class StorageExecutor:
    """One thread fed by a queue. It answers each call's asyncio future directly
    (call_soon_threadsafe) instead of through a concurrent.futures.Future chained to it as
    run_in_executor does: that chaining (locks, state copies, callbacks) was about a tenth of
    the event loop's CPU in the frame-cycle bench (docs/BENCHMARKS.md, "cycles")."""

    def __init__(self, name: str = "storage") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        self._backlog = 0  # changed on the event loop only

    @property
    def backlog(self) -> int:
        """Calls waiting for or running on the storage thread."""
        return self._backlog

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the storage thread; its exceptions are raised here. A call cancelled
        before the thread reaches it does not run (as with run_in_executor)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._backlog += 1
        try:
            self._jobs.put((loop, future, fn, args, kwargs))
            return await future
        finally:
            self._backlog -= 1

    def close(self) -> None:
        """Finish the calls queued so far, then stop the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn, args, kwargs = job
            if future.cancelled():  # read across threads: at worst a cancelled call runs
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:  # handed to the caller
                _answer(loop, future, None, error)
            else:
                _answer(loop, future, result, None)


def _answer(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
            error: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

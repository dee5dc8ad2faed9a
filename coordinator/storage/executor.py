"""The storage thread: the event loop hands database work here and awaits it.

grpc.aio handlers are coroutines on one event loop; a synchronous query run there stops
every other call until it returns. One dedicated thread runs the hot path's transactions in
arrival order instead: the loop keeps reading, writing and checking signatures meanwhile,
and the transactions of one process never contend with each other for SQLite's write lock.
Running them one at a time also keeps what the synchronous code relied on (a node's two
concurrent LeaseTask calls are decided one after the other).

`backlog` (calls handed over and not yet answered) lets a servicer hold back work that can
wait: an overloaded coordinator parks new lease requests on the event loop (`room`) instead of
queueing them behind the heartbeats and completions that keep work already leased alive.
"""

from __future__ import annotations

import asyncio
import collections
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
        # Callers waiting in `room` (event loop only), first come first served.
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = (
            collections.deque())

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
            self._let_in()

    async def room(self, below: int, timeout: float) -> bool:
        """Wait until fewer than `below` calls are here, at most `timeout` seconds; whether
        there is room. The wait costs nothing but a future on the loop, and one waiter is let
        in per call that finishes, in arrival order, so a crowd of waiters does not all wake
        to find the room taken again (the two-coordinator bench at 1,000 nodes: leases
        answered "retry later" came back 2.4 times a frame, each call signed and journalled)."""
        self._let_in()  # drops waiters gone meanwhile, lets the first in if there is room
        if self._backlog < below and not self._waiting:
            return True
        if timeout <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((below, waiter))
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False

    def _let_in(self) -> None:
        while self._waiting:
            below, waiter = self._waiting[0]
            if waiter.done():  # timed out or cancelled meanwhile
                self._waiting.popleft()
                continue
            if self._backlog >= below:
                return
            self._waiting.popleft()
            waiter.set_result(None)
            return

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

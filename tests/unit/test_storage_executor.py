"""The storage thread's executor: one call at a time in arrival order, errors and
cancellations handed back as run_in_executor would."""

from __future__ import annotations

import asyncio
import threading

import pytest

from coordinator.storage.executor import StorageExecutor


def test_calls_run_one_at_a_time_in_arrival_order() -> None:
    async def scenario() -> list[str]:
        executor = StorageExecutor()
        ran: list[str] = []
        release = threading.Event()
        try:
            blocker = asyncio.create_task(executor.run(release.wait, 10))
            while executor.backlog < 1:
                await asyncio.sleep(0.001)
            calls = [asyncio.create_task(executor.run(ran.append, f"call {n}")) for n in range(3)]
            while executor.backlog < 4:
                await asyncio.sleep(0.001)
            assert ran == [], "nothing overtakes the running call"
            release.set()
            await asyncio.gather(blocker, *calls)
            assert executor.backlog == 0
            return ran
        finally:
            release.set()
            executor.close()

    assert asyncio.run(scenario()) == ["call 0", "call 1", "call 2"]


def test_errors_reach_the_caller_and_a_cancelled_call_does_not_run() -> None:
    def fail() -> None:
        raise ValueError("no such lease")

    async def scenario() -> list[str]:
        executor = StorageExecutor()
        ran: list[str] = []
        release = threading.Event()
        try:
            with pytest.raises(ValueError, match="no such lease"):
                await executor.run(fail)
            blocker = asyncio.create_task(executor.run(release.wait, 10))
            while executor.backlog < 1:
                await asyncio.sleep(0.001)
            cancelled = asyncio.create_task(executor.run(ran.append, "cancelled"))
            await asyncio.sleep(0.01)
            cancelled.cancel()
            release.set()
            await blocker
            assert await executor.run(ran.append, "after") is None
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            return ran
        finally:
            release.set()
            executor.close()

    assert asyncio.run(scenario()) == ["after"]


def test_room_lets_waiters_in_one_per_finished_call_in_arrival_order() -> None:
    """StorageExecutor.room: callers wait on the loop while `below` calls are here; each call
    that finishes lets the first live waiter in; a waiter that gave up does not hold back
    the next caller."""

    async def scenario() -> None:
        executor = StorageExecutor()
        releases = [threading.Event() for _ in range(2)]
        try:
            busy = [asyncio.create_task(executor.run(r.wait, 10)) for r in releases]
            while executor.backlog < 2:
                await asyncio.sleep(0.001)
            assert await executor.room(3, 0), "room below 3: at once"
            assert not await executor.room(2, 0), "no room, no time to wait"
            assert not await executor.room(2, 0.05), "no room within the timeout"
            order: list[str] = []

            async def wait(name: str) -> None:
                assert await executor.room(2, 10)
                order.append(name)

            gave_up = asyncio.create_task(executor.room(2, 10))
            waiters = [asyncio.create_task(wait(name)) for name in ("first", "second")]
            await asyncio.sleep(0.01)
            gave_up.cancel()  # a caller gone (its client hung up) is skipped
            assert order == []
            releases[0].set()
            await busy[0]
            await asyncio.sleep(0.01)
            assert order == ["first"], "one let in per finished call"
            releases[1].set()
            await busy[1]
            await asyncio.gather(*waiters)
            assert order == ["first", "second"]
            assert await executor.room(1, 0), "nobody waits, nothing here: room at once"
        finally:
            for release in releases:
                release.set()
            executor.close()

    asyncio.run(scenario())

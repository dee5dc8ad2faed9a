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

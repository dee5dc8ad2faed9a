"""What the coordinator keeps in memory stays bounded however long it runs (bench/load_bench)."""

from __future__ import annotations

import asyncio

from cachetools import LRUCache

from coordinator.api.node_service import TOUCH_SECONDS, NodeServicer
from coordinator.events import JobEvents
from coordinator.storage.database import open_database
from coordinator.storage.models import JobRecord, SceneRecord
from coordinator.storage.store import FarmStore
from frameproof.auth import NonceCache


def test_nonces_are_refused_within_the_window_and_forgotten_after_it():
    nonces = NonceCache(window_seconds=120)
    assert nonces.first_use("key:n1", now=0.0)
    assert not nonces.first_use("key:n1", now=119.0), "a replay within the window is refused"
    for second in range(1, 300):
        assert nonces.first_use(f"key:{second}", now=float(second))
    assert len(nonces) <= 121, "nonces older than the window are pruned"


def test_a_job_event_lives_only_while_someone_watches():
    async def scenario() -> None:
        events = JobEvents()
        watched = events.subscribe("job")
        assert events.subscribe("job") is watched
        del watched
        assert events.subscribe("other") is not None
        assert len(events._events) == 0, "no watcher left: nothing kept"
        watched = events.subscribe("job")
        events.changed("job")
        assert watched.is_set()

    asyncio.run(scenario())


class CountingStore(FarmStore):
    """A real store that counts the lookups the servicer's caches should save."""

    job_reads = 0

    def get_job(self, job_id: str) -> JobRecord | None:
        self.job_reads += 1
        return super().get_job(job_id)


def _servicer(db_url: str) -> tuple[NodeServicer, CountingStore]:
    store = CountingStore(open_database(db_url))
    servicer = NodeServicer(store, None, None, JobEvents(), None,  # type: ignore[arg-type]
                            heartbeat_seconds=1.0)
    return servicer, store


def test_evicted_job_settings_are_read_again_from_the_database(db_url: str):
    servicer, store = _servicer(db_url)
    store.save_scene(SceneRecord(scene_id="scene", main_file="a.blend", info_json="{}",
                                 created_at=0.0))
    for job_id, samples in (("a", 7), ("b", 9)):
        store.create_job(JobRecord(job_id=job_id, scene_id="scene", frames_spec="1",
                                   settings_json=f'{{"samples": {samples}}}', created_at=0.0,
                                   updated_at=0.0), [[1]], 0.0)
    servicer._settings = LRUCache(maxsize=1)
    first = servicer._job_settings("a")
    assert first is not None and first.samples == 7
    assert servicer._job_settings("a") is first and store.job_reads == 1
    settings_b = servicer._job_settings("b")
    assert settings_b is not None and settings_b.samples == 9
    again = servicer._job_settings("a")  # evicted by "b": read again, same answer
    assert again is not None and again.samples == 7 and store.job_reads == 3
    assert servicer._job_settings("missing") is None


def test_liveness_writes_remember_only_recent_nodes(db_url: str):
    servicer, _ = _servicer(db_url)
    due = [servicer._touch_due(f"node-{index}", now=1000.0) for index in range(100)]
    assert all(due), "each node's first call is written"
    assert not servicer._touch_due("node-0", now=1000.0 + TOUCH_SECONDS / 2), \
        "a node is written at most once per TOUCH_SECONDS"
    assert servicer._touch_due("late", now=1000.0 + TOUCH_SECONDS * 2)
    assert set(servicer._touched) == {"late"}, "stale entries are dropped"


def test_a_node_event_wakes_only_that_node_and_lives_only_while_it_waits():
    async def scenario() -> None:
        events = JobEvents()
        mine = events.subscribe_node("a")
        other = events.subscribe_node("b")
        work = events.subscribe_work()
        started = asyncio.get_running_loop().time()
        waiting = asyncio.create_task(events.wait_any([work, mine], 10.0))
        await asyncio.sleep(0)
        events.node_changed("a")
        await waiting
        assert asyncio.get_running_loop().time() - started < 5.0, "woken, not timed out"
        assert mine.is_set() and not other.is_set() and not work.is_set()
        await events.wait_any([work, other], 0.05)  # nothing set: returns at the timeout
        del mine, other
        await asyncio.sleep(0)  # the cancelled waiters finish
        assert len(events._events) == 0, "no waiter left: nothing kept"

    asyncio.run(scenario())

"""Coordinators sharing one PostgreSQL database write the same rows (threads here, each with
an engine of its own, as two processes would have).

SQLite has one writer at a time and each coordinator applies verdicts on its event loop, so
reads and the writes that follow them never interleave there; on PostgreSQL two coordinators
read the same row at once and the later commit overwrote the earlier one. A third
connection holds the contended row while both verdicts reach it, so the interleaving that
lost an update is the one that runs.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from coordinator.domain.ledger import OpKind, OpState
from coordinator.storage.bond_rows import BondRows
from coordinator.storage.chain_ops import ChainOps
from coordinator.storage.database import open_database
from coordinator.storage.models import (
    JobRecord,
    NodeStandingRecord,
    ReputationEventRecord,
    SceneRecord,
    TaskRecord,
)
from coordinator.storage.payment_models import BondRecord, ChainOpRecord, SlashRecord
from coordinator.storage.proof import ProofStore, VerificationGone, VerificationResult
from coordinator.storage.store import FarmStore, FrameOutputRecord, SchedulingPolicy

POLICY = SchedulingPolicy(lease_seconds=10, max_attempts=3, max_failures_per_node=2)
PASS = VerificationResult(passed=True, reason="all 3 tiles passed", mode="exact",
                          pixel_sha256="", details={})


@pytest.fixture
def engines(migrated_postgres_url: str) -> Iterator[list[Engine]]:
    """Three engines on one database: the held row's, and one per coordinator."""
    engines = [open_database(migrated_postgres_url) for _ in range(3)]
    yield engines
    for engine in engines:
        engine.dispose()


def delivered_checks(engine: Engine, frames: int, chunk: int = 1) -> list[str]:
    """A node delivered a job's `frames` frames in tasks of `chunk` frames; their checks are
    leased to v0, v1..."""
    store, proof = FarmStore(engine, POLICY), ProofStore(engine, POLICY)
    store.save_scene(SceneRecord(scene_id="scene", main_file="a.blend", info_json="{}",
                                 created_at=0.0))
    store.create_job(JobRecord(job_id="job", scene_id="scene", frames_spec="",
                               settings_json="{}", created_at=0.0, updated_at=0.0),
                     [list(range(n, min(n + chunk, frames + 1)))
                      for n in range(1, frames + 1, chunk)], 0.0)
    with Session(engine) as session:  # made by the node's first completed lease
        session.add(NodeStandingRecord(node_id="node"))
        session.commit()
    while (task := store.lease_next_task("node", now=1.0)) is not None:
        assert task.lease_id
        numbers = range(task.first_frame, task.last_frame + 1)
        store.complete_task(task.lease_id, "node", [FrameOutputRecord(
            frame=n, sha256=hashlib.sha256(f"{task.task_id}{n}".encode()).hexdigest(),
            size=1, extension="png", render_seconds=1.0) for n in numbers], 1.0,
            frozenset(numbers))
    checks = [proof.lease_verification(f"v{n}", now=2.0) for n in range(frames)]
    return [check.verification_id for check in checks if check is not None]


def together(holder: Engine, held_row: str, calls: list[Callable[[], object]]) -> list[object]:
    """Run each call on its own thread while `held_row` is locked by another transaction,
    starting the next once the previous waits for a lock (so they queue in that order);
    let go once all wait. Returns what each returned, or the VerificationGone it raised."""
    outcomes: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            outcomes[index] = calls[index]()
        except VerificationGone as gone:
            outcomes[index] = gone

    with holder.connect() as connection:
        transaction = connection.begin()
        connection.execute(text(f"SELECT 1 FROM {held_row} FOR UPDATE"))
        threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
        for started, thread in enumerate(threads, start=1):
            thread.start()
            deadline = time.monotonic() + 30
            while waiting_on_locks(holder) < started and time.monotonic() < deadline:
                time.sleep(0.05)
            assert waiting_on_locks(holder) == started, "each call waits for the held row"
        transaction.commit()
    for thread in threads:
        thread.join(30)
    return outcomes


def finish(engine: Engine, check: str, verifier: str) -> Callable[[], object]:
    return lambda: ProofStore(engine, POLICY).finish_verification(check, verifier, PASS, 3.0)


def waiting_on_locks(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar_one())


def standing(engine: Engine) -> tuple[NodeStandingRecord, int]:
    with Session(engine) as session:
        record = session.get(NodeStandingRecord, "node")
        assert record is not None
        events = session.exec(select(ReputationEventRecord)
                              .where(ReputationEventRecord.node_id == "node")).all()
        return record, len(events)


def test_two_coordinators_verifying_one_nodes_frames_both_count(engines: list[Engine]) -> None:
    """Two of a node's frames approved at once by two coordinators' verifiers: the node's
    standing counts both (it was read unlocked, so the later write dropped one)."""
    first, second = delivered_checks(engines[0], frames=2)
    together(engines[0], "node_standing WHERE node_id = 'node'",
             [finish(engines[1], first, "v0"), finish(engines[2], second, "v1")])
    record, events = standing(engines[0])
    assert (record.verified, record.consecutive_verified, events) == (2, 2, 2)


def test_a_tasks_last_two_frames_approved_at_once_finish_the_task(
        engines: list[Engine]) -> None:
    """Both frames of one task approved at once by two coordinators' verifiers: each looks
    for frames still waiting only while it holds the node's standing, so the second sees
    the first's approval and the task is done."""
    first, second = delivered_checks(engines[0], frames=2, chunk=2)
    outcomes = together(engines[0], "node_standing WHERE node_id = 'node'",
                        [finish(engines[1], first, "v0"), finish(engines[2], second, "v1")])
    assert sorted(o.task_done for o in outcomes) == [False, True]  # type: ignore[attr-defined]
    with Session(engines[0]) as session:
        assert session.exec(select(TaskRecord.state)).all() == ["done"]


def test_a_verdict_submitted_to_two_coordinators_at_once_applies_once(
        engines: list[Engine]) -> None:
    """A verifier's retried SubmitVerification reaches another coordinator while the first
    is still applying it: one applies, the other finds the check no longer leased."""
    (check,) = delivered_checks(engines[0], frames=1)
    outcomes = together(engines[0], f"verification WHERE verification_id = '{check}'",
                        [finish(engines[1], check, "v0"), finish(engines[2], check, "v0")])
    assert sorted(type(o).__name__ for o in outcomes) == ["FinishedVerification",
                                                         "VerificationGone"]
    record, events = standing(engines[0])
    assert (record.verified, events) == (1, 1)


def test_a_bond_landing_while_the_bond_is_slashed_keeps_the_slash(
        engines: list[Engine]) -> None:
    """A node's bond top-up lands (any coordinator) while the leader slashes the bond: the
    landing added its amount to the bond it had read before the slash, writing the slashed
    tokens back (the ledger then disagreed with the bond's row)."""
    with Session(engines[0]) as session:
        session.add(BondRecord(node_id="node", held=10, posted=10, created_at=0.0,
                               updated_at=0.0))
        session.add(ChainOpRecord(op_id="topup", purpose="bond:node:2", kind=OpKind.BOND,
                                  owner="node", amount=10, node_id="node", state=OpState.SENT,
                                  signature="sig", created_at=0.0, updated_at=0.0))
        session.commit()

    def plan(held: int) -> tuple[SlashRecord, list[ChainOpRecord]]:
        return SlashRecord(slash_id="s1", node_id="node", event_id=1, amount=held // 2,
                           to_creators=0, to_treasury=held // 2, rejected_frames=1,
                           created_at=1.0), []

    slashed, landed = together(engines[0], "pay_bond WHERE node_id = 'node'", [
        lambda: BondRows(engines[1]).slash("node", 1, 1.0, plan),
        lambda: ChainOps(engines[2]).mark_landed("topup", "sig", 2.0)])
    assert slashed is not None and landed is True
    bond = BondRows(engines[0]).get("node")
    assert bond is not None and (bond.held, bond.posted, bond.slashed) == (15, 20, 5)

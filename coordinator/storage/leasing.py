"""The node hot path in a few statements each: lease, heartbeat, complete.

The servicer runs these on the storage thread (coordinator/storage/executor.py), never on
the event loop. Each is one short transaction of plain SQL (the ORM's per-call overhead was
most of a frame cycle's CPU: docs/BENCHMARKS.md, "cycles"), which on SQLite goes straight to
the driver's cursor (coordinator/storage/driver.py):

- lease: the node's standing and bond (one join), a window of the next queued tasks it may
  take (one index scan; on PostgreSQL `FOR UPDATE OF t SKIP LOCKED`, so coordinators
  sharing a database never wait on each other's candidates), the policy's order
  (coordinator/domain/scheduling.py), then a compare-and-set claim that also records the
  lease's start (task.leased_at).
- heartbeat: one UPDATE.
- complete: the task (with its lease's start), the owners of its images and the node's
  standing in three reads, then results, verifications, task state, the node's count and the
  frame timings written in the same transaction. DeliverTasks runs its ownership, completion
  and claim in one transaction (`transaction`, `claim`).

A bounded new identity's limits (leases in flight, frames per job: coordinator/payments/
bonds.py) are one count and a join in the same transaction. Creators' job priorities, the
rare case, keep the general path in FarmStore.lease_next_task.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from coordinator.domain.errors import DomainError
from coordinator.domain.reputation import NodeStanding
from coordinator.domain.scheduling import (
    CANDIDATE_WINDOW,
    MAX_FRAMES_PER_CALL,
    MAX_TASKS_PER_CALL,
    Candidate,
    fits_node,
    order_candidates,
    within_job_share,
)
from coordinator.domain.states import UNKNOWN_LEASE, TaskState, lease_refusal
from coordinator.payments.bonds import LeaseLimits, effective_standing, lease_limits
from coordinator.storage import driver
from coordinator.storage.models import NodeStandingRecord
from coordinator.storage.store import (
    ClaimBudgets,
    FarmStore,
    FrameOutputRecord,
    JobFacts,
    JobFactsCache,
    LeaseLost,
)

CLAIM_TRIES = 3  # windows read when other claims took every candidate first (SQLite)

_GATE = text("""
SELECT s.score, s.consecutive_verified, s.verified, s.failed, s.delivered,
       s.frames_since_failure, s.quarantined, b.held, b.unbond_requested_at,
       n.benchmark_score
FROM node n
LEFT JOIN node_standing s ON s.node_id = n.node_id
LEFT JOIN pay_bond b ON b.node_id = n.node_id
WHERE n.node_id = :node
""")
_SEEN = text("UPDATE node SET last_seen_at = :now WHERE node_id = :node")
_ANY_PRIORITY = text("SELECT 1 FROM job_control WHERE priority != 0 LIMIT 1")
_WINDOW = """
SELECT t.task_id, t.job_id, t.first_frame, t.last_frame, j.creator, j.scene_id, j.tier,
       t.queued_at, {held}
FROM task t JOIN job j ON j.job_id = t.job_id{share}
WHERE t.state = 'queued' AND j.cancelled = :no AND j.tier >= :rank{within}
  AND t.job_id NOT IN (SELECT job_id FROM job_budget WHERE paused = :yes)
  AND t.job_id NOT IN (SELECT job_id FROM job_control WHERE paused = :yes)
  AND t.task_id NOT IN (SELECT task_id FROM task_failure WHERE node_id = :node)
  AND t.job_id NOT IN (SELECT job_id FROM task_failure WHERE node_id = :node
                       GROUP BY job_id HAVING count(*) >= :max_failures)
ORDER BY t.queued_at, t.first_frame
LIMIT :window
"""
# A bounded node's frames of each job (leased, being verified or done), summed once by the
# ix_task_node index and joined to the candidates, which then keep it within its share.
_SHARE = """
LEFT JOIN (SELECT job_id, sum(last_frame - first_frame + 1) AS frames FROM task
           WHERE node_id = :node AND state IN ('leased', 'verifying', 'done')
           GROUP BY job_id) h ON h.job_id = t.job_id"""
_WITHIN = """
  AND (h.frames IS NULL OR h.frames + t.last_frame - t.first_frame + 1 <= :per_job)"""
_LEASES_HELD = text("SELECT count(*) FROM task WHERE node_id = :node AND state = 'leased'")
_CLAIM = text("""
UPDATE task SET state = 'leased', lease_id = :lease, node_id = :node,
       lease_expires_at = :expires, leased_at = :now, updated_at = :now
WHERE task_id = :task AND state = 'queued'
""")
_CLAIMED = text("SELECT lease_id FROM task WHERE lease_id IN :leases AND state = 'leased'"
               ).bindparams(bindparam("leases", expanding=True))
_EXTEND = text("""
UPDATE task SET lease_expires_at = :expires, updated_at = :now
WHERE lease_id = :lease AND node_id = :node AND state = 'leased'
""")
_EXTEND_MANY = text("""
UPDATE task SET lease_expires_at = :expires, updated_at = :now
WHERE lease_id IN :leases AND node_id = :node AND state = 'leased'
""").bindparams(bindparam("leases", expanding=True))
_TASK_OF_LEASE = text("""
SELECT task_id, job_id, first_frame, last_frame, state, node_id FROM task
WHERE lease_id = :lease
""")
_TASKS_OF_LEASES = """
SELECT task_id, job_id, first_frame, last_frame, state, node_id, lease_id, leased_at FROM task
WHERE lease_id IN :leases
"""
_RESULT = text("""
INSERT INTO frame_result (job_id, frame, task_id, node_id, blob_sha256, blob_size, extension,
    render_seconds, blender_version, device, verdict, verification, pixel_sha256, charged,
    receipt_signature, receipt_proof, created_at, passes_sha256, passes_size)
VALUES (:job, :frame, :task, :node, :sha, :size, :extension, :render_seconds,
    :blender_version, :device, 'pending', '', '', :no, :receipt, :proof, :now, :passes_sha,
    :passes_size)
ON CONFLICT (job_id, frame) DO UPDATE SET task_id = excluded.task_id,
    node_id = excluded.node_id, blob_sha256 = excluded.blob_sha256,
    blob_size = excluded.blob_size, extension = excluded.extension,
    render_seconds = excluded.render_seconds, blender_version = excluded.blender_version,
    device = excluded.device, verdict = 'pending', verification = '', pixel_sha256 = '',
    charged = excluded.charged, receipt_signature = excluded.receipt_signature,
    receipt_proof = excluded.receipt_proof, created_at = excluded.created_at,
    passes_sha256 = excluded.passes_sha256,
    passes_size = excluded.passes_size
""")
_VERIFICATION = text("""
INSERT INTO verification (verification_id, job_id, frame, task_id, node_id, image_sha256,
    blender_version, device, render_tiles, state, verifier_id, reason, mode, details_json,
    pixel_sha256, created_at)
VALUES (:id, :job, :frame, :task, :node, :sha, :blender_version, :device, :tiles, 'queued',
    '', '', '', '{}', '', :now)
""")
_DELIVERED = text("""
UPDATE task SET state = 'verifying', lease_expires_at = NULL, updated_at = :now, error = ''
WHERE lease_id IN :leases AND state = 'leased'
""").bindparams(bindparam("leases", expanding=True))
_COUNT_LEASES = text("""
UPDATE node_standing SET leases_completed = leases_completed + :n, updated_at = :now
WHERE node_id = :node
""")
_TIMING = text("""
INSERT INTO frame_timing (job_id, frame, node_id, wall_seconds, claimed_seconds,
    claimed_score, work_ms, at)
VALUES (:job, :frame, :node, :wall, :claimed, :score, 0, :now)
ON CONFLICT (job_id, frame) DO UPDATE SET node_id = excluded.node_id,
    wall_seconds = excluded.wall_seconds, claimed_seconds = excluded.claimed_seconds,
    claimed_score = excluded.claimed_score, work_ms = 0, at = excluded.at
""")
_FRAME_LOG = text("""
INSERT INTO frame_log (job_id, frame, node_id, text, created_at)
VALUES (:job, :frame, :node, :text, :now)
ON CONFLICT (job_id, frame) DO UPDATE SET node_id = excluded.node_id, text = excluded.text,
    created_at = excluded.created_at
""")


@dataclass(frozen=True)
class NodeGate:
    """The node as leasing and the check draw see it, read in one statement."""

    standing: NodeStanding  # as the farm treats it (an unbonded node stays on probation)
    limits: LeaseLimits
    benchmark_score: float

    @property
    def quarantined(self) -> bool:
        return self.standing.quarantined


class Grant(NamedTuple):
    """A lease just granted."""

    task_id: str
    lease_id: str
    job_id: str
    first_frame: int
    last_frame: int
    expires_at: float
    job: JobFacts


class LeasedTask(NamedTuple):
    """The task behind a lease, as CompleteTask checks it."""

    task_id: str
    job_id: str
    first_frame: int
    last_frame: int
    state: str
    node_id: str | None
    leased_at: float | None = None  # when the lease began (the completion's read has it)


class LeaseResult(NamedTuple):
    """One lease's delivery in a batch, as the node sent it."""

    lease_id: str
    outputs: Sequence[Any]  # the wire's FrameOutputs: `prepare` reads them
    logs: dict[int, str]  # frame -> Blender's output, kept with an accepted render


class Completion(NamedTuple):
    """What became of one lease of a batch: recorded (now or before) or refused (`error`)."""

    lease_id: str
    task: LeasedTask | None
    recorded: bool  # newly recorded (False: refused, or a retry recorded before)
    tiles: frozenset[int]
    error: Exception | None  # LeaseLost, ValueError or a DomainError: this lease only


class WriteConflict(LeaseLost):
    """A lease read as live changed under its own transaction: the whole batch is undone."""


class LeaseHotPath:
    """Lease, heartbeat and complete for the node servicer (storage thread only)."""

    def __init__(self, store: FarmStore, minimum_bond: int, bond_policy: object) -> None:
        self.store = store
        self.engine: Engine = store.engine
        self.minimum_bond = minimum_bond
        self.bond_policy = bond_policy
        postgres = self.engine.dialect.name == "postgresql"
        skip_locked = " FOR UPDATE OF t SKIP LOCKED" if postgres else ""
        self._window = text(_WINDOW.format(held="0", share="", within="") + skip_locked)
        self._bounded_window = text(_WINDOW.format(held="coalesce(h.frames, 0)", share=_SHARE,
                                                   within=_WITHIN) + skip_locked)
        # A completion retried on another coordinator while the first is still committing
        # waits for it and then reads "already recorded" (several coordinators, one database).
        lock = " FOR UPDATE" if postgres else ""
        self._tasks_locked = text(_TASKS_OF_LEASES + lock).bindparams(
            bindparam("leases", expanding=True))
        # One lease (CompleteTask, most calls): a plain parameter, cheaper than an expanded list.
        self._task_locked = text(_TASKS_OF_LEASES.replace("IN :leases", "= :lease") + lock)
        self._jobs = JobFactsCache()

    def transaction(self) -> AbstractContextManager[Connection]:
        """One transaction for a call that does several of these at once (DeliverTasks:
        ownership, results, claim), committed on leaving: one WAL commit instead of three."""
        return self.engine.begin()

    # ------------------------------------------------------------ reads

    def gate(self, node_id: str, connection: Connection | None = None) -> NodeGate:
        if connection is None:
            with self.engine.connect() as own:
                return self.gate(node_id, own)
        row = driver.run(connection, _GATE, {"node": node_id}).first()
        standing = NodeStanding()
        bonded = False
        score = 1.0
        if row is not None:
            (points, run, verified, failed, delivered, since_failure, quarantined, held,
             unbond_requested_at, score) = row
            if points is not None:
                standing = NodeStanding(
                    score=points, consecutive_verified=run, verified=verified, failed=failed,
                    delivered=delivered, frames_since_failure=since_failure,
                    quarantined=bool(quarantined))
            bonded = (held is not None and held > 0 and held >= self.minimum_bond
                      and unbond_requested_at is None)
        return NodeGate(standing=effective_standing(standing, bonded),
                        limits=lease_limits(self.bond_policy, standing, bonded),  # type: ignore[arg-type]
                        benchmark_score=float(score or 1.0))

    def job(self, job_id: str, connection: Connection | None = None) -> JobFacts | None:
        """A job's immutable facts (cached; None: no such job)."""
        if connection is not None:
            return self._jobs.read(connection, job_id)
        facts = self._jobs.cached(job_id)  # a connection is opened only on a miss
        if facts is None:
            with self.engine.connect() as own:
                facts = self._jobs.read(own, job_id)
        return facts

    def task_for_lease(self, lease_id: str) -> LeasedTask | None:
        with self.engine.connect() as connection:
            return _task_of(connection, lease_id)

    # ------------------------------------------------------------ lease

    def lease(self, node_id: str, now: float, cached_scenes: Iterable[str] = (),
              max_tasks: int = 1, *, seen: bool = False) -> tuple[list[Grant], NodeGate]:
        """The node's gate and, unless it is quarantined, the best tasks of its window (see
        the module doc; up to `max_tasks`) claimed for it: one transaction. `seen`: also note
        the node alive at `now` in it."""
        with self.engine.begin() as connection:
            found = self.claim(connection, node_id, now, cached_scenes, max_tasks, seen=seen)
        return found if found is not None else self.lease_general(node_id, now)

    def claim(self, connection: Connection, node_id: str, now: float,
              cached_scenes: Iterable[str] = (), max_tasks: int = 1, *, seen: bool = False
              ) -> tuple[list[Grant], NodeGate] | None:
        """`lease` in the caller's transaction; None where the node's lease takes the general
        path (`lease_general`), which the caller runs after committing its own."""
        if seen:  # in this transaction: one WAL commit, not a second one of its own
            driver.run(connection, _SEEN, {"node": node_id, "now": now})
        gate = self.gate(node_id, connection)
        if gate.quarantined:
            return [], gate
        if driver.run(connection, _ANY_PRIORITY).first():
            return None
        max_tasks = max(1, min(max_tasks, MAX_TASKS_PER_CALL))
        if gate.limits.max_leases is not None:  # a bounded identity: its leases in flight
            held = int(driver.run(connection, _LEASES_HELD, {"node": node_id}).first()[0])
            max_tasks = min(max_tasks, gate.limits.max_leases - held)
            if max_tasks <= 0:
                return [], gate
        for _ in range(CLAIM_TRIES):
            grants, raced = self._claim(connection, node_id, gate, now, cached_scenes,
                                        max_tasks)
            if grants or not raced:
                return grants, gate
        return [], gate

    def lease_general(self, node_id: str, now: float) -> tuple[list[Grant], NodeGate]:
        """Creators' priorities: FarmStore's general lease, one task (its own transactions;
        the caller holds none)."""
        from coordinator.storage.proof import node_rank

        gate = self.gate(node_id)
        if gate.quarantined:
            return [], gate
        task = self.store.lease_next_task(
            node_id, now, node_rank(gate.standing), max_leases=gate.limits.max_leases,
            max_frames_per_job=gate.limits.max_frames_per_job)
        if task is None or task.lease_id is None:
            return [], gate
        facts = self.job(task.job_id)
        assert facts is not None
        return [Grant(task.task_id, task.lease_id, task.job_id, task.first_frame,
                      task.last_frame, task.lease_expires_at or now, facts)], gate

    def _claim(self, connection: Connection, node_id: str, gate: NodeGate, now: float,
               cached_scenes: Iterable[str], max_tasks: int) -> tuple[list[Grant], bool]:
        """(the grants; whether another claim took a candidate first)."""
        from coordinator.storage.proof import node_rank

        policy = self.store.policy
        per_job = gate.limits.max_frames_per_job
        rows = driver.run(
            connection, self._window if per_job is None else self._bounded_window, {
                "no": False, "yes": True, "rank": node_rank(gate.standing), "node": node_id,
                "max_failures": policy.max_failures_per_node, "window": CANDIDATE_WINDOW,
                "per_job": per_job}).rows
        frames = {r[0]: (int(r[2]), int(r[3])) for r in rows}
        held = {r[1]: int(r[8]) for r in rows}  # the node's frames of each job (bounded)
        window = [Candidate(task_id=r[0], job_id=r[1], frames=int(r[3]) - int(r[2]) + 1,
                            creator=r[4], scene_id=r[5], tier=r[6], queued_at=r[7])
                  for r in rows]
        short: set[str] = set()
        budgets = ClaimBudgets(connection, now)
        chosen: list[tuple[Candidate, str]] = []
        for candidate in order_candidates(window, cached_scenes):
            if fits_node([c.frames for c, _ in chosen] + [candidate.frames], max_tasks,
                         MAX_FRAMES_PER_CALL) <= len(chosen):
                break
            if not within_job_share(held[candidate.job_id], candidate.frames, per_job):
                continue
            if candidate.job_id in short or not budgets.allows(candidate.job_id,
                                                               candidate.frames):
                short.add(candidate.job_id)
                continue
            budgets.took(candidate.job_id, candidate.frames)
            held[candidate.job_id] += candidate.frames
            chosen.append((candidate, secrets.token_hex(16)))
        if not chosen:
            return [], False  # the pauses decided above are committed with the transaction
        # One statement for the whole claim (the window's rows are this transaction's on
        # PostgreSQL, SKIP LOCKED; SQLite has one writer): a short count means another
        # claim took a candidate first, and only then are the leases read back.
        expires = now + policy.lease_seconds
        claimed = driver.run_many(connection, _CLAIM, [
            {"lease": lease_id, "node": node_id, "expires": expires, "now": now,
             "task": candidate.task_id} for candidate, lease_id in chosen])
        raced = claimed != len(chosen)
        if raced:
            taken = set(driver.run(connection, _CLAIMED, {
                "leases": [lease_id for _, lease_id in chosen]}).scalars())
            chosen = [(c, lease_id) for c, lease_id in chosen if lease_id in taken]
            if not chosen:
                return [], True
        grants = []
        for candidate, lease_id in chosen:
            facts = self.job(candidate.job_id, connection)
            assert facts is not None
            first, last = frames[candidate.task_id]
            grants.append(Grant(candidate.task_id, lease_id, candidate.job_id, first, last,
                                expires, facts))
        return grants, raced

    # ------------------------------------------------------------ heartbeat

    def extend(self, lease_id: str, node_id: str, now: float) -> float:
        """Push the lease's expiry forward and return it, or raise LeaseLost."""
        expires = now + self.store.policy.lease_seconds
        with self.engine.begin() as connection:
            moved = driver.run(connection, _EXTEND, {"expires": expires, "now": now,
                                                     "lease": lease_id, "node": node_id})
            if moved.rowcount != 1:
                _check_live(_task_of(connection, lease_id), node_id)
        return expires

    def extend_many(self, lease_ids: Sequence[str], node_id: str, now: float
                    ) -> list[float | LeaseLost]:
        """`extend` for each of the node's leases in one transaction: per lease, the new
        expiry or the LeaseLost `extend` would have raised (the others still move)."""
        expires = now + self.store.policy.lease_seconds
        found: list[float | LeaseLost] = []
        with self.engine.begin() as connection:
            distinct = list(dict.fromkeys(lease_ids))
            if len(distinct) > 1 and driver.run(connection, _EXTEND_MANY, {
                    "expires": expires, "now": now, "leases": distinct,
                    "node": node_id}).rowcount == len(distinct):
                return [expires] * len(lease_ids)  # all live: one statement
            for lease_id in lease_ids:
                moved = driver.run(connection, _EXTEND, {"expires": expires, "now": now,
                                                         "lease": lease_id, "node": node_id})
                if moved.rowcount == 1:
                    found.append(expires)
                    continue
                try:
                    _check_live(_task_of(connection, lease_id), node_id)
                    found.append(expires)  # unreachable: the UPDATE matched no live lease
                except LeaseLost as error:
                    found.append(error)
        return found

    # ------------------------------------------------------------ complete

    def complete(self, lease_id: str, node_id: str, outputs: Sequence[FrameOutputRecord],
                 now: float, sampled: Callable[[NodeGate], frozenset[int]]
                 ) -> tuple[LeasedTask, bool, frozenset[int]]:
        """Record a lease's frames and queue their verification, in one transaction.

        Returns (task, newly recorded, frames sampled for tile checks); a retried
        completion records nothing. `sampled` draws the tile checks from the node's gate.
        """
        (done,) = self.complete_many(node_id, [LeaseResult(lease_id, outputs, {})], now,
                                     lambda result, task, facts: list(result.outputs),
                                     lambda gate, frames: sampled(gate))
        if done.error is not None:
            raise done.error
        assert done.task is not None
        return done.task, done.recorded, done.tiles

    def complete_many(self, node_id: str, results: Sequence[LeaseResult], now: float,
                      prepare: Callable[[LeaseResult, LeasedTask | None, JobFacts | None],
                                        list[FrameOutputRecord]],
                      sampled: Callable[[NodeGate, Sequence[int]], frozenset[int]],
                      connection: Connection | None = None) -> list[Completion]:
        """Several of the node's leases delivered in one transaction, each by the rules of
        a single completion and answered on its own.

        `prepare` turns a result into its records once the lease's task and job are read
        (the servicer's checks: image names, receipts, images uploaded and the node's own),
        raising a DomainError to refuse that lease alone. Every lease is checked before
        anything is written, and a refused lease writes nothing, so the others are recorded
        whatever befell it; the accepted leases' rows are then written together (a statement
        per table, not per lease). `sampled(gate, frames)` draws a lease's tile checks; the
        node's gate is read once per call. A WriteConflict (never expected) undoes the call,
        and with it `connection`'s transaction where the caller passes its own.
        """
        if connection is None:
            with self.engine.begin() as own:
                return self.complete_many(node_id, results, now, prepare, sampled, own)
        done: list[Completion] = []
        accepted: list[tuple[Completion, Sequence[FrameOutputRecord], dict[int, str]]] = []
        seen: dict[str, Completion] = {}
        tasks = self._tasks_of(connection, [r.lease_id for r in results])
        gate: NodeGate | None = None
        for result in results:
            if result.lease_id in seen:  # twice in one call: the second is a retry
                first = seen[result.lease_id]
                done.append(Completion(result.lease_id, first.task, False, frozenset(),
                                       first.error))
                continue
            task = tasks.get(result.lease_id)
            try:
                facts = self.job(task.job_id, connection) if task is not None else None
                outputs = prepare(result, task, facts)
                live = _deliverable(task, node_id, outputs)
            except (LeaseLost, ValueError, DomainError) as error:
                completion = Completion(result.lease_id, task, False, frozenset(), error)
            else:
                if live is None:  # recorded before: a retried completion
                    completion = Completion(result.lease_id, task, False, frozenset(), None)
                else:
                    if gate is None:
                        gate = self.gate(node_id, connection)
                    tiles = sampled(gate, [o.frame for o in outputs])
                    completion = Completion(result.lease_id, live, True, tiles, None)
                    accepted.append((completion, outputs, result.logs))
            seen[result.lease_id] = completion
            done.append(completion)
        if accepted:
            assert gate is not None
            self._write(connection, node_id, accepted, gate, now)
        return done

    def _tasks_of(self, connection: Connection, lease_ids: Sequence[str]
                  ) -> dict[str, LeasedTask]:
        """The tasks holding these leases (locked on PostgreSQL), by lease id."""
        wanted = [lease for lease in dict.fromkeys(lease_ids) if lease]
        if not wanted:
            return {}
        rows = (driver.run(connection, self._task_locked, {"lease": wanted[0]}).rows
                if len(wanted) == 1 else
                driver.run(connection, self._tasks_locked, {"leases": wanted}).rows)
        return {lease: LeasedTask(task, job, first, last, state, node, leased_at)
                for task, job, first, last, state, node, lease, leased_at in rows}

    def _write(self, connection: Connection, node_id: str,
               accepted: Sequence[tuple[Completion, Sequence[FrameOutputRecord],
                                        dict[int, str]]],
               gate: NodeGate, now: float) -> None:
        """The rows of every accepted lease: results, checks, task states, the node's
        count, timings, logs; one statement per table."""
        rows = []
        for completion, outputs, _ in accepted:
            task = completion.task
            assert task is not None
            rows += [{"job": task.job_id, "frame": o.frame, "task": task.task_id,
                      "node": node_id, "sha": o.sha256, "size": o.size,
                      "extension": o.extension, "render_seconds": o.render_seconds,
                      "blender_version": o.blender_version, "device": o.device,
                      "receipt": o.receipt_signature, "proof": o.receipt_proof,
                      "no": False, "now": now,
                      "passes_sha": o.passes_sha256 or None,
                      "passes_size": o.passes_size if o.passes_sha256 else None,
                      "id": secrets.token_hex(16), "tiles": o.frame in completion.tiles}
                     for o in outputs]
        driver.run_many(connection, _RESULT, rows)
        driver.run_many(connection, _VERIFICATION, rows)
        leases = [completion.lease_id for completion, _, _ in accepted]
        moved = driver.run(connection, _DELIVERED, {"now": now, "leases": leases})
        if moved.rowcount != len(leases):  # read as live in this transaction: never expected
            raise WriteConflict(f"leases {', '.join(leases)}: {len(leases) - moved.rowcount} "
                                "of their tasks are no longer leased")
        if driver.run(connection, _COUNT_LEASES, {"now": now, "node": node_id,
                                                  "n": len(accepted)}).rowcount != 1:
            with Session(bind=connection) as session:
                session.add(NodeStandingRecord(node_id=node_id, leases_completed=len(accepted),
                                               updated_at=now))
                session.flush()
        timings = []
        logs = []
        for completion, outputs, texts in accepted:
            task = completion.task
            assert task is not None
            at = task.leased_at
            wall = max(0.0, (now - at) / max(1, len(outputs))) if at is not None else 0.0
            timings += [{"job": task.job_id, "frame": o.frame, "node": node_id, "wall": wall,
                         "claimed": o.render_seconds, "score": gate.benchmark_score,
                         "now": now} for o in outputs]
            logs += [{"job": task.job_id, "frame": frame, "node": node_id, "text": text,
                      "now": now} for frame, text in texts.items()]
        driver.run_many(connection, _TIMING, timings)
        if logs:
            driver.run_many(connection, _FRAME_LOG, logs)


def _deliverable(task: LeasedTask | None, node_id: str,
                 outputs: Sequence[FrameOutputRecord]) -> LeasedTask | None:
    """The task if this result may be recorded now; None: it was (a retry). Raises
    LeaseLost (not the node's live lease) or ValueError (not the task's frames)."""
    if (task is not None and task.state in (TaskState.VERIFYING, TaskState.DONE)
            and task.node_id == node_id):
        return None
    task = _check_live(task, node_id)
    expected = list(range(task.first_frame, task.last_frame + 1))
    got = sorted(output.frame for output in outputs)
    if got != expected:
        raise ValueError(f"the task covers frames {expected}, the result has {got}")
    return task


def _task_of(connection: Connection, lease_id: str) -> LeasedTask | None:
    row = driver.run(connection, _TASK_OF_LEASE, {"lease": lease_id}).first()
    return LeasedTask(*row) if row is not None else None


def _check_live(task: LeasedTask | None, node_id: str) -> LeasedTask:
    """The task of the node's live lease, or LeaseLost with the domain's reason."""
    if task is None:
        raise LeaseLost(UNKNOWN_LEASE)
    reason = lease_refusal(task.node_id, task.state, node_id)
    if reason is not None:
        raise LeaseLost(reason)
    return task

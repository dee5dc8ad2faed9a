"""The storage the servicers and the sweeps depend on, as narrow `typing.Protocol`s.

Like Flamenco's `PersistenceService`, each protocol is what one part of the farm needs, not
everything the database can do: jobs, leases, nodes, reputation, verification. The SQL
implementations are `FarmStore` (jobs, leases, nodes), `LeaseHotPath` (a node's frame
cycle) and `ProofStore` (reputation, verification); tests and tools can pass anything with
the same methods.

Shaped for an async implementation (SQLAlchemy asyncio) to fit behind the same names later:
every method is one transaction, takes plain values, and returns detached records or frozen
values (nothing lazy-loads after it returns, no session crosses the boundary), so making the
methods `async def` is the only change callers would see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from coordinator.domain.reputation import NodeEvent, NodeStanding, ReputationChange
from coordinator.domain.states import TaskState
from coordinator.storage.models import (
    FrameResultRecord,
    JobRecord,
    NodeRecord,
    NodeStandingRecord,
    ReputationEventRecord,
    SceneRecord,
    TaskRecord,
)

if TYPE_CHECKING:
    from coordinator.storage.leasing import (
        Completion,
        Grant,
        LeasedTask,
        LeaseHotPath,
        LeaseResult,
        NodeGate,
    )
    from coordinator.storage.proof import (
        FinishedVerification,
        LeasedCheck,
        Peer,
        ProofStore,
        Renewal,
        VerificationResult,
    )
    from coordinator.storage.store import FarmStore, FrameOutputRecord, JobFacts, LeaseLost
    from coordinator.storage.verification_queue import QueueStanding


@runtime_checkable
class JobStore(Protocol):
    """Jobs and their tasks and frames, as creators see them."""

    def get_scene(self, scene_id: str) -> SceneRecord | None: ...

    def create_job(self, job: JobRecord, chunks: Sequence[Sequence[int]], now: float,
                   frame_price_tokens: int | None = None) -> None: ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def list_jobs(self, creator: str | None = None,
                  limit: int | None = None) -> tuple[list[JobRecord], int]: ...

    def frame_counts(self, job_ids: Iterable[str]) -> dict[str, dict[TaskState, int]]: ...

    def cancel_job(self, job_id: str, now: float) -> bool: ...

    def list_tasks(self, job_id: str) -> list[TaskRecord]: ...

    def list_frame_results(self, job_id: str) -> list[FrameResultRecord]: ...

    def frame_result(self, job_id: str, frame: int) -> FrameResultRecord | None: ...

    def job_creators(self, job_ids: Iterable[str]) -> dict[str, str]: ...


@runtime_checkable
class LeaseStore(Protocol):
    """Tasks leased to nodes: claim, heartbeat, deliver, give back. Which task a node gets is
    the scheduling policy's (`lease_next_task`); each call is one compare-and-set."""

    def lease_next_task(self, node_id: str, now: float, node_rank: int = 3, *,
                        max_leases: int | None = None,
                        max_frames_per_job: int | None = None) -> TaskRecord | None: ...

    def extend_lease(self, lease_id: str, node_id: str, now: float) -> TaskRecord: ...

    def complete_task(self, lease_id: str, node_id: str, outputs: Sequence[FrameOutputRecord],
                      now: float,
                      tile_checks: frozenset[int] = frozenset()) -> tuple[TaskRecord, bool]: ...

    def fail_task(self, lease_id: str, node_id: str, reason: str, now: float) -> TaskRecord: ...

    def task_for_lease(self, lease_id: str) -> TaskRecord | None: ...


@runtime_checkable
class NodeWorkStore(Protocol):
    """A node's frame cycle, each call one short transaction of a few statements, run on the
    storage thread (`storage/leasing.py`, `LeaseHotPath`): the node's gate, a claim of the
    best tasks of its window (policy: `domain.scheduling`), heartbeat, delivery."""

    def gate(self, node_id: str) -> NodeGate: ...

    def job(self, job_id: str) -> JobFacts | None: ...

    def task_for_lease(self, lease_id: str) -> LeasedTask | None: ...

    def lease(self, node_id: str, now: float, cached_scenes: Iterable[str] = (),
              max_tasks: int = 1, *, seen: bool = False) -> tuple[list[Grant], NodeGate]: ...

    def extend(self, lease_id: str, node_id: str, now: float) -> float: ...

    def complete(self, lease_id: str, node_id: str, outputs: Sequence[FrameOutputRecord],
                 now: float, sampled: Callable[[NodeGate], frozenset[int]]
                 ) -> tuple[LeasedTask, bool, frozenset[int]]: ...

    def extend_many(self, lease_ids: Sequence[str], node_id: str, now: float
                    ) -> list[float | LeaseLost]: ...

    def complete_many(self, node_id: str, results: Sequence[LeaseResult], now: float,
                      prepare: Callable[[LeaseResult, LeasedTask | None, JobFacts | None],
                                        list[FrameOutputRecord]],
                      sampled: Callable[[NodeGate, Sequence[int]], frozenset[int]]
                      ) -> list[Completion]: ...


@runtime_checkable
class NodeStore(Protocol):
    """Render nodes the coordinator has heard from."""

    def register_node(self, node_id: str, name: str, capabilities_json: str, now: float,
                      benchmark_score: float = 1.0) -> None: ...

    def get_node(self, node_id: str) -> NodeRecord | None: ...

    def list_nodes(self) -> list[NodeRecord]: ...


@runtime_checkable
class ReputationStore(Protocol):
    """Each node's standing and the events that moved it (rules: `domain.reputation`)."""

    def standing(self, node_id: str) -> NodeStanding: ...

    def standing_record(self, node_id: str) -> NodeStandingRecord: ...

    def standings(self) -> dict[str, NodeStandingRecord]: ...

    def history(self, node_id: str, limit: int) -> list[ReputationEventRecord]: ...

    def record_event(self, node_id: str, event: NodeEvent, now: float, *, job_id: str = "",
                     frame: int = 0,
                     details: dict[str, Any] | None = None) -> ReputationChange: ...

    def count_completed_lease(self, node_id: str, now: float) -> None: ...

    def set_quarantine(self, node_id: str, quarantined: bool, reason: str,
                       now: float) -> None: ...


@runtime_checkable
class VerificationStore(Protocol):
    """The Proof-of-Render queue: checks leased to verifiers and their verdicts applied
    (rules: `domain.verdicts`, `domain.reputation`), each in one transaction."""

    def peer_may_verify(self, node_id: str) -> bool: ...

    def lease_check(self, verifier_id: str, now: float, lease_seconds: float | None = None,
                    peer: Peer | None = None) -> LeasedCheck | None: ...

    def extend_verification(self, verification_id: str, verifier_id: str,
                            now: float) -> Renewal: ...

    def release_verification(self, verification_id: str, verifier_id: str, reason: str,
                             now: float) -> bool: ...

    def finish_verification(self, verification_id: str, verifier_id: str,
                            result: VerificationResult, now: float, *,
                            peer: bool = False) -> FinishedVerification: ...

    def hold_verification(self, verification_id: str) -> None: ...

    def queue_standing(self, job_id: str) -> QueueStanding: ...


if TYPE_CHECKING:  # the type checker proves the SQL stores fit the protocols
    def _farm_store_fits(store: FarmStore) -> tuple[JobStore, LeaseStore, NodeStore]:
        return store, store, store

    def _hot_path_fits(path: LeaseHotPath) -> NodeWorkStore:
        return path

    def _proof_store_fits(store: ProofStore) -> tuple[ReputationStore, VerificationStore]:
        return store, store

"""Who may do what: creators own their jobs, nodes their leases, admins everything."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.storage.models import JobRecord
from coordinator.storage.proof import ProofStore
from coordinator.storage.store import FarmStore
from frameproof.auth import Caller


@dataclass(frozen=True)
class AccessPolicy:
    store: FarmStore
    admins: frozenset[str] = frozenset()
    verifiers: frozenset[str] = frozenset()  # besides the admins
    proof: ProofStore | None = None  # peer verifiers (Tier 1 nodes) read what they check

    def is_admin(self, caller: Caller) -> bool:
        return caller.pubkey in self.admins

    def is_verifier(self, caller: Caller) -> bool:
        return caller.pubkey in self.verifiers or self.is_admin(caller)

    def may_see_job(self, caller: Caller, job: JobRecord) -> bool:
        return job.creator == caller.pubkey or self.is_admin(caller)

    def may_read_blob(self, caller: Caller, sha256: str) -> bool:
        """Creators read their scenes and frames; nodes the scenes they are rendering; peer
        verifiers the frames and scenes of the checks they hold."""
        return (
            self.is_verifier(caller)
            or self.store.node_may_read(caller.pubkey, sha256)
            or self.store.creator_may_read(caller.pubkey, sha256)
            or (self.proof is not None and self.proof.peer_may_read(caller.pubkey, sha256))
        )

"""Who may do what: creators own their jobs, nodes their leases, admins everything.

Blobs (scene files, manifests, frames) are read by:
- admins (the operator; the built-in verifier comes in over the admin socket);
- a key that owns the blob: it uploaded the bytes or proved it holds them
  (``coordinator.storage.owners``), so reading them back gives it nothing new;
- the creator of a job, for the job's scene and its frames (a job needs ownership of its
  scene's files, so knowing a scene's sha256 is not enough to make one);
- a node, for the scene of a task it holds a lease on right now (not once the lease has
  expired, been taken back, or been delivered);
- a verifier or peer verifier, for the frame, its passes file (denoised frames) and the scene
  of a check it holds; the creator never reads a frame's passes file (it is no frame).
Nobody else: a sha256 learnt from a lease, a log or a guess opens nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from coordinator.storage.models import JobRecord
from coordinator.storage.owners import BlobOwners
from coordinator.storage.proof import ProofStore
from coordinator.storage.store import FarmStore
from frameproof.auth import Caller


@dataclass(frozen=True)
class AccessPolicy:
    store: FarmStore
    admins: frozenset[str] = frozenset()
    verifiers: frozenset[str] = frozenset()  # besides the admins
    proof: ProofStore | None = None  # verifiers and peers (Tier 1 nodes) read what they check
    owners: BlobOwners | None = None  # who holds which blob (uploaded or proved it)

    def is_admin(self, caller: Caller) -> bool:
        return caller.pubkey in self.admins

    def is_verifier(self, caller: Caller) -> bool:
        return caller.pubkey in self.verifiers or self.is_admin(caller)

    def may_see_job(self, caller: Caller, job: JobRecord) -> bool:
        return job.creator == caller.pubkey or self.is_admin(caller)

    def may_see_job_id(self, caller: Caller, node_id: str, creator: str) -> bool:
        """A node's history names a job only to the node, the job's creator and admins."""
        return caller.pubkey in (node_id, creator) or self.is_admin(caller)

    def may_use_any_scene(self, caller: Caller) -> bool:
        """Only admins submit on scenes whose files they have not uploaded themselves."""
        return self.is_admin(caller)

    def may_read_blob(self, caller: Caller, sha256: str) -> bool:
        """See the module docstring: owners, creators, live leases, held checks, admins."""
        return (
            self.is_admin(caller)
            or (self.owners is not None and self.owners.owns(caller.pubkey, sha256))
            or self.store.node_may_read(caller.pubkey, sha256, time.time())
            or self.store.creator_may_read(caller.pubkey, sha256)
            or (self.proof is not None and self.proof.peer_may_read(caller.pubkey, sha256))
        )

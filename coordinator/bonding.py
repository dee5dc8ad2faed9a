"""Bonds meet the farm: slash proven cheaters, return bonds of nodes that leave in good
standing, and name the nodes that share an epoch's availability pool.

The rules are in coordinator/payments/bonds.py; this module only reads what the farm knows
(reputation events, leases, verifications, credits) and applies them, one node at a time, so
that one node whose bond cannot be processed never holds up another's.
"""

from __future__ import annotations

import logging

from coordinator.payments.bonds import Bonds, NodeEpochFacts, availability_weights
from coordinator.storage import settlement_reads
from coordinator.storage.pricing_store import PricingStore
from coordinator.storage.proof import ProofStore
from coordinator.storage.store import FarmStore

log = logging.getLogger(__name__)


def busy_reason(store: FarmStore, node_id: str) -> str | None:
    """Why the node's bond cannot return yet: work of it still in flight or unverified."""
    work = settlement_reads.in_flight(store.engine, node_id)
    if work.leases:
        return f"{work.leases} lease(s) in flight"
    if work.unverified:
        return f"{work.unverified} frame(s) still being verified"
    return None


def release_if_due(store: FarmStore, proof: ProofStore, bonds: Bonds,
                   node_id: str) -> str | None:
    """Return an unbonding node's bond if it is in good standing and its cooldown is over.

    Good standing: not quarantined, no lease in flight, no frame still being verified (a
    cheat found later must still find the bond). Returns the unbond op id, or None.
    """
    if proof.standing(node_id).quarantined or busy_reason(store, node_id) is not None:
        return None
    return bonds.release(node_id)


def slash_if_quarantined(store: FarmStore, bonds: Bonds, node_id: str) -> bool:
    """Slash a bonded node that Proof-of-Render quarantined, once per quarantine.

    Only a quarantine by failed verifications counts as proven cheating (an operator's manual
    quarantine does not slash). The cheated creators are those whose frames the node had
    rejected since its last slash, each paid pro rata to those frames.
    """
    event = settlement_reads.quarantining_failure(store.engine, node_id)
    if event is None:
        return False
    done = bonds.slashed_events(node_id)
    if event.event_id in done:
        return False
    rejected = settlement_reads.rejected_frames_by_creator(
        store.engine, node_id, max(done, default=0), event.event_id)
    slash = bonds.slash(node_id, event.event_id, rejected,
                        f"quarantined by Proof-of-Render: {event.reason}")
    if slash is None:
        return False
    log.warning("node %s slashed %d base units (%d to %d cheated frames' creators, %d to the "
                "treasury)", node_id[:12], slash.amount, slash.to_creators,
                slash.rejected_frames, slash.to_treasury)
    return True


class BondKeeper:
    """The periodic pass: slash quarantined bonded nodes, return bonds that are due."""

    def __init__(self, store: FarmStore, proof: ProofStore, bonds: Bonds) -> None:
        self.store = store
        self.proof = proof
        self.bonds = bonds

    def sweep(self) -> None:
        quarantined = self.proof.quarantined_nodes()
        for node_id in sorted(quarantined & set(self.bonds.holders()) if quarantined else ()):
            try:
                slash_if_quarantined(self.store, self.bonds, node_id)
            except Exception:  # one node's trouble must not stop the others'
                log.exception("slashing node %s failed; retried next pass", node_id[:12])
        for record in self.bonds.unbonding():
            try:
                if release_if_due(self.store, self.proof, self.bonds, record.node_id):
                    log.info("bond of node %s returned", record.node_id[:12])
            except Exception:
                log.exception("returning the bond of %s failed; retried next pass",
                              record.node_id[:12])


def availability(store: FarmStore, proof: ProofStore, bonds: Bonds, window: float,
                 now: float) -> dict[str, float]:
    """The availability pool's nodes and weights for the epoch closing at `now`.

    A node proves it answered by work verified from it in the open epoch (approved frames'
    credits); its capacity is its speed as the coordinator measured it (`PricingStore.node_speed`:
    reference seconds of work per wall second of its leases), which weighs its share. See
    `coordinator.payments.bonds.availability_weights`.
    """
    work = settlement_reads.open_epoch_work(store.engine, now)
    standings = proof.standings()
    bonded = bonds.bonded_nodes()
    speeds = PricingStore(store.engine).node_speeds(sorted(bonded & set(work)))
    facts = {
        node.node_id: NodeEpochFacts(
            bonded=node.node_id in bonded,
            quarantined=bool(standings.get(node.node_id) and standings[node.node_id].quarantined),
            verified_work_ms=int(work.get(node.node_id, 0)),
            answering=node.last_seen_at >= now - window,
            measured_speed=speeds.get(node.node_id),
        )
        for node in store.list_nodes()
    }
    return availability_weights(facts)

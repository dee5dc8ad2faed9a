"""Rules about render nodes that the node servicer applies: what a node's claims are worth,
what a given-back lease says about it, and that a node speaks only for itself."""

from __future__ import annotations

from coordinator.domain.errors import Forbidden
from coordinator.domain.reputation import NodeEvent

# Self-reported benchmark scores are clamped: a node cannot claim to be a supercomputer.
MIN_BENCHMARK_SCORE, MAX_BENCHMARK_SCORE = 0.05, 20.0
DEFAULT_BENCHMARK_SCORE = 1.0  # a node that does not say (0 on the wire)
STOPPING_PREFIX = "node stopping"  # a FailTask reason for a lease given back on shutdown
DEFAULT_HISTORY_EVENTS = 50
MAX_HISTORY_EVENTS = 1000


def benchmark_score(claimed: float) -> float:
    """The score a node is registered with: its claim, within bounds (0 means unknown).

    The claim only orders idle nodes; speed that matters for pay is measured on leases."""
    return min(MAX_BENCHMARK_SCORE, max(MIN_BENCHMARK_SCORE,
                                        claimed or DEFAULT_BENCHMARK_SCORE))


def counts_as_attempt(reason: str) -> bool:
    """A lease given back unstarted by a node shutting down is not an attempt at the frame:
    otherwise a frame handed back by three restarting nodes would be given up unrendered."""
    return not reason.startswith(STOPPING_PREFIX)


def failure_event(reason: str) -> NodeEvent:
    """What a given-back lease counts as: a node shutting down abandons its lease (no
    blame for a crash); any other failure is a crash."""
    return NodeEvent.ABANDONED if reason.startswith(STOPPING_PREFIX) else NodeEvent.CRASH


def history_limit(requested: int) -> int:
    """How many reputation events a standing answer lists (0 or less: the default)."""
    return min(max(requested, 0) or DEFAULT_HISTORY_EVENTS, MAX_HISTORY_EVENTS)


def check_own_node(node_id: str, signer: str) -> str:
    """A node speaks only for itself: the node id must be the key that signed the call."""
    if node_id != signer:
        raise Forbidden("node_id is not the public key that signed this call")
    return node_id

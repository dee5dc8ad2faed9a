"""What the coordinator decides about a delivered frame once a verifier has judged it.

The verifier judges pixels (`verifier.judge`: pass, fail or grey per tile and frame, the
proto's `TileCheck.outcome`) and reports one `passed` flag per frame. The coordinator turns
that into a :class:`Verdict` here, with the two facts only it knows: whether a peer's verdict
is drawn for an audit, and whether a frame that was not re-rendered has a pixel-identical
twin elsewhere (an honest still frame, or a copy: only tiles can tell).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

PEER_AUDIT_RATE = 0.10  # share of a peer's passes that a coordinator verifier checks again


class Verdict(StrEnum):
    """The coordinator's decision on one verification of one frame."""

    APPROVED = "approved"  # the frame counts (and is charged); `frame_result.verdict`
    REJECTED = "rejected"  # the node's task goes back to the queue for another node
    ESCALATED = "escalated"  # passed cheap checks but has a twin: re-verify with tiles
    AUDIT = "audit"  # a peer's verdict: a coordinator verifier decides


class FrameVerdict(StrEnum):
    """A delivered frame's standing (`frame_result.verdict`); rejected results are deleted."""

    PENDING = "pending"  # waiting for Proof-of-Render
    APPROVED = "approved"
    UNPAID = "unpaid"  # approved, but its cancelled job's escrow could not pay it


def peer_audited(passed: bool, draw: Callable[[], float], rate: float = PEER_AUDIT_RATE) -> bool:
    """A peer's failure is always checked again, and a secret share of its passes."""
    return not passed or draw() < rate


def decide(passed: bool, *, audited: bool, tiles_rendered: bool,
           has_twin: Callable[[], bool]) -> Verdict:
    """The verdict on one verification; `has_twin` is asked only for an untiled pass."""
    if audited:
        return Verdict.AUDIT
    if passed and not tiles_rendered and has_twin():
        return Verdict.ESCALATED
    return Verdict.APPROVED if passed else Verdict.REJECTED

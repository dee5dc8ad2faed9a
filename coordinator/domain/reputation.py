"""Node reputation and adaptive checking, as pure functions (the coordinator stores the state).

The model in one paragraph: every node has a score in [0, 1] that starts at 0.5. A verified
frame moves the score 2% of the way towards 1; a failed verification keeps only a quarter of
it; reliability events cost a little (an abandoned lease or a timeout 3%, a crash 1%) and a
completed, unchecked frame earns a trickle (0.2% of the way to 1). Tiers follow the score:
Tier 1 (trusted) ≥ 0.90, Tier 2 (priority) ≥ 0.70, Tier 3 (economy) below, and a node is on
probation until it has 50 consecutive verified frames. How often a node's frames are checked
depends only on its run of consecutive verified frames (BOINC's adaptive replication with a
floor): every frame on probation, then ``25 / run`` (50% at 50, 10% at 250), never below 3%.
Any failure resets the run (back to every frame) and asks the caller to re-check the node's
last 20 frames; a second failure within 200 delivered frames quarantines the node. Every
change comes back as a :class:`ReputationChange` that says what happened and why.

The coordinator stores the standing (`coordinator.storage.proof`) and applies these rules in the
same transaction as the verdict that caused them; the verifier only judges pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

START_SCORE = 0.5
PASS_GAIN = 0.02  # share of the distance to 1 gained per verified frame
DELIVERED_GAIN = 0.002  # per completed frame that was not checked
FAIL_KEEP = 0.25  # share of the score kept after a failed verification
PROBATION_RUN = 50  # consecutive verified frames before the checking rate starts to fall
RATE_CONSTANT = 25.0  # rate = RATE_CONSTANT / run after probation (BOINC's 1/CV)
RATE_FLOOR = 0.03  # even Tier 1 is checked on 3% of frames
RECHECK_RECENT = 20  # frames to re-check after a failure
QUARANTINE_WINDOW = 200  # a second failure within this many delivered frames quarantines


class NodeEvent(StrEnum):
    """Something a node did that moves its reputation (stored as `reputation_event.kind`)."""

    VERIFIED = "verified"  # a checked frame passed
    FAILED = "failed"  # a checked frame failed verification
    DELIVERED = "delivered"  # a frame completed and was not checked
    ABANDONED = "abandoned"  # the node dropped a lease
    TIMEOUT = "timeout"  # the lease expired without a result
    CRASH = "crash"  # the node reported a render crash


class Tier(StrEnum):
    """A node's class, named as the proto's `NodeStanding.tier` names it.

    A job asks for a tier by number (`JobRecord.tier`, the proto's `int32 tier`: 1 trusted nodes
    only .. 3 any verified node); :attr:`rank` is a node's number on that scale.
    """

    TIER1 = "tier1"  # trusted: score >= 0.90
    TIER2 = "tier2"  # priority: score >= 0.70
    TIER3 = "tier3"  # economy
    PROBATION = "probation"  # fewer than PROBATION_RUN verified frames in a row
    QUARANTINED = "quarantined"  # failed twice within QUARANTINE_WINDOW frames

    @property
    def rank(self) -> int:
        """1 for Tier 1 .. 3 for Tier 3; probation (and quarantine) rank with Tier 3."""
        return {Tier.TIER1: 1, Tier.TIER2: 2}.get(self, 3)

    @classmethod
    def numbered(cls, number: int) -> Tier:
        """The tier a job's number names (1, 2 or 3)."""
        return {1: cls.TIER1, 2: cls.TIER2, 3: cls.TIER3}[number]


JOB_TIERS = (1, 2, 3)  # what a job may ask for; 0 on the wire means 3
DEFAULT_JOB_TIER = 3
RELIABILITY_COST = {NodeEvent.ABANDONED: 0.03, NodeEvent.TIMEOUT: 0.03, NodeEvent.CRASH: 0.01}
TIER_BOUNDS = ((0.90, Tier.TIER1), (0.70, Tier.TIER2), (0.0, Tier.TIER3))
PEER_TIER = Tier.TIER1  # the standing a node needs to verify other nodes' frames


@dataclass(frozen=True)
class NodeStanding:
    score: float = START_SCORE
    consecutive_verified: int = 0
    verified: int = 0
    failed: int = 0
    delivered: int = 0  # frames completed, checked or not
    frames_since_failure: int | None = None  # None: never failed
    quarantined: bool = False

    @property
    def probation(self) -> bool:
        return self.consecutive_verified < PROBATION_RUN

    @property
    def tier(self) -> Tier:
        if self.quarantined:
            return Tier.QUARANTINED
        if self.probation:
            return Tier.PROBATION
        return tier_for(self.score)


@dataclass(frozen=True)
class ReputationChange:
    event: NodeEvent
    score_before: float
    score_after: float
    tier_before: Tier
    tier_after: Tier
    reason: str
    recheck_recent: int = 0  # how many of the node's latest frames the caller should re-check


def tier_for(score: float) -> Tier:
    """Tier name for a score (probation and quarantine are decided by :class:`NodeStanding`)."""
    return next(name for bound, name in TIER_BOUNDS if score >= bound)


def check_probability(standing: NodeStanding) -> float:
    """Chance that the node's next frame is verified."""
    if standing.quarantined or standing.probation:
        return 1.0
    return max(RATE_FLOOR, min(1.0, RATE_CONSTANT / standing.consecutive_verified))


def apply_event(
    standing: NodeStanding, event: NodeEvent | str
) -> tuple[NodeStanding, ReputationChange]:
    """The node's new standing after one event, and a record of the change with its reason."""
    event = NodeEvent(event)
    s = standing
    since = None if s.frames_since_failure is None else s.frames_since_failure + 1
    recheck = 0
    if event is NodeEvent.VERIFIED:
        new = replace(
            s,
            score=s.score + PASS_GAIN * (1 - s.score),
            consecutive_verified=s.consecutive_verified + 1,
            verified=s.verified + 1,
            delivered=s.delivered + 1,
            frames_since_failure=since,
        )
        reason = f"frame verified ({new.consecutive_verified} in a row)"
    elif event is NodeEvent.FAILED:
        repeat = since is not None and since <= QUARANTINE_WINDOW
        new = replace(
            s,
            score=s.score * FAIL_KEEP,
            consecutive_verified=0,
            failed=s.failed + 1,
            delivered=s.delivered + 1,
            frames_since_failure=0,
            quarantined=s.quarantined or repeat,
        )
        recheck = RECHECK_RECENT
        reason = "frame failed verification: score cut, checking every frame again"
        if repeat:
            reason += f"; second failure within {QUARANTINE_WINDOW} frames: quarantined"
    elif event is NodeEvent.DELIVERED:
        new = replace(
            s,
            score=s.score + DELIVERED_GAIN * (1 - s.score),
            delivered=s.delivered + 1,
            frames_since_failure=since,
        )
        reason = "frame delivered (not checked)"
    else:
        cost = RELIABILITY_COST[event]
        new = replace(s, score=s.score * (1 - cost))
        reason = f"lease {event.value}: reliability cost {cost:.0%}"
    change = ReputationChange(
        event=event,
        score_before=s.score,
        score_after=new.score,
        tier_before=s.tier,
        tier_after=new.tier,
        reason=reason,
        recheck_recent=recheck,
    )
    return new, change

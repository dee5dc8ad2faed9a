"""Reputation and tiers: pure rules, checked without a farm."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coordinator.domain import reputation
from coordinator.domain.reputation import NodeEvent, NodeStanding, Tier


def run(standing: reputation.NodeStanding, event: str, n: int) -> reputation.NodeStanding:
    for _ in range(n):
        standing, _change = reputation.apply_event(standing, event)
    return standing


def test_new_node_checked_every_frame_then_less() -> None:
    new = reputation.NodeStanding()
    assert new.tier == "probation" and reputation.check_probability(new) == 1.0
    first = reputation.PROBATION_RUN
    rates = [
        reputation.check_probability(run(new, "verified", n)) for n in (first - 1, first, 300, 5000)
    ]
    assert rates[0] == 1.0 and rates[1] < 1.0
    assert rates[1] > rates[2] > rates[3] == reputation.RATE_FLOOR


def test_failure_resets_and_repeated_failure_quarantines() -> None:
    trusted = run(reputation.NodeStanding(), "verified", 300)
    after, change = reputation.apply_event(trusted, "failed")
    assert reputation.check_probability(after) == 1.0
    assert after.score < trusted.score * 0.3 and change.recheck_recent > 0
    assert "failed" in change.reason and not after.quarantined
    again, change = reputation.apply_event(run(after, "delivered", 50), "failed")
    assert again.quarantined and again.tier == "quarantined" and "quarantined" in change.reason
    far = run(after, "verified", reputation.QUARANTINE_WINDOW + 1)
    assert not reputation.apply_event(far, "failed")[0].quarantined


def test_honest_node_rises_to_tier1_and_reliability_costs() -> None:
    honest = run(reputation.NodeStanding(), "verified", 150)
    assert honest.tier == "tier1"
    dropped, change = reputation.apply_event(honest, "abandoned")
    assert dropped.score < honest.score and "abandoned" in change.reason
    assert reputation.tier_for(0.75) == "tier2" and reputation.tier_for(0.3) == "tier3"


def test_tier_names_match_the_proto_and_rank_matches_the_job_scale() -> None:
    assert [t.value for t in Tier] == ["tier1", "tier2", "tier3", "probation", "quarantined"]
    assert [Tier.numbered(n).rank for n in reputation.JOB_TIERS] == [1, 2, 3]
    assert Tier.PROBATION.rank == 3 and Tier.QUARANTINED.rank == 3


@given(st.lists(st.sampled_from(list(NodeEvent)), max_size=300))
def test_any_history_keeps_the_score_in_bounds_and_counts_straight(events: list[NodeEvent]) -> None:
    """Whatever a node does, its score stays in [0, 1], its counters add up, its checking
    rate is a probability, and a change says the tier it came from and went to."""
    standing = NodeStanding()
    for event in events:
        new, change = reputation.apply_event(standing, event)
        assert 0.0 <= new.score <= 1.0
        assert change.tier_before == standing.tier and change.tier_after == new.tier
        assert 0.0 < reputation.check_probability(new) <= 1.0
        assert standing.quarantined <= new.quarantined  # only an operator releases a node
        standing = new
    counted = {e: events.count(e) for e in NodeEvent}
    assert standing.verified == counted[NodeEvent.VERIFIED]
    assert standing.failed == counted[NodeEvent.FAILED]
    assert standing.delivered == (counted[NodeEvent.VERIFIED] + counted[NodeEvent.FAILED]
                                  + counted[NodeEvent.DELIVERED])
    if NodeEvent.FAILED in events:
        last = len(events) - 1 - events[::-1].index(NodeEvent.FAILED)
        assert standing.consecutive_verified <= len(events) - last - 1

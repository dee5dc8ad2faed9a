"""The scheduling policy as pure functions: fair share, tier priority, scene affinity."""

from __future__ import annotations

from coordinator.domain.scheduling import (
    QUEUE_STRIDE,
    Candidate,
    fits_node,
    order_candidates,
    queue_keys,
    within_job_share,
)


def candidate(task: str, *, tier: int = 3, scene: str = "s1", creator: str = "a",
              frames: int = 1) -> Candidate:
    return Candidate(task_id=task, job_id=f"job-{task}", creator=creator, scene_id=scene,
                     tier=tier, frames=frames, queued_at=0.0)


def test_an_empty_queue_starts_a_job_now():
    assert queue_keys(3, now=100.0, head=None, creator_tail=None) == [
        100.0, 100.0 + QUEUE_STRIDE, 100.0 + 2 * QUEUE_STRIDE]


def test_a_second_creator_interleaves_from_the_head_of_the_queue():
    """A small job behind a 10,000-frame job is not starved: its tasks sit between the big
    job's from the head on, so it is served from the next lease."""
    big = queue_keys(10_000, now=0.0, head=None, creator_tail=None)
    small = queue_keys(8, now=5.0, head=big[0], creator_tail=None)
    merged = sorted([(key, "big") for key in big] + [(key, "small") for key in small])
    first_small = next(i for i, (_, who) in enumerate(merged) if who == "small")
    assert first_small == 1, "the head keeps its turn, the small job takes the next"
    # ...and the two alternate while both have work.
    assert [who for _, who in merged[:16]].count("small") == 8


def test_a_creator_own_jobs_keep_their_submission_order():
    first = queue_keys(100, now=0.0, head=None, creator_tail=None)
    second = queue_keys(5, now=1.0, head=first[0], creator_tail=first[-1])
    assert min(second) > max(first)


def test_a_new_creator_joins_at_the_head_wherever_the_clock_is():
    """Queue keys are the queue's own order, not the clock: a new creator's job joins at the
    head even when a big job's keys run ahead of the clock, so it cannot jump past a
    third creator already interleaving there."""
    for now in (10.0, 90.0):
        assert queue_keys(2, now=now, head=50.0, creator_tail=None)[0] == (
            50.0 + QUEUE_STRIDE / 2)


def test_tier_priority_comes_before_affinity_and_queue_order():
    window = [candidate("t3", tier=3, scene="cached"), candidate("t1", tier=1),
              candidate("t2", tier=2)]
    ordered = order_candidates(window, cached_scenes={"cached"})
    assert [c.task_id for c in ordered] == ["t1", "t2", "t3"]


def test_affinity_prefers_a_scene_the_node_holds_then_queue_order():
    window = [candidate("a", scene="s1"), candidate("b", scene="s2"),
              candidate("c", scene="s2"), candidate("d", scene="s1")]
    assert [c.task_id for c in order_candidates(window, {"s2"})] == ["b", "c", "a", "d"]
    assert [c.task_id for c in order_candidates(window, ())] == ["a", "b", "c", "d"]


def test_several_tasks_per_lease_stay_within_the_frame_budget():
    assert fits_node([1, 1, 1, 1], max_tasks=3, max_frames=10) == 3
    assert fits_node([4, 4, 4], max_tasks=8, max_frames=10) == 2
    assert fits_node([20, 1], max_tasks=8, max_frames=10) == 1  # a large first task still goes
    assert fits_node([], max_tasks=8, max_frames=10) == 0


def test_a_bounded_node_keeps_within_its_frames_of_a_job():
    assert within_job_share(held=3, frames=1, limit=4)
    assert not within_job_share(held=4, frames=1, limit=4)
    assert within_job_share(held=0, frames=6, limit=4)  # its first task of a job always goes
    assert not within_job_share(held=6, frames=1, limit=4)
    assert within_job_share(held=100, frames=100, limit=None)

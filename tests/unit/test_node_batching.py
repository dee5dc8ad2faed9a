"""How many tasks a node asks for per LeaseTask, and which held leases it heartbeats."""

from __future__ import annotations

from frameproof.v1 import farm_pb2 as pb
from render_node.daemon import MAX_TASKS_AUTO, HeldLease, heartbeat_due, tasks_to_ask


def test_a_configured_count_is_asked_for_as_is() -> None:
    assert tasks_to_ask(4, 60.0, None) == 4
    assert tasks_to_ask(1, 60.0, 0.01) == 1


def test_automatic_asks_one_until_a_task_was_timed_then_half_a_lease_worth() -> None:
    assert tasks_to_ask(0, 60.0, None) == 1
    assert tasks_to_ask(0, 60.0, 10.0) == 3  # 30 s of work
    assert tasks_to_ask(0, 60.0, 45.0) == 1  # slow tasks: one at a time
    assert tasks_to_ask(0, 60.0, 0.01) == MAX_TASKS_AUTO  # tiny tasks: capped


def test_a_rendering_lease_beats_once_per_interval_and_not_before() -> None:
    held = HeldLease(pb.Lease(lease_id="a"), expires=160.0, started=100.0)
    assert not heartbeat_due(held, 109.9, 10.0)  # done within an interval: never beats
    assert heartbeat_due(held, 110.0, 10.0)
    held.last_beat = 110.0
    assert not heartbeat_due(held, 115.0, 10.0)
    assert heartbeat_due(held, 120.0, 10.0)


def test_a_waiting_lease_beats_only_near_its_expiry() -> None:
    waiting = HeldLease(pb.Lease(lease_id="b"), expires=160.0)
    assert not heartbeat_due(waiting, 129.0, 10.0)
    assert heartbeat_due(waiting, 131.0, 10.0)

"""Node rules the servicer applies: claimed benchmark bounds, what a given-back lease counts
as, the history page size, and that a node speaks only for itself."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.domain.errors import Forbidden
from coordinator.domain.nodes import (
    MAX_BENCHMARK_SCORE,
    MAX_HISTORY_EVENTS,
    MIN_BENCHMARK_SCORE,
    STOPPING_PREFIX,
    benchmark_score,
    check_own_node,
    failure_event,
    history_limit,
)
from coordinator.domain.reputation import NodeEvent


def test_a_node_cannot_claim_to_be_a_supercomputer() -> None:
    assert benchmark_score(1e9) == MAX_BENCHMARK_SCORE
    assert benchmark_score(1e-9) == MIN_BENCHMARK_SCORE
    assert benchmark_score(-5.0) == MIN_BENCHMARK_SCORE
    assert benchmark_score(0.0) == 1.0  # not said: the default
    assert benchmark_score(3.5) == 3.5


@given(st.floats(allow_nan=False))
def test_every_claim_lands_in_bounds(claimed: float) -> None:
    assert MIN_BENCHMARK_SCORE <= benchmark_score(claimed) <= MAX_BENCHMARK_SCORE


def test_a_node_stopping_abandons_and_anything_else_crashed() -> None:
    assert failure_event(f"{STOPPING_PREFIX}: SIGTERM") is NodeEvent.ABANDONED
    assert failure_event("blender exited 139") is NodeEvent.CRASH
    assert failure_event("") is NodeEvent.CRASH


def test_history_limit_defaults_and_caps() -> None:
    assert history_limit(0) == 50 and history_limit(-3) == 50
    assert history_limit(7) == 7
    assert history_limit(10**9) == MAX_HISTORY_EVENTS


def test_a_node_speaks_only_for_itself() -> None:
    assert check_own_node("abc", "abc") == "abc"
    with pytest.raises(Forbidden, match="not the public key that signed"):
        check_own_node("abc", "xyz")

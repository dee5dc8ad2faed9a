"""Verdicts and the secret sampling draw, and where refusals become status codes."""

from __future__ import annotations

import random

import grpc
import pytest

from coordinator.api.errors import status_of
from coordinator.domain.errors import DomainError, Forbidden, InvalidRequest, NotFound, Refused
from coordinator.domain.sampling import sample_frames
from coordinator.domain.verdicts import Verdict, decide, peer_audited


def never() -> bool:
    raise AssertionError("a twin is looked for only for an untiled pass")


@pytest.mark.parametrize(("passed", "audited", "tiles", "twin", "verdict"), [
    (True, False, True, never, Verdict.APPROVED),
    (False, False, True, never, Verdict.REJECTED),
    (False, False, False, never, Verdict.REJECTED),
    (True, True, True, never, Verdict.AUDIT),
    (False, True, False, never, Verdict.AUDIT),
    (True, False, False, lambda: True, Verdict.ESCALATED),
    (True, False, False, lambda: False, Verdict.APPROVED),
])
def test_decide(passed: bool, audited: bool, tiles: bool, twin, verdict: Verdict) -> None:
    assert decide(passed, audited=audited, tiles_rendered=tiles, has_twin=twin) is verdict


def test_a_peers_failure_is_always_audited_and_a_share_of_its_passes() -> None:
    assert peer_audited(False, never)  # no draw needed
    rng = random.Random(1)
    audited = sum(peer_audited(True, rng.random, 0.10) for _ in range(10_000))
    assert 850 < audited < 1150


def test_sampling_follows_the_probability() -> None:
    frames = range(10_000)
    assert sample_frames(frames, 1.0) == frozenset(frames)
    assert sample_frames(frames, 0.0) == frozenset()
    drawn = sample_frames(frames, 0.25, random.Random(7).random)
    assert 2300 < len(drawn) < 2700


@pytest.mark.parametrize(("error", "code"), [
    (InvalidRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (Refused("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (Forbidden("x"), grpc.StatusCode.PERMISSION_DENIED),
    (DomainError("x"), grpc.StatusCode.FAILED_PRECONDITION),
])
def test_one_table_maps_refusals_to_status_codes(error: DomainError, code) -> None:
    assert status_of(error) is code

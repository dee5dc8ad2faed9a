"""Per-key rate limits: a key over its rate is slowed down, nobody else is."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from coordinator.api.rate_limit import CallRateLimiter
from frameproof.client import FarmClient, rate_limited
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_burst_then_its_rate():
    clock = Clock()
    limiter = CallRateLimiter(calls_per_second=2, burst=3, clock=clock)
    assert [limiter.retry_after("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.retry_after("alice") == pytest.approx(0.5), "empty: one token in 0.5 s"
    assert limiter.retry_after("bob") == 0.0, "another key has its own bucket"
    clock.now += 0.5
    assert limiter.retry_after("alice") == 0.0
    assert limiter.retry_after("alice") > 0
    clock.now += 100
    assert [limiter.retry_after("alice") for _ in range(4)].count(0.0) == 3, "refills to burst"


def test_exempt_keys_and_the_bound_on_tracked_keys():
    limiter = CallRateLimiter(calls_per_second=1, burst=1, exempt=frozenset({"admin"}),
                              max_keys=100, clock=Clock())
    assert all(limiter.retry_after("admin") == 0.0 for _ in range(50))
    for n in range(1_000):
        limiter.retry_after(f"fresh-{n}")
    assert len(limiter) == 100, "a flood of new keys costs a bounded amount of memory"


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        CallRateLimiter(calls_per_second=0, burst=10)
    with pytest.raises(ValueError):
        CallRateLimiter(calls_per_second=1, burst=0.5)


def calls_refused(client: FarmClient, calls: int) -> list[str]:
    refused = []
    for _ in range(calls):
        try:
            client.jobs.ListJobs(pb.ListJobsRequest(), timeout=10)
        except grpc.RpcError as error:
            assert rate_limited(error), (error.code(), error.details())
            refused.append(error.details())
    return refused


def test_the_coordinator_slows_down_only_the_key_over_its_rate(farm: LocalFarm, tmp_path: Path):
    farm.start_coordinator(extra_args=("--rate-limit", "1", "--rate-burst", "5"))
    with farm.client() as creator, farm.client(tmp_path / "other.json") as other:
        refused = calls_refused(creator, 12)
        assert len(refused) >= 5, refused  # 5 at once, then about 1 per second
        assert "retry in" in refused[0] and "1 calls/s" in refused[0]
        assert calls_refused(other, 3) == [], "another key is not slowed down"
    admin_key = farm.root / "coordinator" / "admin-keypair.json"
    with farm.client(admin_key) as admin:
        assert calls_refused(admin, 12) == [], "the admin is exempt"

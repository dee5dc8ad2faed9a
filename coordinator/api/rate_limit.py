"""Per-key call rate limits: one signed caller cannot use up the coordinator.

Every caller key gets a token bucket (a sustained rate and a burst). The check runs after
the signature is verified, so nobody can drain another key's bucket by naming it. Buckets
live in an LRU of bounded size: a flood of fresh keys costs a bounded amount of memory, and
a forgotten key (idle the longest) starts again with a full bucket, as it would have anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

DEFAULT_CALLS_PER_SECOND = 100.0
DEFAULT_BURST = 1000.0
MAX_TRACKED_KEYS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class CallRateLimiter:
    def __init__(self, calls_per_second: float = DEFAULT_CALLS_PER_SECOND,
                 burst: float = DEFAULT_BURST, exempt: frozenset[str] = frozenset(),
                 max_keys: int = MAX_TRACKED_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if calls_per_second <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = calls_per_second
        self.burst = burst
        self.exempt = exempt
        self._clock = clock
        self._buckets: LRUCache[str, _Bucket] = LRUCache(max_keys)

    def retry_after(self, key: str) -> float:
        """0 when `key` may call now (and the call is counted); else seconds until it may."""
        if key in self.exempt:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

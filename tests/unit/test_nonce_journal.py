"""Replay protection survives a restart: accepted nonces are journalled and read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.api.nonce_journal import NonceJournal
from frameproof.auth import NonceCache, TooManyCalls

WINDOW = 120.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def restarted(folder: Path, clock: Clock) -> NonceCache:
    return NonceCache(WINDOW, log=NonceJournal(folder, WINDOW, clock), now=clock.now)


def test_a_nonce_seen_before_a_restart_is_still_refused_after_it(tmp_path: Path):
    clock = Clock()
    nonces = restarted(tmp_path, clock)
    assert nonces.first_use("key:before", clock.now)
    clock.now += 30
    again = restarted(tmp_path, clock)  # the old process died without closing anything
    assert not again.first_use("key:before", clock.now), "replayed across the restart"
    assert again.first_use("key:after", clock.now)
    clock.now += WINDOW
    assert restarted(tmp_path, clock).first_use("key:before", clock.now), "kept past the window"


def test_the_journal_holds_at_most_two_windows_however_long_it_runs(tmp_path: Path):
    clock = Clock()
    nonces = restarted(tmp_path, clock)
    for call in range(2_000):
        clock.now += 1.0
        assert nonces.first_use(f"key:{call}", clock.now)
    lines = sum(len(path.read_text().splitlines()) for path in tmp_path.iterdir())
    assert lines <= 2 * WINDOW + 1, lines
    again = restarted(tmp_path, clock)
    assert not again.first_use(f"key:{1_999 - int(WINDOW) + 1}", clock.now), "oldest live one"
    assert again.first_use(f"key:{1_999 - int(WINDOW) - 1}", clock.now), "expired one"


def test_a_line_torn_by_a_crash_is_skipped(tmp_path: Path):
    clock = Clock()
    nonces = restarted(tmp_path, clock)
    assert nonces.first_use("key:whole", clock.now)
    with (tmp_path / "nonces.log").open("a") as journal:
        journal.write("1000.0")  # killed in the middle of a line
    again = restarted(tmp_path, clock)
    assert not again.first_use("key:whole", clock.now)
    assert again.first_use("key:next", clock.now)


def test_a_full_cache_refuses_new_calls_instead_of_forgetting_live_nonces():
    nonces = NonceCache(WINDOW, max_entries=3)
    for n in range(3):
        assert nonces.first_use(f"key:{n}", now=float(n))
    with pytest.raises(TooManyCalls):
        nonces.first_use("key:flood", now=3.0)
    assert not nonces.first_use("key:0", now=4.0), "still remembered: its replay is refused"
    assert nonces.first_use("key:later", now=WINDOW + 1.0), "room again once the oldest expire"

"""coordinator/api/blob_http.Reads: which downloads go through the page cache. A blob read
once or twice (a frame: its verifier, its creator) is read from the disk each time; one read
more often (a scene every node fetches) is kept in the cache from its third read on."""

from __future__ import annotations

from coordinator.api.blob_http import CACHE_AFTER_READS, Reads


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_third_read_of_a_blob_and_later_ones_go_through_the_cache():
    reads = Reads(clock=Clock())
    assert [reads.keep_cached("a") for _ in range(5)] == [False, False, True, True, True]
    assert CACHE_AFTER_READS == 2
    assert not reads.keep_cached("b"), "counted per blob"


def test_reads_older_than_the_window_do_not_count():
    clock = Clock()
    reads = Reads(window=60.0, clock=clock)
    assert not reads.keep_cached("a") and not reads.keep_cached("a")
    clock.now += 61
    assert not reads.keep_cached("a"), "an hour-old demand says nothing of today's"
    assert not reads.keep_cached("a")
    assert reads.keep_cached("a")


def test_memory_is_bounded_by_the_blobs_remembered():
    reads = Reads(remembered=3, clock=Clock())
    for _ in range(2):
        reads.keep_cached("a")
    for name in "bcd":  # pushes "a" out
        reads.keep_cached(name)
    assert len(reads._counts) == 3
    assert not reads.keep_cached("a"), "forgotten: counted afresh"

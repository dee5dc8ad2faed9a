"""frameproof.pipeline.pump: every absorber sees every chunk in order, side by side."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from frameproof.pipeline import pump


def _source(data: bytes):  # type: ignore[no-untyped-def]
    position = 0

    def fill(buffer: memoryview) -> int:
        nonlocal position
        n = min(len(buffer), len(data) - position, 1000)  # short fills, as a socket gives
        buffer[:n] = data[position: position + n]
        position += n
        return n

    return fill


def test_each_absorber_sees_every_chunk_in_order_while_the_others_work():
    data = os.urandom(50_000)
    written = bytearray()
    digest = hashlib.sha256()
    both_busy = threading.Barrier(2, timeout=5)  # broken if one waited for the other
    first: set[str] = set()

    def meet(who: str) -> None:
        if who not in first:
            first.add(who)
            both_busy.wait()

    def write(chunk: memoryview) -> None:
        meet("write")
        written.extend(chunk)

    def hash_(chunk: memoryview) -> None:
        meet("hash")
        digest.update(chunk)

    moved = pump(_source(data), write, hash_, buffers=3, buffer_bytes=4096)
    assert moved == len(data)
    assert bytes(written) == data
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert first == {"write", "hash"}, "the two absorbers ran side by side on the first chunk"


def test_a_failing_absorber_stops_the_filling_and_its_error_is_raised():
    data = os.urandom(200_000)
    filled = []
    fill = _source(data)

    def counting_fill(buffer: memoryview) -> int:
        n = fill(buffer)
        filled.append(n)
        return n

    def broken(chunk: memoryview) -> None:
        raise OSError("disk full")

    seen = bytearray()
    with pytest.raises(OSError, match="disk full"):
        pump(counting_fill, seen.extend, broken, buffers=2, buffer_bytes=1000)
    assert len(filled) < len(data) // 1000, "the filling stopped early"

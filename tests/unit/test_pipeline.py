"""frameproof.pipeline: pump's absorbers see every chunk in order, side by side; send_file
sends exactly the bytes asked for, from a cached file (sendfile) or a file-like object."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
from pathlib import Path

import pytest
from farm_helpers import drop_cached_pages

from frameproof.pipeline import SENDFILE_BYTES, cached, pump, send_file


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


def _received(length: int, send) -> bytes:  # type: ignore[no-untyped-def]
    """What the other end of a socket pair reads while `send(sock)` runs."""
    ours, theirs = socket.socketpair()
    got = bytearray()

    def read() -> None:
        while len(got) < length and (chunk := theirs.recv(1 << 20)):
            got.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        send(ours)
    finally:
        ours.close()  # the reader sees the end
        reader.join(30)
        theirs.close()
    return bytes(got)


def test_send_file_sends_the_range_asked_for_with_progress(tmp_path: Path):
    data = os.urandom(2 * SENDFILE_BYTES + 12345)
    path = tmp_path / "blob"
    path.write_bytes(data)  # just written: in the page cache, so sent by sendfile
    offset, length = 4097, len(data) - 4097 - 10
    progress: list[int] = []
    with path.open("rb") as f:
        got = _received(length, lambda sock: send_file(f, offset, length, sock,
                                                        on_sent=progress.append))
    assert got == data[offset:offset + length]
    assert sum(progress) == length and len(progress) >= 3, "progress as it goes"
    assert max(progress) == SENDFILE_BYTES, "a cached file goes by sendfile, in its blocks"
    # A file shorter than asked: an error, not a short send.
    with path.open("rb") as f, pytest.raises(EOFError, match="ended 10 bytes early"):
        _received(len(data), lambda sock: send_file(f, 10, len(data), sock))
    memory = io.BytesIO(data)  # no file descriptor: read in blocks and sent
    assert _received(100, lambda sock: send_file(memory, 5, 100, sock)) == data[5:105]


def test_a_file_not_in_the_page_cache_is_sent_without_filling_it(tmp_path: Path):
    data_size = 3 * SENDFILE_BYTES
    path = tmp_path / "cold.bin"
    path.write_bytes(os.urandom(data_size))
    drop_cached_pages(path)
    with path.open("rb") as f:
        assert not cached(f.fileno(), 0)
        first = _received(data_size, lambda sock: send_file(f, 0, data_size, sock))
        # Sent with O_DIRECT, and looking did not start a read-ahead: still not cached, so
        # the next reader of a blob read once also reads the disk, not the cache's slow fill.
        assert not cached(f.fileno(), 0)
        got = _received(data_size, lambda sock: send_file(f, 0, data_size, sock,
                                                          keep_cached=True))
        assert cached(f.fileno(), 0) and cached(f.fileno(), data_size - 4096), (
            "keep_cached reads through the page cache and leaves the file there")
    assert got == first == path.read_bytes()

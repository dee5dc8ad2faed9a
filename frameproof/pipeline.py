"""Receive big blobs at the speed of the wire: one thread reads into a buffer while others
write and hash the ones before it, and the disk is asked to start writing early.

Used by both ends of a blob transfer over HTTP (coordinator/api/blob_http.py receives
uploads, frameproof/transfer.py receives downloads). Socket reads, file writes and sha256
of large buffers all release the GIL, so the hash (the slowest part, about 2 GB/s on one
core here) runs beside the network and the file write instead of after them, and memory
stays at BUFFERS x BUFFER_BYTES.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import mmap
import os
import queue
import socket
import ssl
import stat
import threading
from collections.abc import Callable
from typing import BinaryIO

BUFFER_BYTES = 4 * 1024 * 1024
BUFFERS = 4  # one being filled, the others being written and hashed


def pump(fill: Callable[[memoryview], int], *absorbers: Callable[[memoryview], None],
         buffers: int = BUFFERS, buffer_bytes: int = BUFFER_BYTES) -> int:
    """Call fill(buffer) until it returns 0 (each call fills up to the buffer's length), and
    hand each filled buffer, in order, to every absorber, each in a thread of its own (a
    file write and a sha256 of the same buffer run side by side, not one after the other);
    return the bytes moved. A buffer is filled again once every absorber is done with it.

    An exception in an absorber stops the filling and is raised here; one in fill waits for
    the buffers already filled to be absorbed, then is raised.
    """
    if not absorbers:
        raise ValueError("pump needs at least one absorber")
    free: queue.Queue[mmap.mmap] = queue.Queue()
    for _ in range(buffers):
        free.put(mmap.mmap(-1, buffer_bytes))  # page-aligned, as O_DIRECT writes need
    lanes: list[queue.Queue[tuple[mmap.mmap, int] | None]] = [queue.Queue() for _ in absorbers]
    pending: dict[int, int] = {}  # id(buffer) -> absorbers not yet done with it
    lock = threading.Lock()
    failure: list[BaseException] = []

    def done_with(buffer: mmap.mmap) -> None:
        with lock:
            pending[id(buffer)] -= 1
            last = not pending[id(buffer)]
        if last:
            free.put(buffer)

    def absorber(absorb: Callable[[memoryview], None],
                 lane: queue.Queue[tuple[mmap.mmap, int] | None]) -> None:
        while (item := lane.get()) is not None:
            buffer, filled = item
            if not failure:
                try:
                    absorb(memoryview(buffer)[:filled])
                except BaseException as exc:  # raised again in the filling thread
                    failure.append(exc)
            done_with(buffer)

    workers = [threading.Thread(target=absorber, args=(absorb, lane), name="blob-absorb",
                                daemon=True) for absorb, lane in zip(absorbers, lanes, strict=True)]
    for worker in workers:
        worker.start()
    moved = 0
    try:
        while not failure:
            buffer = free.get()
            filled = fill(memoryview(buffer))
            if not filled:
                break
            with lock:
                pending[id(buffer)] = len(lanes)
            for lane in lanes:
                lane.put((buffer, filled))
            moved += filled
    finally:
        for lane in lanes:
            lane.put(None)
        for worker in workers:
            worker.join()
    if failure:
        raise failure[0]
    return moved


def _sync_file_range() -> Callable[..., int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):  # not Linux
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2
WRITEBACK_BYTES = 64 * 1024 * 1024


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing this range to disk now, without waiting (Linux
    sync_file_range): the fsync that makes the file durable comes later and finds most of
    the work done (an fsync of a 1 GiB file written in one go took ~0.45 s here). A no-op
    where the call does not exist."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class Writeback:
    """Calls start_writeback every WRITEBACK_BYTES of a file written in order."""

    def __init__(self, fd: int, start: int = 0) -> None:
        self._fd = fd
        self._done = start

    def wrote_up_to(self, end: int) -> None:
        if end - self._done >= WRITEBACK_BYTES:
            start_writeback(self._fd, self._done, end - self._done)
            self._done = end


_DIRECT_ALIGN = 4096


class Appender:
    """Appends to a file, with O_DIRECT where the data and the file's end allow it.

    Why: on this kind of machine (a VM) buffered writes of fresh data ran at 0.1-0.9 GB/s
    (the page cache's new pages are slow to come by) where O_DIRECT wrote 1.3-1.7 GB/s and
    left the final fsync nothing to do. Only whole 4 KiB blocks at a 4 KiB-aligned end of
    file, from page-aligned buffers (pump's), go direct; anything else (the last piece, a
    filesystem without O_DIRECT such as tmpfs, unaligned buffers) is an ordinary write.
    """

    def __init__(self, fd: int, path: str | os.PathLike[str], size: int) -> None:
        self._fd = fd
        self.size = size
        self._direct: int | None = None
        flag = getattr(os, "O_DIRECT", 0)
        if flag:
            try:
                self._direct = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | flag)
            except OSError:
                self._direct = None
        self._writeback = Writeback(fd, size)

    def write(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        if (self._direct is not None and self.size % _DIRECT_ALIGN == 0
                and len(view) >= _DIRECT_ALIGN):
            whole = len(view) - len(view) % _DIRECT_ALIGN
            try:
                written = os.write(self._direct, view[:whole])
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._close_direct()  # not alignable here: ordinary writes from now on
            else:
                self.size += written
                view = view[written:]
        while view:
            written = os.write(self._fd, view)
            self.size += written
            view = view[written:]
        self._writeback.wrote_up_to(self.size)

    def _close_direct(self) -> None:
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None

    def close(self) -> None:
        self._close_direct()


def send_file(f: BinaryIO, offset: int, length: int, sock: socket.socket,
              *, on_sent: Callable[[int], None] | None = None,
              keep_cached: bool = False) -> None:
    """Send `length` bytes of f from offset over sock.

    A file in the page cache goes by sendfile over a plain socket: page cache to socket, no
    copy through this process. Over TLS (Python's sendfile would read 8 KiB at a time) it is
    read in big blocks in this thread while another sends the previous block, and so is a
    file not in the page cache, with O_DIRECT: on this kind of machine (a VM) filling the
    page cache is what costs, a cold buffered read ran at 40-65 MiB/s and 1.4-2 CPU seconds
    per GiB under load where O_DIRECT read 0.6-1.1 GB/s for 0.05 CPU s, and sendfile's small
    reads defeated read-ahead (~85 MiB/s from a cold file). A file whose first block is
    cached counts as cached.

    `keep_cached`: read through the page cache even when the file is not there yet, so the
    next readers find it cached (the caller expects more of them: a scene every node fetches).
    """
    end = offset + length
    direct = None if keep_cached else _direct_reader(f, offset)
    try:
        if direct is not None and offset % _DIRECT_ALIGN and length:
            head = min(length, _DIRECT_ALIGN - offset % _DIRECT_ALIGN)
            data = memoryview(os.pread(f.fileno(), head, offset))
            sock.sendall(data)
            if on_sent is not None:
                on_sent(len(data))
            offset += len(data)
        if direct is None:
            if _regular_file(f) and not isinstance(sock, ssl.SSLSocket):
                _send_cached(f, offset, length, sock, on_sent)
                return
            f.seek(offset)
        position = offset

        def fill(buffer: memoryview) -> int:
            nonlocal position
            if position >= end:
                return 0
            want = min(len(buffer), end - position)
            if direct is not None:
                n = min(os.preadv(direct, [buffer], position), want)
            else:
                n = f.readinto(buffer[:want]) or 0
            if not n:
                raise EOFError(f"{getattr(f, 'name', 'the source')} ended "
                               f"{end - position} bytes early")
            position += n
            return n

        def absorb(data: memoryview) -> None:
            sock.sendall(data)
            if on_sent is not None:
                on_sent(len(data))

        pump(fill, absorb)
    finally:
        if direct is not None:
            os.close(direct)


SENDFILE_BYTES = 8 * 1024 * 1024  # per sendfile call, so progress is reported as it goes


def _send_cached(f: BinaryIO, offset: int, length: int, sock: socket.socket,
                 on_sent: Callable[[int], None] | None) -> None:
    read_sequentially(f.fileno())
    position, end = offset, offset + length
    while position < end:
        sent = sock.sendfile(f, position, min(SENDFILE_BYTES, end - position))
        if not sent:
            raise EOFError(f"{getattr(f, 'name', 'the source')} ended "
                           f"{end - position} bytes early")
        position += sent
        if on_sent is not None:
            on_sent(sent)


def _regular_file(f: BinaryIO) -> bool:
    """Whether f is an open regular file (sendfile's source), not a BytesIO or a pipe."""
    try:
        return stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _direct_reader(f: BinaryIO, offset: int) -> int | None:
    """An O_DIRECT descriptor on f's file when its data at offset is not cached; else None."""
    flag = getattr(os, "O_DIRECT", 0)
    name = getattr(f, "name", None)
    if not (flag and _MINCORE is not None and isinstance(name, str | bytes | os.PathLike)):
        return None
    try:
        if cached(f.fileno(), offset):
            return None  # the page cache is the fast path
        return os.open(name, os.O_RDONLY | os.O_CLOEXEC | flag)
    except OSError:  # a file system without O_DIRECT (tmpfs), or no mapping of it
        return None


class _Mincore:
    """libc's mmap, mincore and munmap: which pages of a file are in memory, found without
    reading any (a read with RWF_NOWAIT, the first way tried, started the kernel's read-ahead,
    so after one O_DIRECT download a blob's first pages were cached and the next download
    took the slow path of filling the page cache for the whole blob)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.mmap, self.mincore, self.munmap = libc.mmap, libc.mincore, libc.munmap
        self.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_int64)
        self.mmap.restype = ctypes.c_void_p
        self.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
        self.mincore.restype = ctypes.c_int
        self.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        self.munmap.restype = ctypes.c_int

    def resident(self, fd: int, offset: int, length: int) -> bytes:
        """One byte per page of the range (offset page-aligned), bit 0 set where cached."""
        address = self.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            pages = ctypes.create_string_buffer(-(-length // mmap.PAGESIZE))
            if self.mincore(address, length, pages) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return pages.raw
        finally:
            self.munmap(address, length)


def _load_mincore() -> _Mincore | None:
    try:
        return _Mincore()
    except (AttributeError, OSError):  # not a POSIX libc
        return None


_MINCORE = _load_mincore()
CACHED_PROBE_BYTES = BUFFER_BYTES


def cached(fd: int, offset: int) -> bool:
    """Whether the file's first block from offset (CACHED_PROBE_BYTES) is all in the page
    cache; True where that cannot be known (it is then read the ordinary way)."""
    start = offset - offset % mmap.PAGESIZE
    length = min(CACHED_PROBE_BYTES, os.fstat(fd).st_size - start)
    if _MINCORE is None or length <= 0:
        return True
    return all(page & 1 for page in _MINCORE.resident(fd, start, length))


def read_sequentially(fd: int) -> None:
    """Tell the kernel a file will be read start to end: here a cold read went from 0.2 to
    1.4 GB/s with it (a larger read-ahead)."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):  # a file system without it
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

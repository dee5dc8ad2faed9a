"""The coordinator's content-addressed blob store.

Layout: `root/objects/ab/abcdef...` holds complete, verified blobs (read-only,
because render nodes on the same host may hard-link them into scene folders);
`root/incoming/<sha>[.<uploader>].part` holds interrupted uploads so a client can
resume; each uploader has its own, so one key's progress never shows another.
A blob only appears under `objects/` through an atomic rename after its
sha256 and size were checked: a crash leaves at most a `.part` file.

Uploading a blob that is already stored is a *proof of possession*
(:class:`BlobProof`): the bytes are compared with the stored copy as they arrive,
nothing is written, and only the end of the stream says whether they all matched.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

from frameproof.manifest import is_sha256
from frameproof.pipeline import Appender

DEFAULT_MAX_BLOB_BYTES = 8 * 1024**3
_HASH_BLOCK = 1024 * 1024

# Errors that mean "no room": a full disk, a quota, a file-size limit.
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # disk full, quota, file size limit


class BlobError(Exception):
    """Base class of blob store errors; messages are meant for the uploader."""


class InvalidSha256(BlobError, ValueError):
    """A sha256 string that is not 64 lowercase hex digits."""


class BlobTooLarge(BlobError):
    """The blob exceeds the store's size limit, or a caller's read limit."""


class BlobOverrun(BlobError):
    """More data was sent than the size the upload declared."""


class BlobCorrupt(BlobError):
    """The uploaded content does not match its sha256 or size; nothing was stored."""


class BlobOffsetMismatch(BlobError):
    """An upload tried to start somewhere other than where the partial upload ends."""

    def __init__(self, message: str, received_bytes: int) -> None:
        super().__init__(message)
        self.received_bytes = received_bytes


class BlobBusy(BlobError):
    """Another upload of the same blob is in progress."""


class BlobStoreFull(BlobError):
    """The disk (or quota) ran out while writing; the partial upload was discarded."""


class BlobWriteFailed(BlobError):
    """The disk refused a write or a sync for another reason than room (EIO, say):
    nothing was kept, and the same upload may succeed later."""


class BlobNotFound(BlobError):
    """The blob is not stored."""


def check_sha256(sha256: str) -> str:
    """Return sha256 if it is 64 lowercase hex digits, else raise InvalidSha256.

    Strict because the string becomes a file name: nothing like '../' may pass.
    """
    if not is_sha256(sha256):
        shown = sha256[:80] if isinstance(sha256, str) else type(sha256).__name__
        raise InvalidSha256(f"{shown!r} is not a sha256 (64 lowercase hex digits)")
    return sha256


class BlobStore:
    def __init__(self, root: Path, *, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.root = Path(root)
        self.max_blob_bytes = max_blob_bytes
        self._objects = self.root / "objects"
        self._incoming = self.root / "incoming"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._incoming.mkdir(parents=True, exist_ok=True)
        self._objects_dir = str(self._objects)
        self._incoming_dir = str(self._incoming)

    def _object_file(self, sha256: str) -> str:
        """objects/<sh>/<sha256>, as a string: the hot paths stat it without pathlib."""
        check_sha256(sha256)
        return f"{self._objects_dir}/{sha256[:2]}/{sha256}"

    def _part_file(self, sha256: str, uploader: str = "") -> str:
        check_sha256(sha256)
        return f"{self._incoming_dir}/{sha256}{_uploader_tag(uploader)}.part"

    def _object_path(self, sha256: str) -> Path:
        return Path(self._object_file(sha256))

    def _part_path(self, sha256: str, uploader: str = "") -> Path:
        return Path(self._part_file(sha256, uploader))

    def _proof_path(self, sha256: str, uploader: str) -> Path:
        check_sha256(sha256)
        return self._incoming / f"{sha256}{_uploader_tag(uploader)}.proof"

    def has(self, sha256: str) -> bool:
        return os.path.isfile(self._object_file(sha256))  # every upload and blob check asks

    def has_partial(self, sha256: str, uploader: str = "") -> bool:
        """Has this uploader an interrupted upload of the blob (to resume, not restart)?"""
        return os.path.exists(self._part_file(sha256, uploader))

    def path(self, sha256: str) -> Path:
        path = self._object_path(sha256)
        if not path.is_file():
            raise BlobNotFound(f"blob {sha256} is not stored on this coordinator")
        return path

    def size(self, sha256: str) -> int:
        # One stat: every delivered frame's image is checked by size.
        try:
            status = os.stat(self._object_file(sha256))
        except FileNotFoundError:
            raise BlobNotFound(f"blob {sha256} is not stored on this coordinator") from None
        if not stat.S_ISREG(status.st_mode):
            raise BlobNotFound(f"blob {sha256} is not stored on this coordinator")
        return status.st_size

    def received_bytes(self, sha256: str, uploader: str = "") -> int:
        """How far this uploader's upload (or proof) of this blob got (0 if none)."""
        try:
            return os.stat(self._part_file(sha256, uploader)).st_size
        except FileNotFoundError:
            pass
        if uploader and self.has(sha256):
            return _read_proof_state(self._proof_path(sha256, uploader))[0]
        return 0

    def open_upload(self, sha256: str, size: int, offset: int,
                    uploader: str = "") -> BlobUpload | BlobProof:
        """Start or resume this uploader's upload; offset must be exactly received_bytes().

        A blob already stored is not written again: an uploader without a partial of its own
        gets a BlobProof, which compares the bytes with the stored copy. An uploader that had
        begun before the blob was stored finishes its own upload (the same answers either
        way, so the switch does not tell it that someone else stored the blob meanwhile).
        """
        check_sha256(sha256)
        if size < 0:
            raise BlobError(f"blob size {size} is negative")
        if size > self.max_blob_bytes:
            raise BlobTooLarge(
                f"blob {sha256} is {size} bytes; this store accepts at most "
                f"{self.max_blob_bytes} bytes per blob"
            )
        if uploader and self.has(sha256) and not self._part_path(sha256, uploader).exists():
            return BlobProof(self, sha256, size, offset, uploader)
        return BlobUpload(self, sha256, size, offset, uploader)

    def put_bytes(self, data: bytes, sha256: str | None = None) -> str:
        """Store a blob held whole in memory (a manifest, a frame sent in one message) in
        one go; returns its sha256. With `sha256` the data must hash to it: BlobCorrupt,
        nothing stored, otherwise."""
        sha256 = self._checked(data, sha256)
        if self.has(sha256):
            return sha256
        # Plain os calls on string paths, read-only from its creation: a node's frames come
        # this way, thousands a second across a farm.
        tmp, fd = self._write_incoming(data, sha256)
        try:
            try:
                os.fsync(fd)
            except OSError as exc:
                raise _write_error(exc, self.root, sha256) from exc
            finally:
                os.close(fd)
            folder = self._place(tmp, sha256)
            if folder:
                _fsync_dir(folder)
        finally:
            with contextlib.suppress(FileNotFoundError):  # installed
                os.unlink(tmp)
        return sha256

    def put_many(self, blobs: Sequence[tuple[bytes, str]]) -> list[BlobError | None]:
        """Several small blobs held in memory (BatchUploadBlobs, DeliverTasks), each checked like
        `put_bytes` and answered on its own: None (stored, or stored before) or the
        BlobError that refused it, nothing of it kept.

        Durable with two barriers for the whole batch instead of two fsyncs per blob (the
        batch's CPU cost was mostly those): every file's bytes reach the disk before any
        is renamed into objects/, and the renames before the call returns. On Linux a
        barrier is one syncfs(2) of the store's filesystem; elsewhere, an fsync per file
        and per folder as `put_bytes` does.
        """
        answers: list[BlobError | None] = [None] * len(blobs)
        written: list[tuple[int, str, str, int]] = []  # (index, sha256, tmp, fd)
        try:
            for index, (data, sha256) in enumerate(blobs):
                try:
                    sha256 = self._checked(data, sha256)
                    if not self.has(sha256):
                        tmp, fd = self._write_incoming(data, sha256)
                        written.append((index, sha256, tmp, fd))
                except BlobError as exc:
                    answers[index] = exc
            if not written:
                return answers
            try:
                self._barrier([fd for _, _, _, fd in written], ())
            except OSError as exc:
                for index, sha256, _, _ in written:
                    answers[index] = _write_error(exc, self.root, sha256)
                return answers
            folders: dict[str, None] = {}
            placed = []
            for index, sha256, tmp, _ in written:
                try:
                    folder = self._place(tmp, sha256)
                except OSError as exc:
                    answers[index] = _write_error(exc, self.root, sha256)
                    continue
                placed.append((index, sha256))
                if folder:
                    folders[folder] = None
            try:
                self._barrier((), folders)
            except OSError as exc:  # in place, but maybe not after a power loss: resend
                for index, sha256 in placed:
                    answers[index] = _write_error(exc, self.root, sha256)
        finally:
            for _, _, tmp, fd in written:
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):  # installed
                    os.unlink(tmp)
        return answers

    def _checked(self, data: bytes, sha256: str | None) -> str:
        """The data's sha256, which must be `sha256` when given, within the size limit."""
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and digest != sha256:
            raise BlobCorrupt(_mismatch_message(sha256, len(data)))
        if len(data) > self.max_blob_bytes:
            raise BlobTooLarge(f"blob {digest} is {len(data)} bytes; this store accepts at "
                               f"most {self.max_blob_bytes} bytes per blob")
        return digest

    def _write_incoming(self, data: bytes, sha256: str) -> tuple[str, int]:
        """A new read-only file in incoming/ holding `data`, not yet synced: (its path,
        its open descriptor)."""
        tmp = f"{self._incoming_dir}/{sha256}.{os.urandom(8).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            os.close(fd)
            os.unlink(tmp)
            raise _write_error(exc, self.root, sha256) from exc
        return tmp, fd

    def _place(self, tmp: str, sha256: str) -> str | None:
        """Rename a written file to its object name; returns the folder to sync, or None
        when the blob was stored meanwhile (the caller drops `tmp`)."""
        target = self._object_file(sha256)
        if os.path.isfile(target):
            return None
        folder = os.path.dirname(target)
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder)
        os.replace(tmp, target)
        return folder

    def _barrier(self, files: Sequence[int], folders: Iterable[str]) -> None:
        """Make the given open files' contents, or the given folders' entries, durable."""
        if _SYNCFS is not None:
            fd = os.open(self._objects_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if _SYNCFS(fd) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, os.strerror(code))
            finally:
                os.close(fd)
            return
        for fd in files:
            os.fsync(fd)
        for folder in folders:
            _fsync_dir(folder)

    def read_bytes(self, sha256: str, *, limit: int) -> bytes:
        """Read a whole small blob; refuses blobs over `limit` bytes (untrusted sizes)."""
        path = self.path(sha256)
        with open(path, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise BlobTooLarge(f"blob {sha256} is larger than the {limit} bytes allowed here")
        return data

    def _install(self, source: Path, sha256: str) -> None:
        """Atomically move a verified file into objects/ and make it read-only.

        If another uploader stored the same content first, the verified copy is dropped:
        each blob is stored once.
        """
        target = self._object_path(sha256)
        if target.is_file():
            source.unlink(missing_ok=True)
            return
        target.parent.mkdir(exist_ok=True)
        os.chmod(source, 0o444)
        os.replace(source, target)
        _fsync_dir(target.parent)


class BlobUpload:
    """One upload of one blob into `incoming/<sha>.part`, appended to in order.

    Holds an exclusive flock on the .part file, so two streams can never
    interleave bytes of the same blob (the second gets BlobBusy); the lock
    goes away with the process if the coordinator crashes.
    """

    def __init__(self, store: BlobStore, sha256: str, size: int, offset: int,
                 uploader: str = "") -> None:
        self.sha256 = sha256
        self.size = size
        self._store = store
        self._part = store._part_path(sha256, uploader)
        self._hash = hashlib.sha256()
        fd = os.open(self._part, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlobBusy(
                f"another upload of blob {sha256} is in progress; retry in a moment"
            ) from None
        self._file = os.fdopen(fd, "r+b", buffering=0)
        try:
            received = os.fstat(fd).st_size
            if received > size:
                # A partial longer than the blob can only come from a lying
                # client; its bytes are useless.
                os.ftruncate(fd, 0)
                received = 0
            if offset != received:
                raise BlobOffsetMismatch(
                    f"upload of blob {sha256} must resume at offset {received}, not {offset}",
                    received,
                )
            self._rehash_partial(received)
        except BaseException:
            self._file.close()
            raise
        self.received = received
        self._appender = Appender(fd, self._part, received)

    def _rehash_partial(self, length: int) -> None:
        self._file.seek(0)
        remaining = length
        while remaining:
            block = self._file.read(min(_HASH_BLOCK, remaining))
            if not block:
                raise BlobCorrupt(f"partial upload of blob {self.sha256} shrank while reading")
            self._hash.update(block)
            remaining -= len(block)

    def write(self, data: bytes) -> None:
        """Append data; refuses going past the declared size."""
        self._append(data)
        self._hash.update(data)

    @property
    def absorbers(self) -> tuple[Callable[[memoryview], None], ...]:
        """`write` as two steps that may run side by side, each in its own thread
        (frameproof.pipeline.pump): the file write, the sha256. Each sees every chunk in
        order; `commit` comes after both."""
        return self._append, self._hash.update

    def _append(self, data: bytes | memoryview) -> None:
        if self.received + len(data) > self.size:
            raise BlobOverrun(
                f"upload of blob {self.sha256} sent more than its declared {self.size} bytes"
            )
        try:
            self._appender.write(data)
        except OSError as exc:
            self._fail_if_full(exc)
            raise
        self.received += len(data)

    def commit(self) -> None:
        """Verify sha256 and size, then move the blob into place atomically."""
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:
            self._fail_if_full(exc)
            raise
        if self.received != self.size or self._hash.hexdigest() != self.sha256:
            self._discard()
            raise BlobCorrupt(_mismatch_message(self.sha256, self.size))
        self._store._install(self._part, self.sha256)
        self.close()

    def close(self) -> None:
        """Stop writing and release the lock; the partial stays for a later resume."""
        if not self._file.closed:
            self._appender.close()
            self._file.close()

    def _discard(self) -> None:
        self._part.unlink(missing_ok=True)
        self.close()

    def _fail_if_full(self, exc: OSError) -> None:
        if exc.errno in FULL_ERRNOS:
            self._discard()
            raise BlobStoreFull(_full_message(self._store.root, self.sha256)) from exc

    def __enter__(self) -> BlobUpload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BlobProof:
    """An upload of a blob that is already stored: the bytes are compared, not written.

    Same protocol and answers as :class:`BlobUpload` (offsets, resume, overrun, the one
    mismatch message at the end), so an uploader cannot tell whether it is storing a new
    blob or proving an old one. Each chunk is compared with the stored copy at the same
    offset; a difference is remembered but not reported until the stream is complete, so
    the comparison is no oracle for guessing the content piece by piece. Progress (offset
    and "all equal so far") lives in `incoming/<sha>.<uploader>.proof` for a resume.
    """

    def __init__(self, store: BlobStore, sha256: str, size: int, offset: int,
                 uploader: str) -> None:
        self.sha256 = sha256
        self.size = size
        self._state_path = store._proof_path(sha256, uploader)
        fd = os.open(self._state_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlobBusy(
                f"another upload of blob {sha256} is in progress; retry in a moment"
            ) from None
        self._lock = fd
        received = 0
        try:
            received, equal = _read_proof_state(self._state_path)
            if received > size:
                received, equal = 0, True
            if offset != received:
                raise BlobOffsetMismatch(
                    f"upload of blob {sha256} must resume at offset {received}, not {offset}",
                    received,
                )
            self._stored = open(store.path(sha256), "rb")  # noqa: SIM115 - closed in close()
        except BaseException:
            if received == 0:  # this open created the (empty) state file: leave nothing
                self._state_path.unlink(missing_ok=True)
            os.close(fd)
            raise
        self._stored_size = os.fstat(self._stored.fileno()).st_size
        self._equal = equal
        self.received = received

    @property
    def absorbers(self) -> tuple[Callable[[memoryview], None], ...]:
        """As BlobUpload's: here one step, the comparison."""
        return (self.write,)

    def write(self, data: bytes | memoryview) -> None:
        """Compare data with the stored copy at the current offset."""
        if self.received + len(data) > self.size:
            raise BlobOverrun(
                f"upload of blob {self.sha256} sent more than its declared {self.size} bytes"
            )
        if self._equal:
            self._stored.seek(self.received)
            self._equal = self._stored.read(len(data)) == data
        self.received += len(data)

    def commit(self) -> None:
        """All bytes sent: they proved possession if every one matched the stored copy."""
        proven = self._equal and self.received == self.size == self._stored_size
        self._state_path.unlink(missing_ok=True)
        self.received, self._equal = 0, True
        self.close()
        if not proven:
            raise BlobCorrupt(_mismatch_message(self.sha256, self.size))

    def close(self) -> None:
        """Remember how far the proof got (for a resume) and release the lock."""
        if self._stored.closed:
            return
        self._stored.close()
        try:
            if self.received:
                state = json.dumps({"received": self.received, "equal": self._equal})
                os.ftruncate(self._lock, 0)
                os.pwrite(self._lock, state.encode(), 0)  # torn by a crash: read as 0
            else:
                self._state_path.unlink(missing_ok=True)
        finally:
            os.close(self._lock)

    def __enter__(self) -> BlobProof:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _uploader_tag(uploader: str) -> str:
    """A file-name-safe tag per uploader key ("" for uploads not tied to a key)."""
    if not uploader:
        return ""
    return "." + hashlib.sha256(uploader.encode()).hexdigest()[:32]


def _read_proof_state(path: Path) -> tuple[int, bool]:
    try:
        state = json.loads(path.read_text() or "{}")
        return int(state.get("received", 0)), bool(state.get("equal", True))
    except (FileNotFoundError, ValueError, TypeError, AttributeError):
        return 0, True


def _mismatch_message(sha256: str, size: int) -> str:
    """One message for every upload whose content is not what it declared (new or stored
    blob alike: the wording must not say which)."""
    return (
        f"uploaded content does not match the declared sha256 {sha256} and size {size}; "
        "nothing was stored, upload the blob again from offset 0"
    )


def _full_message(root: Path, sha256: str) -> str:
    try:
        free = f"{os.statvfs(root).f_bavail * os.statvfs(root).f_frsize} bytes free"
    except OSError:
        free = "free space unknown"
    return (
        f"the coordinator's blob store at {root} is full ({free}); the partial upload of "
        f"{sha256} was discarded. Free disk space on the coordinator, then upload again."
    )


def _write_error(exc: OSError, root: Path, sha256: str) -> BlobError:
    """A failed write as the uploader should read it."""
    if exc.errno in FULL_ERRNOS:
        return BlobStoreFull(_full_message(root, sha256))
    return BlobWriteFailed(f"blob {sha256} could not be written on the coordinator: "
                           f"{os.strerror(exc.errno) if exc.errno else exc}")


def _syncfs() -> Callable[[int], int] | None:
    """syncfs(2) from the C library (Linux), or None."""
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_SYNCFS = _syncfs() if sys.platform == "linux" else None


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

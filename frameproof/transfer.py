"""Client side of blob transfer: upload what the coordinator lacks, download resumably.

Synchronous stubs, because the creator CLI and the render node do one
transfer at a time. Every call carries a deadline; UNAVAILABLE, ABORTED (a
concurrent upload of the same blob) and interrupted streams are retried with
exponential backoff, each retry resuming from where the last one stopped.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, TypeVar

import grpc

from frameproof.client import rate_limited
from frameproof.manifest import is_sha256, sha256_file
from frameproof.v1 import farm_pb2, farm_pb2_grpc

CHUNK_BYTES = 1024 * 1024
ATTEMPTS = 5
BACKOFF_SECONDS = 0.2
FIND_BATCH = 1000  # blobs per FindMissingBlobs request, well under the server's cap

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}

Progress = Callable[[int, int], None]
T = TypeVar("T")


class TransferError(Exception):
    """A transfer failed for good (after retries, or for a reason retrying cannot fix)."""


class _Interrupted(Exception):
    """A stream ended before the blob was complete; retried like UNAVAILABLE."""


def upload_files(
    stub: farm_pb2_grpc.BlobStoreStub,
    files: Mapping[str, Path],
    *,
    on_progress: Progress | None = None,
    timeout: float = 600,
) -> int:
    """Upload the blobs the coordinator lacks (resuming partials); return bytes sent.

    on_progress(sent, total_to_send) counts only bytes that still had to go.
    """
    sizes = {}
    for sha, path in files.items():
        if not is_sha256(sha):
            raise TransferError(f"{sha!r} is not a sha256 (64 lowercase hex digits)")
        sizes[sha] = os.stat(path).st_size
    missing = _find_missing(stub, {sha: sizes[sha] for sha in sizes}, timeout)
    total = sum(sizes[sha] - received for sha, received in missing.items())
    sent = 0

    def count(n: int) -> None:
        nonlocal sent
        sent += n
        if on_progress:
            on_progress(sent, total)

    for sha, received in missing.items():
        path = Path(files[sha])
        with open(path, "rb") as f:
            _upload_one(stub, sha, sizes[sha], f, received, count, timeout, check_file=path)
    return sent


def upload_bytes(stub: farm_pb2_grpc.BlobStoreStub, data: bytes, *, timeout: float = 60) -> str:
    """Upload a small blob (a manifest) if the coordinator lacks it; return its sha256."""
    sha = hashlib.sha256(data).hexdigest()
    missing = _find_missing(stub, {sha: len(data)}, timeout)
    if sha in missing:
        _upload_one(stub, sha, len(data), io.BytesIO(data), missing[sha], None, timeout)
    return sha


def download_blob(
    stub: farm_pb2_grpc.BlobStoreStub,
    ref_sha256: str,
    dest: Path,
    *,
    on_progress: Progress | None = None,
    timeout: float = 600,
) -> Path:
    """Download a blob to dest, resuming `dest.part`; verified before it is renamed into place."""
    if not is_sha256(ref_sha256):
        raise TransferError(f"{ref_sha256!r} is not a sha256 (64 lowercase hex digits)")
    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == ref_sha256:
        return dest
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    restarted = False

    def attempt(_number: int) -> Path:
        nonlocal restarted
        _download_into(stub, ref_sha256, part, on_progress, timeout)
        if sha256_file(part) != ref_sha256:
            part.unlink()
            if restarted:
                raise TransferError(
                    f"downloaded blob {ref_sha256} does not match its sha256; "
                    "the coordinator's copy may be damaged"
                )
            restarted = True  # most likely a stale .part of other content
            raise _Interrupted("the downloaded bytes did not match; restarting from 0")
        os.replace(part, dest)
        return dest

    return _retrying(f"download of blob {ref_sha256}", attempt)


# ---------------------------------------------------------------- internals


def _find_missing(
    stub: farm_pb2_grpc.BlobStoreStub, sizes: Mapping[str, int], timeout: float
) -> dict[str, int]:
    """sha -> bytes the server already holds, for each blob it lacks."""
    refs = [farm_pb2.BlobRef(sha256=sha, size=size) for sha, size in sizes.items()]
    missing: dict[str, int] = {}
    for start in range(0, len(refs), FIND_BATCH):
        request = farm_pb2.FindMissingBlobsRequest(blobs=refs[start : start + FIND_BATCH])
        response = _retrying(
            "FindMissingBlobs", lambda _n, r=request: stub.FindMissingBlobs(r, timeout=timeout)
        )
        for status in response.missing:
            missing[status.blob.sha256] = status.received_bytes
    return missing


def _upload_one(
    stub: farm_pb2_grpc.BlobStoreStub,
    sha: str,
    size: int,
    source: BinaryIO,
    offset: int,
    count: Callable[[int], None] | None,
    timeout: float,
    *,
    check_file: Path | None = None,
) -> None:
    def attempt(number: int) -> None:
        start = offset
        if number > 1:  # the server knows best where to resume
            missing = _find_missing(stub, {sha: size}, timeout)
            if sha not in missing:
                return
            start = missing[sha]
        try:
            response = stub.UploadBlob(_chunks(sha, size, source, start, count), timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise _Interrupted(exc.details()) from exc  # stale offset: ask again
            if exc.code() == grpc.StatusCode.DATA_LOSS:
                if check_file is not None and sha256_file(check_file) != sha:
                    raise TransferError(
                        f"{check_file} changed since it was packed: its sha256 is no "
                        f"longer {sha}; pack the scene again"
                    ) from exc
                raise _Interrupted(exc.details()) from exc  # damaged in transit
            raise
        if not response.stored:
            raise _Interrupted(f"server holds {response.received_bytes} of {size} bytes")

    _retrying(f"upload of blob {sha}", attempt)


def _chunks(
    sha: str, size: int, source: BinaryIO, offset: int, count: Callable[[int], None] | None
) -> Iterator[farm_pb2.UploadChunk]:
    source.seek(offset)
    ref = farm_pb2.BlobRef(sha256=sha, size=size)
    first = True
    while True:
        data = source.read(CHUNK_BYTES)
        if data or first:
            chunk = farm_pb2.UploadChunk(offset=offset, data=data, crc32=zlib.crc32(data))
            if first:
                chunk.blob.CopyFrom(ref)
            yield chunk
            if count:
                count(len(data))
        if not data:
            return
        first = False
        offset += len(data)


def _download_into(
    stub: farm_pb2_grpc.BlobStoreStub,
    sha: str,
    part: Path,
    on_progress: Progress | None,
    timeout: float,
) -> None:
    offset = part.stat().st_size if part.exists() else 0
    total = None
    try:
        with open(part, "ab") as f:
            for chunk in stub.DownloadBlob(
                farm_pb2.DownloadBlobRequest(sha256=sha, offset=offset), timeout=timeout
            ):
                if chunk.offset != offset:
                    raise TransferError(
                        f"server sent blob {sha} at offset {chunk.offset}, expected {offset}"
                    )
                total = chunk.total_size
                f.write(chunk.data)
                offset += len(chunk.data)
                if on_progress:
                    on_progress(offset, total)
            f.flush()
            os.fsync(f.fileno())
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise TransferError(f"the coordinator does not have blob {sha}") from exc
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and offset > 0:
            part.unlink(missing_ok=True)  # .part longer than the blob: start over
            raise _Interrupted(exc.details()) from exc
        raise
    if total is None or offset != total:
        raise _Interrupted(f"stream ended at byte {offset} of {total}")


def _retrying(what: str, call: Callable[[int], T]) -> T:
    """Run call(attempt_number), retrying transient failures with exponential backoff."""
    for number in range(1, ATTEMPTS + 1):
        try:
            return call(number)
        except grpc.RpcError as exc:
            code = exc.code()
            if (code not in _RETRYABLE and not rate_limited(exc)) or number == ATTEMPTS:
                raise TransferError(f"{what} failed: {code.name}: {exc.details()}") from exc
        except _Interrupted as exc:
            if number == ATTEMPTS:
                raise TransferError(f"{what} failed after {ATTEMPTS} attempts: {exc}") from exc
        time.sleep(BACKOFF_SECONDS * 2 ** (number - 1) * (0.5 + random.random()))
    raise AssertionError("unreachable")

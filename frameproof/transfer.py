"""Client side of blob transfer: upload what the coordinator lacks, download resumably.

Synchronous stubs, because the creator CLI and the render node do one
transfer at a time. Small blobs the coordinator lacks entirely (a node's frames, a scene's
textures) go several to a BatchUploadBlobs call; the rest are streamed. Every call carries
a deadline; UNAVAILABLE, ABORTED (a concurrent upload of the same blob) and interrupted
streams are retried with exponential backoff, each retry resuming from where the last one
stopped.

Big blobs go over the coordinator's HTTP endpoint when it has one (a FarmClient's stub
asks once with GetBlobEndpoint; coordinator/api/blob_http.py): the same signed request, the
body read and sent in big blocks and received into reused buffers, hashed while it arrives. Small
blobs (frames, manifests), unix-socket clients, clients given several coordinators (the
streams fail over) and coordinators without the endpoint use the gRPC streams; an endpoint
that cannot be reached falls back to them too.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import random
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import grpc
from solders.keypair import Keypair

from frameproof.auth import sign_call
from frameproof.client import DEFAULT_RETRIES, BlobStub, Retries, rate_limited
from frameproof.limits import BATCH_BLOB_BYTES, BATCH_UPLOAD_BLOBS, BATCH_UPLOAD_BYTES
from frameproof.manifest import is_sha256, sha256_file
from frameproof.pipeline import Appender, pump, send_file
from frameproof.v1 import farm_pb2, farm_pb2_grpc

CHUNK_BYTES = 1024 * 1024
FIND_BATCH = 1000  # blobs per FindMissingBlobs request, well under the server's cap

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
HTTP_MIN_BYTES = 4 * 1024 * 1024  # smaller uploads fit one or a few gRPC messages
HTTP_UPLOAD_METHOD = "/frameproof.v1.BlobStore/UploadBlob"  # what an HTTP request signs
HTTP_DOWNLOAD_METHOD = "/frameproof.v1.BlobStore/DownloadBlob"
# HTTP answers worth another try (a concurrent upload, a rate limit, a full server) and the
# one that says the upload's offset is stale (ask again where to resume).
_HTTP_RETRYABLE = {409, 423, 429, 503}
BUSY = 503  # the endpoint's transfer limit: this transfer takes the gRPC stream instead

Progress = Callable[[int, int], None]
T = TypeVar("T")


class TransferError(Exception):
    """A transfer failed for good (after retries, or for a reason retrying cannot fix)."""


class _Interrupted(Exception):
    """A stream ended before the blob was complete; retried like UNAVAILABLE."""


class _Unreachable(_Interrupted):
    """The HTTP endpoint does not answer (a firewall, another host): use the streams."""


class _Refused(Exception):
    """The HTTP endpoint answered with an error status; the text is the coordinator's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


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

    batched = _upload_small(stub, files, sizes, missing, count, timeout)
    for sha, received in missing.items():
        if sha in batched:
            continue
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
    max_bytes: int | None = None,
) -> Path:
    """Download a blob to dest, resuming `dest.part`; verified before it is renamed into place.

    ``max_bytes``: refuse (TransferError) a blob the coordinator says, or sends, is larger.
    """
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
        endpoint = _http_endpoint(stub)
        digest = None
        if endpoint is not None:
            try:
                digest = _http_download_into(endpoint, ref_sha256, part, on_progress, timeout,
                                             max_bytes)
            except _Unreachable:
                _without_http(stub)
                raise
            except _Refused as exc:
                if exc.status != BUSY:
                    raise
        if digest is None:  # no endpoint, or it is at its transfer limit: the stream
            _download_into(stub, ref_sha256, part, on_progress, timeout, max_bytes)
            digest = sha256_file(part)
        if digest != ref_sha256:
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

    return _retrying(f"download of blob {ref_sha256}", attempt, _retries(stub))


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
            "FindMissingBlobs", lambda _n, r=request: stub.FindMissingBlobs(r, timeout=timeout),
            _retries(stub),
        )
        for status in response.missing:
            missing[status.blob.sha256] = status.received_bytes
    return missing


def _upload_small(stub: farm_pb2_grpc.BlobStoreStub, files: Mapping[str, Path],
                  sizes: Mapping[str, int], missing: Mapping[str, int],
                  count: Callable[[int], None], timeout: float) -> set[str]:
    """Send the small blobs the coordinator lacks entirely several to a BatchUploadBlobs
    call (a node's frames: one call, not one stream each); return those it stored. A blob
    it refused (changed on disk, say) is left to the streams, which say why; a coordinator
    without the call (an older one) gets streams from then on."""
    if not getattr(stub, "batch_upload", True):
        return set()
    small = [sha for sha, received in missing.items()
             if received == 0 and sizes[sha] <= BATCH_BLOB_BYTES]
    stored: set[str] = set()
    for group in _batches(small, sizes):
        request = farm_pb2.BatchUploadBlobsRequest(blobs=[
            farm_pb2.BlobData(blob=farm_pb2.BlobRef(sha256=sha, size=sizes[sha]),
                              data=Path(files[sha]).read_bytes()) for sha in group])

        def attempt(_number: int, r: farm_pb2.BatchUploadBlobsRequest = request
                    ) -> farm_pb2.BatchUploadBlobsResponse | None:
            try:
                response: farm_pb2.BatchUploadBlobsResponse = stub.BatchUploadBlobs(
                    r, timeout=timeout)
                return response
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return None
                raise

        response = _retrying("BatchUploadBlobs", attempt, _retries(stub))
        if response is None:
            if isinstance(stub, BlobStub):
                stub.batch_upload = False
            return stored
        for result in response.results:
            if result.code == grpc.StatusCode.OK.value[0] and result.blob.sha256 in sizes:
                stored.add(result.blob.sha256)
                count(sizes[result.blob.sha256])
    return stored


def _batches(shas: list[str], sizes: Mapping[str, int]) -> Iterator[list[str]]:
    """`shas` in groups that fit one BatchUploadBlobs call."""
    group: list[str] = []
    total = 0
    for sha in shas:
        if group and (total + sizes[sha] > BATCH_UPLOAD_BYTES
                      or len(group) == BATCH_UPLOAD_BLOBS):
            yield group
            group, total = [], 0
        group.append(sha)
        total += sizes[sha]
    if group:
        yield group


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
        endpoint = _http_endpoint(stub) if size >= HTTP_MIN_BYTES else None
        try:
            response = None
            if endpoint is not None:
                try:
                    response = _http_upload(endpoint, sha, size, source, start, count, timeout)
                except _Refused as exc:
                    if exc.status != BUSY:
                        raise
            if response is None:  # no endpoint, or it is at its transfer limit: the stream
                response = stub.UploadBlob(_chunks(sha, size, source, start, count),
                                           timeout=timeout)
        except _Unreachable:
            _without_http(stub)
            raise
        except _Refused as exc:
            if exc.status == 422 and check_file is not None and sha256_file(check_file) != sha:
                raise TransferError(
                    f"{check_file} changed since it was packed: its sha256 is no "
                    f"longer {sha}; pack the scene again"
                ) from exc
            if exc.status == 422:
                raise _Interrupted(exc.message) from exc  # damaged in transit
            raise
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

    _retrying(f"upload of blob {sha}", attempt, _retries(stub))


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
    max_bytes: int | None = None,
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
                if max_bytes is not None and max(total, offset + len(chunk.data)) > max_bytes:
                    part.unlink(missing_ok=True)
                    raise TransferError(f"blob {sha} is over the {max_bytes}-byte limit")
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


# ---------------------------------------------------------------- over HTTP


@dataclass(frozen=True)
class _Endpoint:
    host: str
    port: int
    keypair: Keypair = field(repr=False)  # never printed: it holds the secret key
    tls: ssl.SSLContext | None


def _http_endpoint(stub: farm_pb2_grpc.BlobStoreStub) -> _Endpoint | None:
    """The coordinator's HTTP blob endpoint, asked once per stub; None: use the streams
    (also with several coordinators, whose failover the streams have)."""
    if (not isinstance(stub, BlobStub) or stub.address.startswith("unix:")
            or "," in stub.address.strip(", ")):
        return None
    if stub.endpoint is None:
        try:
            stub.endpoint = stub.GetBlobEndpoint(farm_pb2.GetBlobEndpointRequest(), timeout=10)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                return None  # ask again next time
            stub.endpoint = farm_pb2.GetBlobEndpointResponse()  # an older coordinator
    if not stub.endpoint.http_port:
        return None
    tls = None
    if stub.endpoint.tls:
        tls = ssl.create_default_context(cafile=str(stub.tls_ca) if stub.tls_ca else None)
    return _Endpoint(_host(stub.address), stub.endpoint.http_port, stub.keypair, tls)


def _without_http(stub: farm_pb2_grpc.BlobStoreStub) -> None:
    """Use this stub's gRPC streams from now on."""
    if isinstance(stub, BlobStub):
        stub.endpoint = farm_pb2.GetBlobEndpointResponse()


def _host(address: str) -> str:
    """The host part of a gRPC target such as 'host:port', '[::1]:port' or 'dns:///host:port'."""
    target = address.strip(", ").split("///", 1)[-1]
    return target.rpartition(":")[0].strip("[]") or target


def _connect(endpoint: _Endpoint, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port),
                                        timeout=min(timeout, 10))
    except OSError as exc:
        raise _Unreachable(f"the blob endpoint {endpoint.host}:{endpoint.port} does not "
                           f"answer ({exc}); using the gRPC streams") from exc
    sock.settimeout(timeout)
    if endpoint.tls is not None:
        return endpoint.tls.wrap_socket(sock, server_hostname=endpoint.host)
    return sock


def _send_head(sock: socket.socket, endpoint: _Endpoint, verb: str, sha: str,
               signature: list[tuple[str, str]], headers: Mapping[str, str | int]) -> None:
    lines = [f"{verb} /blobs/{sha} HTTP/1.1", f"Host: {endpoint.host}:{endpoint.port}",
             "Connection: close", *(f"{k}: {v}" for k, v in headers.items()),
             *(f"{k}: {v}" for k, v in signature)]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())


def _read_head(fp: BinaryIO) -> tuple[int, http.client.HTTPMessage]:
    line = fp.readline(65537).decode("latin-1")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise _Interrupted(f"the blob endpoint answered {line[:80]!r}, not HTTP")
    return int(parts[1]), http.client.parse_headers(fp)  # type: ignore[arg-type]


def _refusal(status: int, headers: http.client.HTTPMessage, fp: BinaryIO) -> _Refused:
    length = min(int(headers.get("Content-Length", "0") or 0), 64 * 1024)
    return _Refused(status, fp.read(length).decode(errors="replace").strip())


def _http_upload(endpoint: _Endpoint, sha: str, size: int, source: BinaryIO, offset: int,
                 count: Callable[[int], None] | None,
                 timeout: float) -> farm_pb2.UploadBlobResponse:
    """PUT the blob from offset: the headers first, the body only once the coordinator
    answered "100 Continue", so a refusal costs no bytes."""
    request = farm_pb2.UploadChunk(blob=farm_pb2.BlobRef(sha256=sha, size=size), offset=offset)
    signature = sign_call(endpoint.keypair, HTTP_UPLOAD_METHOD, request.SerializeToString())
    with _connect(endpoint, timeout) as sock, sock.makefile("rb") as fp:
        _send_head(sock, endpoint, "PUT", sha, signature, {
            "Content-Length": size - offset, "X-Blob-Size": size, "X-Blob-Offset": offset,
            "Expect": "100-continue"})
        status, headers = _read_head(fp)
        if status == 100:
            try:
                send_file(source, offset, size - offset, sock, on_sent=count)
            except EOFError as exc:
                raise _Interrupted(str(exc)) from exc
            status, headers = _read_head(fp)
        if status != 200:
            raise _refusal(status, headers, fp)
        return farm_pb2.UploadBlobResponse.FromString(
            fp.read(int(headers.get("Content-Length", "0"))))


def _http_download_into(endpoint: _Endpoint, sha: str, part: Path,
                        on_progress: Progress | None, timeout: float,
                        max_bytes: int | None = None) -> str:
    """GET the blob into part (resuming what part holds); return the sha256 of the whole
    part, hashed while the bytes arrive."""
    digest = hashlib.sha256()
    offset = 0
    if part.exists():
        with open(part, "rb") as f:
            while block := f.read(1024 * 1024):
                digest.update(block)
                offset += len(block)
    request = farm_pb2.DownloadBlobRequest(sha256=sha, offset=offset)
    signature = sign_call(endpoint.keypair, HTTP_DOWNLOAD_METHOD, request.SerializeToString())
    with _connect(endpoint, timeout) as sock, sock.makefile("rb") as fp:
        _send_head(sock, endpoint, "GET", sha, signature,
                   {"Range": f"bytes={offset}-"} if offset else {})
        status, headers = _read_head(fp)
        if status == 404:
            raise TransferError(f"the coordinator does not have blob {sha}")
        if status == 416:
            part.unlink(missing_ok=True)  # .part longer than the blob: start over
            raise _Interrupted(_refusal(status, headers, fp).message)
        if status not in (200, 206):
            raise _refusal(status, headers, fp)
        total = int(headers.get("X-Blob-Size", "0"))
        left = int(headers.get("Content-Length", "0"))
        if max_bytes is not None and max(total, offset + left) > max_bytes:
            part.unlink(missing_ok=True)
            raise TransferError(f"blob {sha} is over the {max_bytes}-byte limit")
        with open(part, "ab", buffering=0) as f:
            appender = Appender(f.fileno(), part, offset)
            position = offset

            def fill(buffer: memoryview) -> int:
                nonlocal left
                filled = 0
                while filled < len(buffer) and left:
                    n = fp.readinto(buffer[filled: filled + min(left, len(buffer) - filled)])
                    if not n:
                        raise _Interrupted(f"the download stopped at byte "
                                           f"{position + filled} of {total}")
                    filled += n
                    left -= n
                return filled

            def absorb(data: memoryview) -> None:
                nonlocal position
                appender.write(data)
                position += len(data)
                if on_progress:
                    on_progress(position, total)

            try:
                pump(fill, absorb, digest.update)  # written and hashed side by side
            finally:
                appender.close()
                os.fsync(f.fileno())
    if position != total:
        raise _Interrupted(f"the download ended at byte {position} of {total}")
    return digest.hexdigest()


def _retries(stub: farm_pb2_grpc.BlobStoreStub) -> Retries:
    """The client's retry schedule (a FarmClient's BlobStub carries it; a bare stub gets the
    default)."""
    return getattr(stub, "retries", DEFAULT_RETRIES)


def _retrying(what: str, call: Callable[[int], T], retries: Retries = DEFAULT_RETRIES) -> T:
    """Run call(attempt_number), retrying transient failures with exponential backoff."""
    attempts = retries.attempts
    for number in range(1, attempts + 1):
        try:
            return call(number)
        except grpc.RpcError as exc:
            code = exc.code()
            if (code not in _RETRYABLE and not rate_limited(exc)) or number == attempts:
                raise TransferError(f"{what} failed: {code.name}: {exc.details()}") from exc
        except _Refused as exc:
            if exc.status not in _HTTP_RETRYABLE or number == attempts:
                raise TransferError(f"{what} failed: {exc}") from exc
        except (_Interrupted, OSError) as exc:  # OSError: an HTTP transfer cut or timed out
            if number == attempts:
                raise TransferError(f"{what} failed after {attempts} attempts: {exc}") from exc
        backoff = min(retries.max_backoff_s, retries.initial_backoff_s * 2 ** (number - 1))
        time.sleep(backoff * (0.5 + random.random()))
    raise AssertionError("unreachable")

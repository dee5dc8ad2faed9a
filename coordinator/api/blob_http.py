"""The blob store over plain HTTP: the fast path for big scene and frame transfers.

Why beside the gRPC streams (coordinator/api/blob_service.py): a gRPC stream copies every
byte several times through Python objects (a message per MiB, parsed, checked, handed to a
thread), which held a 1 GiB blob to ~150 MiB/s here. Here a download reads the stored object
in big blocks in one thread while another sends the previous block, and an upload is
`recv_into` one reused buffer, written and hashed in a second thread while the next buffer
arrives, so disk, network and the sha256 check overlap (frameproof/pipeline.py). Same
rules as the streams, enforced by the same objects:

- every request is signed like a gRPC call (frameproof.auth: method name, request digest,
  timestamp, nonce; the same nonce cache, so a captured request cannot be replayed, and the
  same per-key rate limit);
- ``GET /blobs/<sha256>`` with ``Range: bytes=N-`` resumes; only callers the access policy
  lets read the blob get it (the signed request is a DownloadBlobRequest);
- ``PUT /blobs/<sha256>`` with ``X-Blob-Size`` and ``X-Blob-Offset`` appends to the caller's
  own partial upload (BlobStore.open_upload: per-uploader partials, proof of possession
  for a blob already stored, the size limit, the sha256 check before anything is stored;
  the signed request is an UploadChunk naming the blob and offset, without data);
- at most MAX_CONNECTIONS transfers at once, each with a fixed buffer, and a socket timeout,
  so memory and threads stay bounded whatever clients do.

Answers are HTTP status codes with a one-line text body; the client maps them back to the
gRPC status it would have got (frameproof/transfer.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from coordinator.api.rate_limit import CallRateLimiter
from coordinator.blobstore import (
    BlobBusy,
    BlobCorrupt,
    BlobError,
    BlobNotFound,
    BlobOffsetMismatch,
    BlobOverrun,
    BlobProof,
    BlobStore,
    BlobStoreFull,
    BlobTooLarge,
    BlobUpload,
    InvalidSha256,
)
from coordinator.storage.owners import BlobOwners
from frameproof.auth import AuthError, Caller, NonceCache, TooManyCalls, verify_call
from frameproof.client import RATE_LIMIT_PREFIX
from frameproof.pipeline import BUFFER_BYTES, pump, send_file
from frameproof.v1 import farm_pb2

log = logging.getLogger(__name__)

DOWNLOAD_METHOD = "/frameproof.v1.BlobStore/DownloadBlob"
UPLOAD_METHOD = "/frameproof.v1.BlobStore/UploadBlob"
MAX_CONNECTIONS = 8  # x BUFFERS x BUFFER_BYTES of memory at most (96 MiB); more: 503, and
# the client takes the gRPC stream for that transfer
SOCKET_TIMEOUT_SECONDS = 60.0
# A blob read this many times lately is read through the page cache from then on (see Reads).
CACHE_AFTER_READS = 2
READS_WINDOW_SECONDS = 3600.0
READS_REMEMBERED = 4096  # blobs whose recent reads are counted (an entry is ~200 bytes)
_PATH = re.compile(r"/blobs/([0-9a-f]{64})")
_RANGE = re.compile(r"bytes=(\d{1,19})-")

_STATUS: list[tuple[type[BlobError], int]] = [
    (InvalidSha256, 400),
    (BlobOverrun, 400),
    (BlobTooLarge, 413),
    (BlobStoreFull, 507),
    (BlobCorrupt, 422),
    (BlobOffsetMismatch, 409),
    (BlobBusy, 423),
    (BlobNotFound, 404),
]


def status_for(exc: BlobError) -> int:
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return 400


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Reads:
    """How often each blob was downloaded lately: which to keep in the page cache.

    A blob's first downloads are read with O_DIRECT (frameproof.pipeline.send_file): filling
    the page cache costs this kind of machine (a VM) about 2 CPU-seconds a GiB, which a blob
    read once or twice never earns back (a frame is fetched by its verifier and its creator).
    A blob read more often is a scene every node of its job fetches, so from its third read on
    it goes through the page cache, and the readers after that are served from memory by
    sendfile instead of each reading the disk again: a 1 GiB blob's download here took
    0.65-0.73 s from the cache against 1.21-1.63 s from the disk that the client was writing
    its copy to (docs/BENCHMARKS.md, "blob transfer"). The policy is nginx's
    `proxy_cache_min_uses`; the kernel evicts what memory needs back.
    """

    def __init__(self, *, after: int = CACHE_AFTER_READS,
                 window: float = READS_WINDOW_SECONDS, remembered: int = READS_REMEMBERED,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.after = after
        self.window = window
        self.clock = clock
        self._counts: LRUCache[str, tuple[int, float]] = LRUCache(maxsize=remembered)
        self._lock = threading.Lock()

    def keep_cached(self, sha256: str) -> bool:
        """Count one more read of the blob; whether this one should go through the cache."""
        now = self.clock()
        with self._lock:
            count, first = self._counts.get(sha256, (0, now))
            if now - first > self.window:  # old reads say nothing of today's demand
                count, first = 0, now
            self._counts[sha256] = (count + 1, first)
        return count >= self.after


class BlobHttpServer(ThreadingHTTPServer):
    """A thread per transfer (the GIL is released in reads, recv_into, send, write and
    sha256), capped at MAX_CONNECTIONS; started and stopped by the coordinator."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        store: BlobStore,
        nonces: NonceCache,
        *,
        may_download: Callable[[Caller, str], bool] | None = None,
        owners: BlobOwners | None = None,
        limiter: CallRateLimiter | None = None,
        tls: ssl.SSLContext | None = None,
        trust_all_as: Caller | None = None,
    ) -> None:
        self.store = store
        self.nonces = nonces
        self.may_download = may_download
        self.owners = owners
        self.limiter = limiter
        self.tls = tls
        self.trust_all_as = trust_all_as
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.reads = Reads()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:
            sock.settimeout(SOCKET_TIMEOUT_SECONDS)
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="blob-http", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: BlobHttpServer
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_SECONDS
    server_version = "frameproof-blobs"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def handle_expect_100(self) -> bool:
        """Defer the "100 Continue": it is sent only once the upload is accepted, so a
        refused one is answered before the client sends a byte of the body."""
        return True

    def _continue(self) -> None:
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.send_response_only(100)
            self.end_headers()
            self.wfile.flush()

    def do_GET(self) -> None:
        self._serve(self._download)

    def do_PUT(self) -> None:
        self._serve(self._upload)

    def _serve(self, work: Callable[[str], None]) -> None:
        self.close_connection = True  # one transfer per connection: no state between them
        if not self.server.slots.acquire(blocking=False):
            self._answer(503, f"more than {MAX_CONNECTIONS} blob transfers at once; retry "
                              "in a moment")
            return
        try:
            match = _PATH.fullmatch(self.path)
            if match is None:
                raise _Refused(404, "no such path: blobs are at /blobs/<sha256>")
            work(match.group(1))
        except _Refused as exc:
            self._answer(exc.status, str(exc))
        except BlobError as exc:
            if isinstance(exc, BlobCorrupt | BlobStoreFull):
                log.warning("upload refused: %s", exc)
            self._answer(status_for(exc), str(exc))
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            log.info("blob transfer with %s cut: %s", self.address_string(), exc)
        finally:
            self.server.slots.release()

    def _authenticate(self, method: str, request: Any) -> Caller:
        if self.server.trust_all_as is not None:
            return self.server.trust_all_as
        metadata = {key.lower(): value for key, value in self.headers.items()}
        try:
            caller = verify_call(metadata, method, request.SerializeToString(),
                                 self.server.nonces)
        except TooManyCalls as exc:
            raise _Refused(429, str(exc)) from None
        except AuthError as exc:
            log.warning("refused %s over HTTP: %s", method, exc)
            raise _Refused(401, str(exc)) from None
        limiter = self.server.limiter
        if limiter is not None and (wait := limiter.retry_after(caller.pubkey)) > 0:
            raise _Refused(429, f"{RATE_LIMIT_PREFIX} more than {limiter.rate:g} calls/s from "
                                f"this key (bursts of {limiter.burst:g}); retry in {wait:.2f}s")
        return caller

    # ------------------------------------------------------------ download

    def _download(self, sha256: str) -> None:
        offset = 0
        if (wanted := self.headers.get("Range")) is not None:
            match = _RANGE.fullmatch(wanted.strip())
            if match is None:
                raise _Refused(400, "only 'Range: bytes=N-' (resume from N) is supported")
            offset = int(match.group(1))
        caller = self._authenticate(
            DOWNLOAD_METHOD, farm_pb2.DownloadBlobRequest(sha256=sha256, offset=offset))
        may = self.server.may_download
        if may is not None and not may(caller, sha256):
            raise _Refused(403, "you may download only your own jobs' scenes and frames, or "
                                "the scene of a task you hold a lease on")
        try:
            f = open(self.server.store.path(sha256), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise BlobNotFound(f"blob {sha256} is not stored") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if offset > size:
                raise _Refused(416, f"offset {offset} is outside blob {sha256} of {size} bytes")
            self.send_response(206 if offset else 200)
            self.send_header("Content-Length", str(size - offset))
            self.send_header("X-Blob-Size", str(size))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.flush()
            if size > offset:
                send_file(f, offset, size - offset, self.connection,
                          keep_cached=self.server.reads.keep_cached(sha256))

    # ------------------------------------------------------------ upload

    def _upload(self, sha256: str) -> None:
        try:
            size = int(self.headers.get("X-Blob-Size", ""))
            offset = int(self.headers.get("X-Blob-Offset", "0"))
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise _Refused(400, "an upload needs X-Blob-Size, X-Blob-Offset and "
                                "Content-Length as integers") from None
        if size < 0 or offset < 0 or length < 0:
            raise _Refused(400, "sizes and offsets are not negative")
        ref = farm_pb2.BlobRef(sha256=sha256, size=size)
        caller = self._authenticate(UPLOAD_METHOD, farm_pb2.UploadChunk(blob=ref, offset=offset))
        if offset + length > size:
            raise BlobOverrun(f"upload of blob {sha256} sent more than its declared {size} "
                              "bytes")
        uploader = caller.pubkey if self.server.owners is not None else ""
        store, owners = self.server.store, self.server.owners
        if store.has(sha256) and (owners is None or owners.owns(uploader, sha256)):
            self._drain(length)
            self._answer_upload(ref, stored=True, received=size)
            return
        upload = store.open_upload(sha256, size, offset, uploader)
        try:
            self._continue()
            self._receive(upload, length)
            if upload.received < size:
                self._answer_upload(ref, stored=False, received=upload.received)
                return
            upload.commit()
        finally:
            upload.close()
        if owners is not None:
            owners.add(uploader, sha256)
        if isinstance(upload, BlobProof):
            log.info("blob %s (%d bytes): possession proven by %s over HTTP", sha256, size,
                     uploader[:12])
        else:
            log.info("stored blob %s (%d bytes) over HTTP", sha256, size)
        self._answer_upload(ref, stored=True, received=size)

    def _receive(self, upload: BlobUpload | BlobProof, length: int) -> None:
        """Read `length` body bytes into the upload, written and hashed beside the network
        (frameproof.pipeline); a client that stops early leaves what arrived for a resume."""
        left = length

        def fill(buffer: memoryview) -> int:
            nonlocal left
            filled = 0
            while filled < len(buffer) and left:
                n = self.rfile.readinto(buffer[filled: filled + min(left, len(buffer) - filled)])
                if not n:
                    left = 0
                    break
                filled += n
                left -= n
            return filled

        pump(fill, *upload.absorbers)

    def _drain(self, length: int) -> None:
        """Read and drop a body the server does not need (the blob is already the caller's),
        so the client sees the answer rather than a reset connection. A client that asked
        to wait for "100 Continue" sends none."""
        if self.headers.get("Expect", "").lower() == "100-continue":
            return
        buffer = memoryview(bytearray(min(BUFFER_BYTES, max(length, 1))))
        while length > 0:
            n = self.rfile.readinto(buffer[: min(length, len(buffer))])
            if not n:
                return
            length -= n

    def _answer_upload(self, ref: farm_pb2.BlobRef, *, stored: bool, received: int) -> None:
        body = farm_pb2.UploadBlobResponse(blob=ref, stored=stored,
                                           received_bytes=received).SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, status: int, message: str) -> None:
        body = (message.replace("\n", " ") + "\n").encode()
        with contextlib.suppress(ConnectionError, TimeoutError, ssl.SSLError):
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    """The HTTP endpoint's TLS, from the gRPC service's certificate and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context

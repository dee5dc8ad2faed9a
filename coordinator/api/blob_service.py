"""The BlobStore gRPC service: content-addressed, resumable uploads and downloads.

Blocking file work runs in `asyncio.to_thread`: one 1 MiB write plus its
sha256 update costs about a millisecond, but a client may send chunks up to
the 4 MiB message limit, resuming re-hashes a partial of up to gigabytes, and
commit fsyncs, so none of it runs on the event loop that serves other nodes.
The thread hop costs tens of microseconds per chunk, negligible at 1 MiB.

With an ownership record (``owners``), deduplication is per caller: FindMissingBlobs reports
a stored blob as stored only to a key that owns it, partial uploads are the uploader's own,
and sending the bytes of a blob that is already stored proves possession (compared, not
stored again) and makes the caller an owner. A sha256 alone opens nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import BinaryIO

import grpc

from coordinator.api.auth import current_caller
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
    BlobWriteFailed,
    InvalidSha256,
    check_sha256,
)
from coordinator.storage.owners import BlobOwners
from frameproof.auth import Caller
from frameproof.limits import BATCH_UPLOAD_BLOBS
from frameproof.v1 import farm_pb2, farm_pb2_grpc

log = logging.getLogger(__name__)

DOWNLOAD_CHUNK_BYTES = 1024 * 1024
DEFAULT_MAX_REQUEST_BLOBS = 10_000

_CODES: list[tuple[type[BlobError], grpc.StatusCode]] = [
    (InvalidSha256, grpc.StatusCode.INVALID_ARGUMENT),
    (BlobOverrun, grpc.StatusCode.INVALID_ARGUMENT),
    (BlobTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (BlobStoreFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (BlobCorrupt, grpc.StatusCode.DATA_LOSS),
    (BlobOffsetMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (BlobBusy, grpc.StatusCode.ABORTED),
    (BlobNotFound, grpc.StatusCode.NOT_FOUND),
    (BlobWriteFailed, grpc.StatusCode.UNAVAILABLE),
]


def _status_for(exc: BlobError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INVALID_ARGUMENT


class _Abort(Exception):
    """Raised inside a handler to end the call with a status and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _check_chunk(upload: BlobUpload | BlobProof, chunk: farm_pb2.UploadChunk, *,
                 is_first: bool) -> None:
    """A message of an upload stream must continue this blob at its offset, uncorrupted."""
    position = upload.received
    if not is_first and chunk.HasField("blob") and chunk.blob.sha256 != upload.sha256:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"one upload stream carries one blob: got {chunk.blob.sha256!r} while "
            f"uploading {upload.sha256}",
        )
    if not is_first and chunk.offset not in (0, position):
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"chunk says offset {chunk.offset} but the upload is at offset {position}; "
            "send chunks in order",
        )
    if zlib.crc32(chunk.data) != chunk.crc32:
        raise _Abort(
            grpc.StatusCode.DATA_LOSS,
            f"chunk at offset {position} is corrupt (crc32 mismatch); "
            f"resume the upload from offset {position}",
        )


class BlobStoreServicer(farm_pb2_grpc.BlobStoreServicer):
    def __init__(
        self,
        store: BlobStore,
        *,
        max_request_blobs: int = DEFAULT_MAX_REQUEST_BLOBS,
        may_download: Callable[[Caller, str], bool] | None = None,
        owners: BlobOwners | None = None,
    ) -> None:
        self._store = store
        self._max_request_blobs = max_request_blobs
        # Who may read which blob (see coordinator.access); None: anyone who reached us.
        self._may_download = may_download
        # Who holds which blob; None: one shared view for every caller (a bare blob store).
        self._owners = owners
        self._endpoint = farm_pb2.GetBlobEndpointResponse()  # no HTTP endpoint until told

    def set_http_endpoint(self, port: int, *, tls: bool) -> None:
        """Announce the HTTP endpoint of the same store (coordinator/api/blob_http.py)."""
        self._endpoint = farm_pb2.GetBlobEndpointResponse(http_port=port, tls=tls)

    async def GetBlobEndpoint(
        self, request: farm_pb2.GetBlobEndpointRequest, context: grpc.aio.ServicerContext
    ) -> farm_pb2.GetBlobEndpointResponse:
        return self._endpoint

    def _uploader(self) -> str:
        """The key whose view of the store this call sees ("" without ownership)."""
        return current_caller().pubkey if self._owners is not None else ""

    async def FindMissingBlobs(
        self, request: farm_pb2.FindMissingBlobsRequest, context: grpc.aio.ServicerContext
    ) -> farm_pb2.FindMissingBlobsResponse:
        if len(request.blobs) > self._max_request_blobs:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"asked about {len(request.blobs)} blobs; ask about at most "
                f"{self._max_request_blobs} per request",
            )
        try:
            for ref in request.blobs:
                _check_ref(ref)
        except _Abort as exc:
            await context.abort(exc.code, exc.message)
        missing = await asyncio.to_thread(self._find_missing, list(request.blobs),
                                          self._uploader())
        return farm_pb2.FindMissingBlobsResponse(missing=missing)

    def _find_missing(self, refs: list[farm_pb2.BlobRef],
                      uploader: str) -> list[farm_pb2.BlobStatus]:
        """What this caller still has to send: a blob it does not own counts as missing
        whether or not someone else stored it, so the answer says nothing about others."""
        owned = (self._owners.owned(uploader, (ref.sha256 for ref in refs))
                 if self._owners is not None else None)
        missing = []
        for ref in refs:
            if (owned is None or ref.sha256 in owned) and self._store.has(ref.sha256):
                continue
            received = self._store.received_bytes(ref.sha256, uploader)
            if received > ref.size:  # stale partial that open_upload will discard
                received = 0
            missing.append(farm_pb2.BlobStatus(blob=ref, received_bytes=received))
        return missing

    async def BatchUploadBlobs(
        self, request: farm_pb2.BatchUploadBlobsRequest, context: grpc.aio.ServicerContext
    ) -> farm_pb2.BatchUploadBlobsResponse:
        if len(request.blobs) > BATCH_UPLOAD_BLOBS:  # the validator's bound, for bare stores
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"at most {BATCH_UPLOAD_BLOBS} blobs per BatchUploadBlobs")
        results = await asyncio.to_thread(self._store_batch, list(request.blobs),
                                          self._uploader())
        return farm_pb2.BatchUploadBlobsResponse(results=results)

    def _store_batch(self, blobs: list[farm_pb2.BlobData],
                     uploader: str) -> list[farm_pb2.BlobUploadResult]:
        return store_blobs(self._store, self._owners, blobs, uploader)

    async def UploadBlob(
        self,
        request_iterator: AsyncIterator[farm_pb2.UploadChunk],
        context: grpc.aio.ServicerContext,
    ) -> farm_pb2.UploadBlobResponse:
        try:
            return await self._upload(request_iterator)
        except _Abort as exc:
            if exc.code == grpc.StatusCode.DATA_LOSS:
                log.warning("upload refused: %s", exc.message)
            await context.abort(exc.code, exc.message)
        except BlobStoreFull as exc:
            log.error("blob store full: %s", exc)
            await context.abort(_status_for(exc), str(exc))
        except BlobError as exc:
            if isinstance(exc, BlobCorrupt):
                log.warning("upload refused: %s", exc)
            await context.abort(_status_for(exc), str(exc))
        raise AssertionError("unreachable: context.abort raises")

    async def _upload(
        self, chunks: AsyncIterator[farm_pb2.UploadChunk]
    ) -> farm_pb2.UploadBlobResponse:
        first = await anext(aiter(chunks), None)
        if first is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "empty upload stream")
        if not first.HasField("blob"):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first upload message must name the blob (sha256 and size)",
            )
        ref = farm_pb2.BlobRef(sha256=first.blob.sha256, size=first.blob.size)
        _check_ref(ref)
        uploader = self._uploader()
        if first.offset == 0 and len(first.data) == ref.size:
            # The whole blob in one message (a rendered frame, a manifest): one trip to a
            # worker thread, each trip costing the event loop a wake-up.
            async for chunk in chunks:
                if chunk.data:
                    raise BlobOverrun(f"upload of blob {ref.sha256} sent more than its "
                                      f"declared {ref.size} bytes")
            await asyncio.to_thread(self._store_whole, uploader, ref, first)
            log.debug("stored blob %s (%d bytes) sent whole by %s", ref.sha256, ref.size,
                     uploader[:12])
            return farm_pb2.UploadBlobResponse(blob=ref, stored=True, received_bytes=ref.size)
        upload = await asyncio.to_thread(self._begin, uploader, ref, first)
        if upload is None:
            # Already stored and this caller's (or no ownership kept): answer now and let
            # gRPC drop whatever else the client sends.
            return farm_pb2.UploadBlobResponse(blob=ref, stored=True, received_bytes=ref.size)
        try:
            async for chunk in chunks:
                await self._write(upload, chunk, is_first=False)
            if upload.received < ref.size:
                # The client stopped early; what it sent stays for a resume.
                return farm_pb2.UploadBlobResponse(
                    blob=ref, stored=False, received_bytes=upload.received
                )
            await asyncio.to_thread(self._finish, upload, uploader)
        finally:
            upload.close()
        if isinstance(upload, BlobProof):
            log.info("blob %s (%d bytes): possession proven by %s", ref.sha256, ref.size,
                     uploader[:12])
        else:
            log.info("stored blob %s (%d bytes)", ref.sha256, ref.size)
        return farm_pb2.UploadBlobResponse(blob=ref, stored=True, received_bytes=ref.size)

    def _begin(self, uploader: str, ref: farm_pb2.BlobRef, first: farm_pb2.UploadChunk
               ) -> BlobUpload | BlobProof | None:
        """(worker thread) None when the caller holds the blob already; else its upload,
        opened at the first message's offset with that message's data written."""
        if self._holds(uploader, ref.sha256):
            return None
        upload = self._store.open_upload(ref.sha256, ref.size, first.offset, uploader)
        try:
            _check_chunk(upload, first, is_first=True)
            if first.data:
                upload.write(first.data)
        except BaseException:
            upload.close()
            raise
        return upload

    def _store_whole(self, uploader: str, ref: farm_pb2.BlobRef,
                     first: farm_pb2.UploadChunk) -> None:
        """(worker thread) A blob sent whole: hashed in memory, then stored (unless held)
        and owned. Matching the sha256 proves possession of a blob stored already, as a
        BlobProof's byte comparison would. An uploader resuming a partial of its own goes
        the streamed way, which knows what to do with it."""
        if zlib.crc32(first.data) != first.crc32:
            raise _Abort(grpc.StatusCode.DATA_LOSS, "chunk at offset 0 is corrupt (crc32 "
                         "mismatch); resume the upload from offset 0")
        if self._store.has_partial(ref.sha256, uploader):
            upload = self._begin(uploader, ref, first)
            if upload is not None:
                try:
                    self._finish(upload, uploader)
                finally:
                    upload.close()
            return
        self._store.put_bytes(first.data, ref.sha256)
        if self._owners is not None:
            self._owners.add(uploader, ref.sha256)

    def _finish(self, upload: BlobUpload | BlobProof, uploader: str) -> None:
        """(worker thread) Verify and store the blob; the uploader becomes an owner."""
        upload.commit()
        if self._owners is not None:
            self._owners.add(uploader, upload.sha256)

    def _holds(self, uploader: str, sha256: str) -> bool:
        """Stored, and (when ownership is kept) already this uploader's."""
        if not self._store.has(sha256):
            return False
        return self._owners is None or self._owners.owns(uploader, sha256)

    @staticmethod
    async def _write(upload: BlobUpload | BlobProof, chunk: farm_pb2.UploadChunk, *,
                     is_first: bool) -> None:
        _check_chunk(upload, chunk, is_first=is_first)
        if chunk.data:
            await asyncio.to_thread(upload.write, chunk.data)

    async def DownloadBlob(
        self, request: farm_pb2.DownloadBlobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[farm_pb2.DownloadChunk]:
        try:
            check_sha256(request.sha256)
            if self._may_download and not self._may_download(current_caller(), request.sha256):
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "you may download only your own jobs' scenes and frames, or the scene "
                    "of a task you hold a lease on",
                )
            f, size = await asyncio.to_thread(self._open_blob, request.sha256)
        except BlobError as exc:
            await context.abort(_status_for(exc), str(exc))
        with f:
            if not 0 <= request.offset <= size:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"offset {request.offset} is outside blob {request.sha256} of {size} bytes",
                )
            offset = request.offset
            await asyncio.to_thread(f.seek, offset)
            while True:
                data = await asyncio.to_thread(f.read, DOWNLOAD_CHUNK_BYTES)
                # At least one message, so the client learns total_size even
                # when it resumes at the very end.
                if data or offset == request.offset:
                    yield farm_pb2.DownloadChunk(offset=offset, data=data, total_size=size)
                if not data:
                    break
                offset += len(data)

    def _open_blob(self, sha256: str) -> tuple[BinaryIO, int]:
        try:
            f = open(self._store.path(sha256), "rb")  # noqa: SIM115 - closed by the caller
        except FileNotFoundError:  # removed between the check and the open
            raise BlobNotFound(f"blob {sha256} is not stored") from None
        return f, os.fstat(f.fileno()).st_size


def _check_ref(ref: farm_pb2.BlobRef) -> None:
    try:
        check_sha256(ref.sha256)
    except InvalidSha256 as exc:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
    if ref.size < 0:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"blob {ref.sha256} has a negative size {ref.size}"
        )


def store_blobs(store: BlobStore, owners: BlobOwners | None, blobs: Sequence[farm_pb2.BlobData],
                uploader: str) -> list[farm_pb2.BlobUploadResult]:
    """(worker thread) `write_blobs`, then the uploader owns those that passed, recorded in
    one transaction."""
    results, stored = write_blobs(store, blobs)
    if owners is not None and stored:
        owners.add_many(uploader, stored)
    return results


def write_blobs(store: BlobStore, blobs: Sequence[farm_pb2.BlobData]
                ) -> tuple[list[farm_pb2.BlobUploadResult], list[str]]:
    """(worker thread) Each blob verified and stored (or, stored already, its bytes proving
    possession) on its own, all made durable together (BlobStore.put_many): the answer for
    each, and the sha256s of those that passed, for the caller to record as the uploader's.
    One refused blob does not hold back the others. BatchUploadBlobs and DeliverTasks (a
    node's images) store this way."""
    refs = [farm_pb2.BlobRef(sha256=blob.blob.sha256, size=blob.blob.size) for blob in blobs]
    refused: dict[int, tuple[grpc.StatusCode, str]] = {}
    sent: list[int] = []
    for index, (blob, ref) in enumerate(zip(blobs, refs, strict=True)):
        try:
            _check_ref(ref)
            if len(blob.data) != ref.size:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                             f"blob {ref.sha256} is declared {ref.size} bytes but "
                             f"{len(blob.data)} were sent")
            sent.append(index)
        except _Abort as exc:
            refused[index] = exc.code, exc.message
        except BlobError as exc:
            refused[index] = _status_for(exc), str(exc)
    answers = store.put_many([(blobs[i].data, refs[i].sha256) for i in sent])
    stored = []
    for index, error in zip(sent, answers, strict=True):
        if error is None:
            stored.append(refs[index].sha256)
        else:
            refused[index] = _status_for(error), str(error)
    results = []
    for index, ref in enumerate(refs):
        code, message = refused.get(index, (grpc.StatusCode.OK, ""))
        if code != grpc.StatusCode.OK:
            log.warning("blob %s refused in a batch: %s", ref.sha256[:80], message)
        results.append(farm_pb2.BlobUploadResult(blob=ref, code=code.value[0], message=message))
    log.debug("batch of %d blobs: %d stored", len(blobs), len(stored))
    return results, stored

"""Blob store, BlobStore gRPC service and client transfers over real loopback gRPC."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from coordinator.api.blob_service import BlobStoreServicer
from coordinator.blobstore import (
    BlobCorrupt,
    BlobNotFound,
    BlobOffsetMismatch,
    BlobOverrun,
    BlobProof,
    BlobStore,
    BlobTooLarge,
    InvalidSha256,
)
from frameproof import transfer
from frameproof.v1 import farm_pb2, farm_pb2_grpc

MAX_BLOB = 16 * 1024**2
REPO = Path(__file__).resolve().parents[2]


class AioServer:
    """A grpc.aio server with only the BlobStore servicer, on its own loop in a thread."""

    def __init__(self, servicer: BlobStoreServicer) -> None:
        self.servicer = servicer
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self._call(self._start())

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def _start(self) -> int:
        self.server = grpc.aio.server()
        farm_pb2_grpc.add_BlobStoreServicer_to_server(self.servicer, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def stop(self) -> None:
        self._call(self.server.stop(grace=None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store", max_blob_bytes=MAX_BLOB)


@pytest.fixture
def stub(store: BlobStore) -> Iterator[farm_pb2_grpc.BlobStoreStub]:
    server = AioServer(BlobStoreServicer(store))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield farm_pb2_grpc.BlobStoreStub(channel)
    finally:
        channel.close()
        server.stop()


def make_file(path: Path, size: int) -> tuple[str, Path]:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), path


def chunk(data: bytes, offset: int, ref: farm_pb2.BlobRef | None = None, crc: int | None = None):
    msg = farm_pb2.UploadChunk(offset=offset, data=data)
    msg.crc32 = zlib.crc32(data) if crc is None else crc
    if ref is not None:
        msg.blob.CopyFrom(ref)
    return msg


def ref_of(data: bytes) -> farm_pb2.BlobRef:
    return farm_pb2.BlobRef(sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def missing(stub, data: bytes) -> list[farm_pb2.BlobStatus]:
    request = farm_pb2.FindMissingBlobsRequest(blobs=[ref_of(data)])
    return list(stub.FindMissingBlobs(request).missing)


# ---------------------------------------------------------------- round trips


def test_upload_download_round_trip_and_second_upload_sends_nothing(stub, tmp_path):
    files = dict(
        [
            make_file(tmp_path / "a.bin", 3 * 1024**2 + 17),
            make_file(tmp_path / "b.bin", 0),
            make_file(tmp_path / "c.bin", 5000),
        ]
    )
    progress: list[tuple[int, int]] = []
    sent = transfer.upload_files(stub, files, on_progress=lambda s, t: progress.append((s, t)))
    expected = sum(p.stat().st_size for p in files.values())
    assert sent == expected
    assert progress[-1] == (expected, expected)

    for sha, src in files.items():
        dest = transfer.download_blob(stub, sha, tmp_path / "down" / sha)
        assert dest.read_bytes() == src.read_bytes()
        assert not dest.with_suffix(".part").exists()

    assert transfer.upload_files(stub, files) == 0


def test_upload_bytes_is_idempotent(stub, store):
    sha = transfer.upload_bytes(stub, b'{"manifest": true}')
    assert store.read_bytes(sha, limit=100) == b'{"manifest": true}'
    assert transfer.upload_bytes(stub, b'{"manifest": true}') == sha


def test_already_stored_blob_answers_stored_immediately(stub, store):
    data = b"x" * 1000
    sha = store.put_bytes(data)
    response = stub.UploadBlob(iter([chunk(data[:10], 0, ref_of(data)), chunk(b"junk", 99)]))
    assert response.stored and response.blob.sha256 == sha


# ---------------------------------------------------------------- resume


def test_resume_partial_upload(stub, store, tmp_path):
    sha, path = make_file(tmp_path / "big.bin", 2 * 1024**2 + 100)
    data = path.read_bytes()
    ref = ref_of(data)
    first = 1024**2 + 5
    response = stub.UploadBlob(iter([chunk(data[:first], 0, ref)]))
    assert not response.stored and response.received_bytes == first

    [status] = missing(stub, data)
    assert status.received_bytes == first
    assert not store.has(sha)

    sent = transfer.upload_files(stub, {sha: path})
    assert sent == len(data) - first
    assert store.path(sha).read_bytes() == data


def test_download_resumes_from_part_file(stub, store, tmp_path):
    data = os.urandom(3 * 1024**2 + 3)
    sha = store.put_bytes(data)
    dest = tmp_path / "scene.blend"
    dest.with_suffix(".blend.part").write_bytes(data[: 2 * 1024**2 + 1])
    progress: list[tuple[int, int]] = []
    transfer.download_blob(stub, sha, dest, on_progress=lambda d, t: progress.append((d, t)))
    assert dest.read_bytes() == data
    assert progress[0][0] > 2 * 1024**2  # started from the partial, not from 0


def test_download_restarts_after_a_stale_part_file(stub, store, tmp_path):
    data = os.urandom(100_000)
    sha = store.put_bytes(data)
    dest = tmp_path / "out.bin"
    dest.with_suffix(".bin.part").write_bytes(b"\0" * 1000)  # wrong content
    assert transfer.download_blob(stub, sha, dest).read_bytes() == data


def test_download_skips_an_existing_correct_file(stub, tmp_path):
    data = b"already here"
    dest = tmp_path / "x"
    dest.write_bytes(data)
    # The server does not have it: a download call would fail.
    assert transfer.download_blob(stub, hashlib.sha256(data).hexdigest(), dest) == dest


# ---------------------------------------------------------------- refusals


def test_corrupt_chunk_is_data_loss_and_keeps_what_came_before(stub, store):
    data = os.urandom(300_000)
    ref = ref_of(data)
    stream = [chunk(data[:100_000], 0, ref), chunk(data[100_000:], 100_000, crc=12345)]
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(iter(stream))
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "chunk at offset 100000 is corrupt (crc32 mismatch)" in err.value.details()
    assert not store.has(ref.sha256)
    assert missing(stub, data)[0].received_bytes == 100_000


def test_wrong_content_is_data_loss_and_nothing_is_stored(stub, store, tmp_path):
    data = os.urandom(50_000)
    ref = ref_of(data)
    liar = bytes(reversed(data))
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(iter([chunk(liar, 0, ref)]))
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "nothing was stored" in err.value.details()
    assert not store.has(ref.sha256)
    assert missing(stub, data)[0].received_bytes == 0
    with pytest.raises(transfer.TransferError, match="does not have blob"):
        transfer.download_blob(stub, ref.sha256, tmp_path / "never")


def test_offset_mismatch_is_failed_precondition(stub):
    data = os.urandom(10_000)
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(iter([chunk(data[5000:], 5000, ref_of(data))]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "resume at offset 0" in err.value.details()


def test_oversized_blob_is_refused(stub):
    ref = farm_pb2.BlobRef(sha256="a" * 64, size=MAX_BLOB + 1)
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(iter([chunk(b"", 0, ref)]))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most" in err.value.details()


def test_more_data_than_declared_is_refused(stub, store):
    data = os.urandom(1000)
    ref = farm_pb2.BlobRef(sha256=ref_of(data).sha256, size=500)
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(iter([chunk(data, 0, ref)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not store.has(ref.sha256)


def test_a_blob_sent_in_one_message_is_checked_like_a_stream(stub, store):
    """A frame or manifest arrives whole in its first message and is stored in one step,
    with the stream's checks: its crc, nothing past its size, and a partial of the same
    uploader is resumed, not silently replaced."""
    data = os.urandom(20_000)
    ref = ref_of(data)
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(iter([chunk(data, 0, ref, crc=12345)]))
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "chunk at offset 0 is corrupt (crc32 mismatch)" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(iter([chunk(data, 0, ref), chunk(b"more", len(data))]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than its declared" in err.value.details()
    assert not store.has(ref.sha256)

    early = stub.UploadBlob(iter([chunk(data[:4000], 0, ref)]))
    assert not early.stored and early.received_bytes == 4000
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(iter([chunk(data, 0, ref)]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "resume at offset 4000" in err.value.details()
    done = stub.UploadBlob(iter([chunk(data[4000:], 4000, ref)]))
    assert done.stored and store.path(ref.sha256).read_bytes() == data

    whole = os.urandom(30_000)
    answer = stub.UploadBlob(iter([chunk(whole, 0, ref_of(whole))]))
    assert answer.stored and answer.received_bytes == len(whole)
    assert store.path(ref_of(whole).sha256).read_bytes() == whole
    assert list((store.root / "incoming").iterdir()) == []


class CountingServicer(BlobStoreServicer):
    """The real servicer, counting the upload calls it answers."""

    def __init__(self, store: BlobStore) -> None:
        super().__init__(store)
        self.calls: collections.Counter[str] = collections.Counter()

    async def BatchUploadBlobs(self, request, context):  # type: ignore[no-untyped-def]
        self.calls["BatchUploadBlobs"] += 1
        return await super().BatchUploadBlobs(request, context)

    async def UploadBlob(self, request_iterator, context):  # type: ignore[no-untyped-def]
        self.calls["UploadBlob"] += 1
        return await super().UploadBlob(request_iterator, context)


def test_small_blobs_go_in_one_batch_call_each_answered_on_its_own(store, tmp_path):
    servicer = CountingServicer(store)
    server = AioServer(servicer)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = farm_pb2_grpc.BlobStoreStub(channel)
        good, other = os.urandom(7000), os.urandom(7000)
        request = farm_pb2.BatchUploadBlobsRequest(blobs=[
            farm_pb2.BlobData(blob=ref_of(good), data=good),
            farm_pb2.BlobData(blob=ref_of(good), data=other),  # not what it declares
            farm_pb2.BlobData(blob=farm_pb2.BlobRef(sha256=ref_of(other).sha256, size=10),
                              data=other)])
        results = stub.BatchUploadBlobs(request).results
        assert [r.code for r in results] == [grpc.StatusCode.OK.value[0],
                                             grpc.StatusCode.DATA_LOSS.value[0],
                                             grpc.StatusCode.INVALID_ARGUMENT.value[0]]
        assert "nothing was stored" in results[1].message
        assert "declared 10 bytes but 7000 were sent" in results[2].message
        assert store.path(ref_of(good).sha256).read_bytes() == good
        assert not store.has(ref_of(other).sha256)

        # A node's frames and a big file: the small ones in one call, the big one streamed.
        files = dict(make_file(tmp_path / f"frame{i}.png", 20_000 + i) for i in range(12))
        files.update([make_file(tmp_path / "big.exr", 3 * 1024**2)])
        servicer.calls.clear()
        progress: list[tuple[int, int]] = []
        sent = transfer.upload_files(stub, files,
                                     on_progress=lambda s, t: progress.append((s, t)))
        total = sum(p.stat().st_size for p in files.values())
        assert sent == total and progress[-1] == (total, total)
        assert servicer.calls == {"BatchUploadBlobs": 1, "UploadBlob": 1}
        for sha, path in files.items():
            assert store.path(sha).read_bytes() == path.read_bytes()
        assert transfer.upload_files(stub, files) == 0
    finally:
        channel.close()
        server.stop()


BAD_SHAS = ["", "abc", "A" * 64, "g" * 64, "../" + "a" * 61, "a" * 63 + "\n", "a" * 65]


@pytest.mark.parametrize("bad", BAD_SHAS)
def test_invalid_sha_is_invalid_argument(stub, bad):
    calls = [
        lambda: stub.FindMissingBlobs(
            farm_pb2.FindMissingBlobsRequest(blobs=[farm_pb2.BlobRef(sha256=bad, size=1)])
        ),
        lambda: stub.UploadBlob(iter([chunk(b"x", 0, farm_pb2.BlobRef(sha256=bad, size=1))])),
        lambda: list(stub.DownloadBlob(farm_pb2.DownloadBlobRequest(sha256=bad))),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_negative_size_and_missing_blob_field_are_invalid_argument(stub):
    for first in [
        chunk(b"", 0, farm_pb2.BlobRef(sha256="a" * 64, size=-1)),
        chunk(b"abc", 0),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            stub.UploadBlob(iter([first]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_download_is_not_found_and_bad_offset_invalid(stub, store):
    with pytest.raises(grpc.RpcError) as err:
        list(stub.DownloadBlob(farm_pb2.DownloadBlobRequest(sha256="b" * 64)))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    sha = store.put_bytes(b"12345")
    with pytest.raises(grpc.RpcError) as err:
        list(stub.DownloadBlob(farm_pb2.DownloadBlobRequest(sha256=sha, offset=6)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [end] = stub.DownloadBlob(farm_pb2.DownloadBlobRequest(sha256=sha, offset=5))
    assert end.total_size == 5 and end.data == b""


def test_too_many_blobs_in_one_request(store):
    server = AioServer(BlobStoreServicer(store, max_request_blobs=2))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            refs = [farm_pb2.BlobRef(sha256=c * 64, size=1) for c in "abc"]
            with pytest.raises(grpc.RpcError) as err:
                farm_pb2_grpc.BlobStoreStub(channel).FindMissingBlobs(
                    farm_pb2.FindMissingBlobsRequest(blobs=refs)
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "at most 2" in err.value.details()
    finally:
        server.stop()


def test_unreachable_server_is_a_transfer_error_after_retries():
    with (
        grpc.insecure_channel("127.0.0.1:1") as channel,
        pytest.raises(transfer.TransferError, match="UNAVAILABLE"),
    ):
        transfer.upload_bytes(farm_pb2_grpc.BlobStoreStub(channel), b"x", timeout=2)


# ---------------------------------------------------------------- the store itself


def test_store_refuses_bad_input(store):
    for bad in BAD_SHAS:
        with pytest.raises(InvalidSha256):
            store.has(bad)
    with pytest.raises(BlobNotFound):
        store.path("c" * 64)
    with pytest.raises(BlobTooLarge):
        store.open_upload("c" * 64, MAX_BLOB + 1, 0)
    sha = store.put_bytes(b"0123456789")
    with pytest.raises(BlobTooLarge):
        store.read_bytes(sha, limit=5)
    assert store.size(sha) == 10


def test_store_upload_is_atomic_and_resumable(store):
    data = os.urandom(10_000)
    sha = hashlib.sha256(data).hexdigest()
    with store.open_upload(sha, len(data), 0) as up:
        up.write(data[:4000])
    assert store.received_bytes(sha) == 4000 and not store.has(sha)
    with pytest.raises(BlobOffsetMismatch) as err:
        store.open_upload(sha, len(data), 0)
    assert err.value.received_bytes == 4000
    up = store.open_upload(sha, len(data), 4000)
    with pytest.raises(BlobOverrun):
        up.write(data[4000:] + b"!")
    up.write(data[4000:])
    up.commit()
    assert store.path(sha).read_bytes() == data
    assert store.received_bytes(sha) == 0
    assert not os.access(store.path(sha), os.W_OK) or os.geteuid() == 0


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-each"])
def test_store_put_many_answers_each_blob_and_leaves_no_stray_file(
        store: BlobStore, syncfs: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's blobs are stored together (one syncfs barrier before and one after the
    renames on Linux; elsewhere an fsync per file and folder), each answered on its own."""
    import coordinator.blobstore as blobstore

    if not syncfs:
        monkeypatch.setattr(blobstore, "_SYNCFS", None)
    elif blobstore._SYNCFS is None:
        pytest.skip("no syncfs(2) on this platform")
    before = store.put_bytes(b"stored before")
    blobs = [os.urandom(100 + i) for i in range(5)]
    batch = [(data, hashlib.sha256(data).hexdigest()) for data in blobs]
    batch.insert(2, (b"lies about its hash", "e" * 64))
    batch.append((b"stored before", before))
    batch.append((blobs[0], batch[0][1]))  # twice in one batch
    answers = store.put_many(batch)
    assert [type(a).__name__ for a in answers] == [
        "NoneType", "NoneType", "BlobCorrupt", "NoneType", "NoneType", "NoneType",
        "NoneType", "NoneType"]
    for data in blobs:
        path = store.path(hashlib.sha256(data).hexdigest())
        assert path.read_bytes() == data
        assert not os.access(path, os.W_OK) or os.geteuid() == 0
    assert not store.has("e" * 64)
    assert list((store.root / "incoming").iterdir()) == []
    assert store.put_many([]) == []


def test_store_put_many_on_a_full_disk_keeps_what_fit_and_nothing_half_written(
        tmp_path: Path) -> None:
    """A real full filesystem (a 1 MiB tmpfs, as in test_full_disk_discards_the_partial):
    the blobs that fit are stored, the rest are BlobStoreFull, no partial file stays."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) for a private tmpfs")
    mount = tmp_path / "tiny"
    mount.mkdir()
    script = tmp_path / "batch.py"
    script.write_text(textwrap.dedent("""
        import hashlib, os, sys
        from pathlib import Path
        from coordinator.blobstore import BlobStore
        store = BlobStore(Path(sys.argv[1]))
        blobs = [bytes([i]) * 300_000 for i in range(5)]
        answers = store.put_many([(b, hashlib.sha256(b).hexdigest()) for b in blobs])
        print(" ".join(type(a).__name__ for a in answers))
        print(sum(store.has(hashlib.sha256(b).hexdigest()) for b in blobs),
              len(os.listdir(Path(sys.argv[1]) / "incoming")))
        """))
    result = subprocess.run(
        [unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {mount} && "
         f"{sys.executable} {script} {mount / 'store'}"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode != 0 and "mount" in result.stderr:
        pytest.skip(f"no private tmpfs here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    kinds, counts = result.stdout.splitlines()
    assert kinds == "NoneType NoneType NoneType BlobStoreFull BlobStoreFull", kinds
    assert counts == "3 0", counts


def test_store_commit_of_wrong_content_leaves_nothing(store):
    up = store.open_upload("d" * 64, 3, 0)
    up.write(b"abc")
    with pytest.raises(BlobCorrupt):
        up.commit()
    assert not store.has("d" * 64) and store.received_bytes("d" * 64) == 0


FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    from coordinator.blobstore import BlobStore, BlobStoreFull
    store = BlobStore(Path(sys.argv[1]))
    data = bytes(range(256)) * 8192  # 2 MiB
    sha = hashlib.sha256(data).hexdigest()
    up = store.open_upload(sha, len(data), 0)
    try:
        for i in range(0, len(data), 65536):
            up.write(data[i : i + 65536])
        up.commit()
        print("STORED")
    except BlobStoreFull as exc:
        print("FULL", store.received_bytes(sha), store.has(sha), exc)
    """
)


def test_full_disk_discards_the_partial(tmp_path):
    """A real full filesystem: a 1 MiB tmpfs in a private user+mount namespace.

    Falls back to RLIMIT_FSIZE (EFBIG, same handling) where namespaces are not allowed.
    """
    mount = tmp_path / "tiny"
    mount.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    unshare = shutil.which("unshare")
    script = tmp_path / "fill.py"
    script.write_text(FULL_DISK_SCRIPT)
    result = None
    if unshare:
        cmd = (
            f"mount -t tmpfs -o size=1m tmpfs {mount} && "
            f"{sys.executable} {script} {mount / 'store'}"
        )
        result = subprocess.run(
            [unshare, "-rm", "sh", "-c", cmd], capture_output=True, text=True, env=env
        )
    if result is None or result.returncode != 0:
        limit = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))"
        result = subprocess.run(
            [sys.executable, "-c", f"{limit}\nexec(open({str(script)!r}).read())", str(mount)],
            capture_output=True,
            text=True,
            env=env,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("FULL 0 False"), result.stdout
    assert "is full" in result.stdout and "Free disk space" in result.stdout


def test_scene_cache_hashes_a_cached_blob_once_per_process_and_refetches_damage(
    stub: farm_pb2_grpc.BlobStoreStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from frameproof.manifest import ManifestEntry, SceneManifest
    from frameproof.scene_cache import SceneCache

    files = {"scene.blend": b"BLENDER-v500" + os.urandom(4000), "tex/wood.png": os.urandom(9000)}
    entries = tuple(
        ManifestEntry(path=name, sha256=transfer.upload_bytes(stub, data), size=len(data))
        for name, data in files.items()
    )
    manifest = SceneManifest(main_file="scene.blend", files=entries)
    scene_id = transfer.upload_bytes(stub, manifest.to_bytes())
    hashed: list[Path] = []
    real_hash = transfer.sha256_file
    monkeypatch.setattr(transfer, "sha256_file", lambda p: hashed.append(Path(p)) or real_hash(p))

    cache = SceneCache(tmp_path / "node", stub)
    main = cache.fetch(scene_id)
    assert main.read_bytes() == files["scene.blend"]
    first = len(hashed)
    assert first >= 3  # manifest and both files, each checked once downloaded
    assert cache.fetch(scene_id) == main
    assert len(hashed) == first, "the same process does not hash its cached blobs again"

    # A new process (say, after a crash that damaged a blob) checks and heals its cache.
    # Same size, so only the hash can tell; the scene's hard link must not keep the damage.
    damaged = cache.blob_path(entries[1].sha256)
    damaged.chmod(0o644)
    damaged.write_bytes(bytes(len(files["tex/wood.png"])))
    fresh = SceneCache(tmp_path / "node", stub)
    main = fresh.fetch(scene_id)
    assert damaged.read_bytes() == files["tex/wood.png"]
    assert (main.parent / "tex" / "wood.png").read_bytes() == files["tex/wood.png"]


# ---------------------------------------------------------------- per-uploader views


def test_partial_uploads_are_per_uploader(store):
    """One key's progress never shows in another's view, nor do their bytes mix."""
    data = os.urandom(10_000)
    sha = hashlib.sha256(data).hexdigest()
    with store.open_upload(sha, len(data), 0, "alice") as up:
        up.write(data[:4000])
    assert store.received_bytes(sha, "alice") == 4000
    assert store.received_bytes(sha, "bob") == 0 and store.received_bytes(sha) == 0
    bob = store.open_upload(sha, len(data), 0, "bob")  # not BlobBusy, not at offset 4000
    bob.write(data)
    bob.commit()
    assert store.path(sha).read_bytes() == data
    # Alice finishes her own upload: verified, and the blob is still stored once.
    inode = store.path(sha).stat().st_ino
    alice = store.open_upload(sha, len(data), 4000, "alice")
    alice.write(data[4000:])
    alice.commit()
    assert store.path(sha).stat().st_ino == inode
    assert list((store.root / "incoming").iterdir()) == []


def test_uploading_a_stored_blob_proves_possession_resumably_without_storing_it_again(store):
    data = os.urandom(3 * 1024**2 + 5)
    sha = store.put_bytes(data)
    inode = store.path(sha).stat().st_ino
    proof = store.open_upload(sha, len(data), 0, "bob")
    assert isinstance(proof, BlobProof)
    proof.write(data[:1024**2])
    proof.close()  # interrupted: bob resumes where he stopped, like any upload
    assert store.received_bytes(sha, "bob") == 1024**2
    assert store.received_bytes(sha, "carol") == 0
    with pytest.raises(BlobOffsetMismatch):
        store.open_upload(sha, len(data), 0, "bob")
    with pytest.raises(BlobOffsetMismatch):
        store.open_upload(sha, len(data), 5, "carol")
    assert store.received_bytes(sha, "carol") == 0
    proof = store.open_upload(sha, len(data), 1024**2, "bob")
    proof.write(data[1024**2:])
    proof.commit()
    assert store.path(sha).stat().st_ino == inode  # compared, never rewritten
    assert store.received_bytes(sha, "bob") == 0
    assert list((store.root / "incoming").iterdir()) == []


def test_a_failed_proof_is_told_only_at_the_end_and_alike_for_new_blobs(store):
    """A wrong byte is not reported when it arrives (no oracle to guess content piece by
    piece), and the final refusal reads exactly like a wrong upload of a blob never stored."""
    data = os.urandom(10_000)
    sha = store.put_bytes(data)
    wrong = bytes([data[0] ^ 1]) + data[1:]
    proof = store.open_upload(sha, len(data), 0, "mallory")
    proof.write(wrong[:10])
    proof.close()
    assert store.received_bytes(sha, "mallory") == 10  # the same as for a new blob
    proof = store.open_upload(sha, len(data), 10, "mallory")
    proof.write(wrong[10:])
    with pytest.raises(BlobCorrupt) as stored_error:
        proof.commit()
    assert store.received_bytes(sha, "mallory") == 0

    other = os.urandom(10_000)
    new_sha = hashlib.sha256(other).hexdigest()
    upload = store.open_upload(new_sha, len(other), 0, "mallory")
    upload.write(bytes([other[0] ^ 1]) + other[1:])
    with pytest.raises(BlobCorrupt) as new_error:
        upload.commit()
    assert str(stored_error.value).replace(sha, new_sha) == str(new_error.value)
    # A declared size that is not the stored one fails the same way, at the end.
    proof = store.open_upload(sha, len(data) + 1, 0, "mallory")
    proof.write(data + b"x")
    with pytest.raises(BlobCorrupt):
        proof.commit()

"""The blob store's HTTP endpoint (coordinator/api/blob_http.py): the fast path keeps every
rule of the gRPC streams. Real coordinator processes, real signed requests over loopback."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import subprocess
import time
from pathlib import Path

import pytest
from farm_helpers import drop_cached_pages
from solders.keypair import Keypair

from frameproof import transfer
from frameproof.auth import sign_call
from frameproof.client import FarmClient
from frameproof.localfarm import LocalFarm
from frameproof.pipeline import cached
from frameproof.v1 import farm_pb2 as pb

BIG = transfer.HTTP_MIN_BYTES + 12345  # over the threshold, not a whole number of blocks


@pytest.fixture
def coordinator(farm: LocalFarm) -> LocalFarm:
    farm.start_coordinator(extra_args=("--no-verifier",))
    return farm


def blob_file(tmp_path: Path, size: int = BIG, name: str = "blob.bin") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def endpoint(client: FarmClient) -> transfer._Endpoint:
    found = transfer._http_endpoint(client.blobs)
    assert found is not None, "the coordinator announces its HTTP endpoint"
    return found


def request(client: FarmClient, verb: str, sha: str, headers: dict[str, str],
            signed: pb.DownloadBlobRequest | pb.UploadChunk | None) -> tuple[int, bytes]:
    """One raw HTTP request, signed for `signed` (None: unsigned)."""
    where = endpoint(client)
    signature = (sign_call(client.keypair, transfer.HTTP_DOWNLOAD_METHOD if verb == "GET"
                           else transfer.HTTP_UPLOAD_METHOD, signed.SerializeToString())
                 if signed is not None else [])
    connection = http.client.HTTPConnection(where.host, where.port, timeout=30)
    try:
        connection.request(verb, f"/blobs/{sha}", headers={**headers, **dict(signature)})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def coordinator_log(farm: LocalFarm) -> str:
    return (farm.root / "logs" / "coordinator.log").read_text()


def test_a_big_blob_goes_over_http_both_ways_and_only_once(coordinator: LocalFarm,
                                                           tmp_path: Path) -> None:
    path, sha = blob_file(tmp_path)
    with coordinator.client() as client:
        assert transfer.upload_files(client.blobs, {sha: path}) == BIG
        assert f"stored blob {sha} ({BIG} bytes) over HTTP" in coordinator_log(coordinator)
        assert transfer.upload_files(client.blobs, {sha: path}) == 0, "already stored: no bytes"
        down = transfer.download_blob(client.blobs, sha, tmp_path / "down" / "blob.bin")
        assert down.read_bytes() == path.read_bytes()
        assert not (tmp_path / "down" / "blob.bin.part").exists()
        # A second key with the same bytes proves possession over HTTP, as over gRPC.
        with FarmClient(coordinator.address, Keypair()) as other:
            assert transfer.upload_files(other.blobs, {sha: path}) == BIG
            transfer.download_blob(other.blobs, sha, tmp_path / "other.bin")
    assert "possession proven" in coordinator_log(coordinator)


def test_an_interrupted_upload_resumes_and_a_download_resumes(coordinator: LocalFarm,
                                                              tmp_path: Path) -> None:
    path, sha = blob_file(tmp_path)
    data = path.read_bytes()
    half = len(data) // 2
    with coordinator.client() as client:
        where = endpoint(client)
        # The client stops after half of the body (its source runs dry): the coordinator keeps
        # what arrived for this key, and says so.
        with pytest.raises(transfer._Interrupted):
            transfer._http_upload(where, sha, len(data), io.BytesIO(data[:half]), 0, None, 30)
        assert received(client, sha, len(data), until=half) == half
        assert transfer.upload_files(client.blobs, {sha: path}) == len(data) - half
        # A download cut short resumes from its .part, and the whole is checked.
        (tmp_path / "down.bin.part").write_bytes(data[:1000])
        transfer.download_blob(client.blobs, sha, tmp_path / "down.bin")
        assert (tmp_path / "down.bin").read_bytes() == data
        # A .part of other bytes fails the sha256 check and is fetched again from zero.
        (tmp_path / "again.bin.part").write_bytes(b"x" * 1000)
        transfer.download_blob(client.blobs, sha, tmp_path / "again.bin")
        assert (tmp_path / "again.bin").read_bytes() == data


def received(client: FarmClient, sha: str, size: int, until: int) -> int:
    """What the coordinator holds of this key's upload, once it reaches `until` (the server
    finishes writing a cut-off body after the client has gone) or after 20 s."""
    deadline = time.monotonic() + 20
    while True:
        missing = client.blobs.FindMissingBlobs(pb.FindMissingBlobsRequest(
            blobs=[pb.BlobRef(sha256=sha, size=size)]), timeout=10).missing
        got = missing[0].received_bytes if missing else size
        if got == until or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_bytes_that_do_not_match_their_sha256_are_not_stored(coordinator: LocalFarm,
                                                             tmp_path: Path) -> None:
    _path, sha = blob_file(tmp_path)
    wrong = os.urandom(BIG)
    with coordinator.client() as client:
        with pytest.raises(transfer._Refused) as refused:
            transfer._http_upload(endpoint(client), sha, BIG, io.BytesIO(wrong), 0, None, 30)
        assert refused.value.status == 422
        assert "does not match the declared sha256" in refused.value.message
        assert received(client, sha, BIG, until=0) == 0, "nothing kept, nothing stored"


def test_every_request_is_signed_fresh_and_allowed(coordinator: LocalFarm,
                                                   tmp_path: Path) -> None:
    path, sha = blob_file(tmp_path)
    with coordinator.client() as alice, FarmClient(coordinator.address, Keypair()) as mallory:
        transfer.upload_files(alice.blobs, {sha: path})
        asked = pb.DownloadBlobRequest(sha256=sha)
        assert request(alice, "GET", sha, {}, None)[0] == 401, "unsigned"
        status, body = request(mallory, "GET", sha, {}, asked)
        assert status == 403 and b"your own jobs" in body, "a sha256 opens nothing"
        # A signature covers the request: one made for offset 0 does not fetch from 1000.
        assert request(alice, "GET", sha, {"Range": "bytes=1000-"}, asked)[0] == 401
        # The same signed request twice: the second is a replay.
        where = endpoint(alice)
        signature = dict(sign_call(alice.keypair, transfer.HTTP_DOWNLOAD_METHOD,
                                   asked.SerializeToString()))
        statuses = []
        for _ in range(2):
            connection = http.client.HTTPConnection(where.host, where.port, timeout=30)
            connection.request("GET", f"/blobs/{sha}", headers=signature)
            response = connection.getresponse()
            statuses.append(response.status)
            data = response.read()
            connection.close()
            if response.status == 200:
                assert data == path.read_bytes()
        assert statuses == [200, 401]
        status, _ = request(alice, "GET", sha, {"Range": f"bytes={BIG + 1}-"},
                            pb.DownloadBlobRequest(sha256=sha, offset=BIG + 1))
        assert status == 416
        assert request(alice, "GET", "0" * 63 + "g", {}, asked)[0] == 404
        # Over the store's size limit: refused before a byte of the body is sent.
        huge = 9 * 1024**3
        other = hashlib.sha256(b"huge").hexdigest()
        status, body = request(alice, "PUT", other, {
            "X-Blob-Size": str(huge), "X-Blob-Offset": "0", "Content-Length": "0"},
            pb.UploadChunk(blob=pb.BlobRef(sha256=other, size=huge), offset=0))
        assert status == 413 and b"at most" in body
        # An upload signed for one size cannot declare another.
        status, _ = request(alice, "PUT", other, {
            "X-Blob-Size": "10", "X-Blob-Offset": "0", "Content-Length": "0"},
            pb.UploadChunk(blob=pb.BlobRef(sha256=other, size=11), offset=0))
        assert status == 401


def test_blobs_over_https_when_the_coordinator_serves_tls(farm: LocalFarm,
                                                          tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj",
         "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    farm.start_coordinator(extra_args=("--no-verifier", "--tls-cert", str(cert),
                                       "--tls-key", str(key)))
    path, sha = blob_file(tmp_path)
    with FarmClient(farm.address, Keypair(), tls_ca=cert) as client:
        assert endpoint(client).tls is not None
        transfer.upload_files(client.blobs, {sha: path})
        assert "over HTTP" in coordinator_log(farm)
        down = transfer.download_blob(client.blobs, sha, tmp_path / "down.bin")
        assert down.read_bytes() == path.read_bytes()


def test_without_the_endpoint_blobs_go_over_the_streams(farm: LocalFarm,
                                                        tmp_path: Path) -> None:
    farm.start_coordinator(extra_args=("--no-verifier", "--no-blob-http"))
    path, sha = blob_file(tmp_path)
    with farm.client() as client:
        assert transfer._http_endpoint(client.blobs) is None
        transfer.upload_files(client.blobs, {sha: path})
        down = transfer.download_blob(client.blobs, sha, tmp_path / "down.bin")
        assert down.read_bytes() == path.read_bytes()
    assert "over HTTP" not in coordinator_log(farm)


def test_a_blob_read_again_and_again_is_served_from_the_page_cache(coordinator: LocalFarm,
                                                                   tmp_path: Path) -> None:
    """A scene every node fetches: its first two downloads read the coordinator's disk
    (O_DIRECT, the page cache left alone), the third leaves it in the cache for the rest."""
    path, sha = blob_file(tmp_path, size=3 * transfer.HTTP_MIN_BYTES)
    with coordinator.client() as client:
        transfer.upload_files(client.blobs, {sha: path})
        stored = next(p for p in coordinator.root.rglob(sha) if p.is_file())
        drop_cached_pages(stored)
        fd = os.open(stored, os.O_RDONLY)
        try:
            for read in range(1, 4):
                down = transfer.download_blob(client.blobs, sha, tmp_path / f"down-{read}.bin")
                assert down.read_bytes() == path.read_bytes()
                assert cached(fd, 0) == (read == 3), f"after read {read}"
        finally:
            os.close(fd)

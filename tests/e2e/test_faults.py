"""Faults against real processes: a node cut off past its lease, a corrupt chunk, a full disk.

Each ends with every frame rendered once in the final result, nothing credited twice, and a
line in the coordinator's log that says what happened. (A node killed mid-frame and a
coordinator SIGKILLed mid-job are in tests/e2e/test_farm_e2e.py.)
"""

from __future__ import annotations

import hashlib
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import ROOT, SAMPLE_SCENE
from farm_helpers import frames, submit_sample, wait_for, wait_until_done, wait_until_registered
from solders.keypair import Keypair

from frameproof.client import FarmClient
from frameproof.identity import load_or_create_keypair
from frameproof.localfarm import LocalFarm
from frameproof.receipts import sign_receipt
from frameproof.transfer import upload_bytes
from frameproof.v1 import farm_pb2 as pb


class TcpProxy:
    """A loopback TCP proxy whose link can be paused: bytes are held, not dropped.

    While paused, both directions stall as on a dead network path; on resume the held bytes
    flow again, as when a partition heals.
    """

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.running = threading.Event()
        self.running.set()
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    def close(self) -> None:
        self.closed = True
        self.running.set()
        for each in [self.listener, *self.sockets]:
            each.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while not self.closed:
                for key, _ in selector.select(timeout=0.2):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    self.running.wait()  # paused: hold the bytes
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()


def node_id_of(farm: LocalFarm, name: str) -> str:
    return str(load_or_create_keypair(farm.root / name / "node-keypair.json").pubkey())


def node_log(farm: LocalFarm, name: str) -> str:
    return (farm.root / "logs" / f"{name}.log").read_text(errors="replace")


def coordinator_log(root: Path) -> str:
    return (root / "logs" / "coordinator.log").read_text(errors="replace")


def start_node_through(farm: LocalFarm, name: str, address: str) -> subprocess.Popen[bytes]:
    """A node that reaches the coordinator at `address` (a proxy) instead of directly."""
    direct, farm.address = farm.address, address
    try:
        return farm.start_node(name)
    finally:
        farm.address = direct


# ------------------------------------------------------------------ partitions


@dataclass
class Partition:
    """What happened when a node was cut off mid-lease for longer than its lease."""

    farm: LocalFarm
    island: subprocess.Popen[bytes]
    island_id: str
    lease_id: str
    job: pb.Job
    final: list[pb.Frame]
    receipts: pb.Receipts
    late_refusal: grpc.RpcError


@pytest.fixture(scope="module")
def partition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Partition]:
    """Cut a node off right after it takes a lease; heal the link after the job is done.

    The cut lasts longer than the lease, so another node finishes the frame meanwhile.
    """
    root = tmp_path_factory.mktemp("partition")
    with LocalFarm(root / "farm", lease_seconds=4.0) as farm:
        farm.start_coordinator()
        proxy = TcpProxy(farm.address)
        try:
            island = start_node_through(farm, "island", proxy.address)
            wait_until_registered(farm, ["island"])
            island_id = node_id_of(farm, "island")
            with farm.client() as client:
                job = submit_sample(client, SAMPLE_SCENE, "1", samples=128)

                # Cut only once the island itself has the lease (its log says so): the
                # coordinator records the lease before its reply crosses the proxy, and a
                # reply held in the paused proxy would leave the island without a lease.
                # Its render (128 samples) and the scene fetch before it take far longer than
                # a poll, so the island is cut off mid-lease.
                lease_id = wait_for(lambda: re.search(r"lease ([0-9a-f]{32}): job",
                                                      node_log(farm, "island")),
                                    timeout=60, interval=0.02)[1]
                proxy.pause()
                cut_at = time.monotonic()
                [leased] = frames(client, job.job_id)  # the creator's view, not through the proxy
                assert leased.state == pb.FRAME_STATE_RENDERING and leased.node_id == island_id
                farm.start_node("mainland")
                wait_until_done(client, job.job_id, timeout=300)
                assert time.monotonic() - cut_at > farm.lease_seconds
                proxy.resume()
                # Back on the network, the island learns its lease is gone.
                wait_for(lambda: re.search(r"withdrawn|says stop|lease lost",
                                           node_log(farm, "island")), timeout=90)
                late_refusal = deliver_late(farm, island_id, lease_id)
                final = frames(client, job.job_id)

                def settled() -> pb.Receipts | None:  # burns are settled in the background
                    receipts = client.jobs.GetReceipts(pb.ReceiptsRequest(job_id=job.job_id),
                                                       timeout=10)
                    return receipts if receipts.frames else None

                receipts = wait_for(settled, timeout=60)
            yield Partition(farm, island, island_id, lease_id, job, final, receipts,
                            late_refusal)
        finally:
            proxy.close()


def deliver_late(farm: LocalFarm, island_id: str, lease_id: str) -> grpc.RpcError:
    """The island's delivery for its old lease, sent after the partition healed."""
    keypair = load_or_create_keypair(farm.root / "island" / "node-keypair.json")
    with FarmClient(farm.address, keypair) as island_client:
        image = b"late frame from the island"
        sha = upload_bytes(island_client.blobs, image)
        late = pb.CompleteTaskRequest(node_id=island_id, lease_id=lease_id, outputs=[
            pb.FrameOutput(frame=1, image=pb.BlobRef(sha256=sha, size=len(image)))])
        with pytest.raises(grpc.RpcError) as caught:
            island_client.nodes.CompleteTask(late, timeout=10)
    return caught.value


def test_node_cut_off_longer_than_its_lease_cannot_deliver_late(partition: Partition) -> None:
    mainland = node_id_of(partition.farm, "mainland")
    assert partition.late_refusal.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "lease lost" in partition.late_refusal.details()
    [frame] = partition.final
    assert frame.state == pb.FRAME_STATE_DONE and frame.node_id == mainland
    assert frame.attempts >= 1, "the expired lease is counted"
    assert [r.frame for r in partition.receipts.frames] == [1], "one payment for the frame"
    assert {r.node_id for r in partition.receipts.frames} == {mainland}
    log = coordinator_log(partition.farm.root)
    job_id = partition.job.job_id
    assert re.search(rf"lease of task \w+ expired: job {job_id}", log), log[-3000:]
    assert f"lease {partition.lease_id} delivered" not in log


def test_a_node_whose_lease_is_gone_survives_a_failed_fetch(farm: LocalFarm,
                                                            tmp_path: Path) -> None:
    """After a partition the island may fail its fetch before a heartbeat tells it the lease
    is gone; its FailTask is then refused. Seen in the partition run above (a race there);
    here made deterministic with a lease the coordinator no longer knows."""
    from render_node.daemon import HeldLease, NodeConfig, RenderNode

    farm.start_coordinator(extra_args=("--no-verifier",))
    with farm.client() as creator:
        job = submit_sample(creator, SAMPLE_SCENE, "1")
    node = RenderNode(NodeConfig(coordinator=farm.address, work_dir=tmp_path / "node",
                                 threads=1))
    try:
        node._register()
        gone = pb.Lease(lease_id="0" * 32, task_id="0" * 32, job_id=job.job_id,
                        scene_id=job.scene_id, main_file="spinning_cube.blend", frames=[1])
        # The fetch is refused, then FailTask is refused: must not raise.
        node._run_lease(HeldLease(gone, expires=0.0))
    finally:
        node.blender.close()
        node.client.close()


# ------------------------------------------------------------------ corrupt uploads


def chunks_of(data: bytes, size: int, *, corrupt_index: int | None = None,
              declared_sha: str | None = None) -> Iterator[pb.UploadChunk]:
    ref = pb.BlobRef(sha256=declared_sha or hashlib.sha256(data).hexdigest(), size=len(data))
    for index, offset in enumerate(range(0, len(data), size)):
        piece = data[offset:offset + size]
        crc = zlib.crc32(piece)
        if index == corrupt_index:
            piece = piece[:-1] + bytes([piece[-1] ^ 0xFF])  # a bit flip in transit
        yield pb.UploadChunk(blob=ref if index == 0 else None, offset=offset, data=piece,
                             crc32=crc)


def missing(client: FarmClient, sha: str, size: int) -> list[pb.BlobStatus]:
    request = pb.FindMissingBlobsRequest(blobs=[pb.BlobRef(sha256=sha, size=size)])
    return list(client.blobs.FindMissingBlobs(request, timeout=10).missing)


def test_corrupt_chunk_during_a_real_submit_then_a_clean_retry(farm: LocalFarm) -> None:
    farm.start_coordinator(extra_args=("--no-verifier",))
    blend = SAMPLE_SCENE.read_bytes()
    sha = hashlib.sha256(blend).hexdigest()
    chunk = 16 * 1024
    assert len(blend) > 3 * chunk, "the sample must span several chunks"
    with farm.client() as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.blobs.UploadBlob(chunks_of(blend, chunk, corrupt_index=2), timeout=30)
        assert caught.value.code() == grpc.StatusCode.DATA_LOSS
        assert "corrupt" in caught.value.details()
        [status] = missing(client, sha, len(blend))
        assert status.received_bytes == 2 * chunk, "only the good chunks before it are kept"

        # Content that does not match its declared sha256 is not stored either.
        other = hashlib.sha256(b"something else").hexdigest()
        with pytest.raises(grpc.RpcError) as caught:
            client.blobs.UploadBlob(chunks_of(blend, chunk, declared_sha=other), timeout=30)
        assert caught.value.code() == grpc.StatusCode.DATA_LOSS
        assert missing(client, other, len(blend))[0].received_bytes == 0

        # The creator's retry resumes the partial upload and the scene goes through intake.
        job = submit_sample(client, SAMPLE_SCENE, "1-2")
        assert job.frames.total == 2
        assert missing(client, sha, len(blend)) == []


# ------------------------------------------------------------------ duplicated credit


def test_a_retried_completion_is_credited_once(farm: LocalFarm) -> None:
    """A node whose CompleteTask answer was lost retries it: the lease still counts once."""
    farm.start_coordinator(extra_args=("--no-verifier",))
    with farm.client() as creator:
        job = submit_sample(creator, SAMPLE_SCENE, "1")
    node = Keypair()
    node_id = str(node.pubkey())
    with FarmClient(farm.address, node) as client:
        client.nodes.RegisterNode(pb.RegisterNodeRequest(node_id=node_id), timeout=10)
        lease = client.nodes.LeaseTask(pb.LeaseTaskRequest(node_id=node_id), timeout=10).lease
        assert lease.job_id == job.job_id
        image = b"\x89PNG pretend"
        sha = upload_bytes(client.blobs, image)
        receipt = sign_receipt(node, lease.job_id, 1, sha, lease.settings)
        request = pb.CompleteTaskRequest(node_id=node_id, lease_id=lease.lease_id, outputs=[
            pb.FrameOutput(frame=1, image=pb.BlobRef(sha256=sha, size=len(image)),
                           receipt_signature=receipt)])
        for _ in range(3):
            assert client.nodes.CompleteTask(request, timeout=10).accepted
        standing = client.nodes.GetNodeStanding(pb.GetNodeStandingRequest(node_id=node_id),
                                                timeout=10).standing
    assert standing.leases_completed == 1, (
        f"one lease delivered, counted {standing.leases_completed} times")


# ------------------------------------------------------------------ full disk


def namespaces_work() -> bool:
    unshare = shutil.which("unshare")
    if not unshare:
        return False
    probe = subprocess.run([unshare, "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


class TmpfsCoordinator:
    """A coordinator whose data dir is a tiny tmpfs in a private user+mount namespace."""

    def __init__(self, root: Path, size: str) -> None:
        self.root = root
        data = root / "data"
        data.mkdir(parents=True)
        (root / "logs").mkdir()
        self.log_file = open(root / "logs" / "coordinator.log", "ab")  # noqa: SIM115
        command = (f"mount -t tmpfs -o size={size} tmpfs {data} && exec {sys.executable} -m "
                   f"coordinator.cli serve --listen 127.0.0.1:0 --data-dir {data} "
                   "--no-verifier")
        self.process = subprocess.Popen(["unshare", "-rm", "sh", "-c", command], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=self.log_file,
                                        env={**os.environ, "PYTHONPATH": str(ROOT)},
                                        start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        assert line.startswith("listening on "), coordinator_log(root)
        self.address = line.split()[-1]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.log_file.close()


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TmpfsCoordinator,
                                                                          grpc.RpcError]]:
    """Fill the blob store's 4 MiB disk with an 8 MiB upload; hand over the refusal."""
    if not namespaces_work():
        pytest.skip("unshare -rm (user and mount namespaces) is not available here")
    coordinator = TmpfsCoordinator(tmp_path_factory.mktemp("full-disk"), "4m")
    try:
        big = os.urandom(8 * 1024 * 1024)
        with FarmClient(coordinator.address, Keypair()) as client, \
                pytest.raises(grpc.RpcError) as caught:
            client.blobs.UploadBlob(chunks_of(big, 1024 * 1024), timeout=60)
        yield coordinator, caught.value
    finally:
        coordinator.stop()


def test_full_blob_store_is_resource_exhausted_and_the_coordinator_keeps_serving(
    full_disk: tuple[TmpfsCoordinator, grpc.RpcError]
) -> None:
    coordinator, refusal = full_disk
    assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refusal.details()
    assert "is full" in refusal.details() and "Free disk space" in refusal.details()
    with FarmClient(coordinator.address, Keypair()) as client:
        assert client.jobs.ListJobs(pb.ListJobsRequest(), timeout=10).jobs == []
        # The partial was discarded, so the space is back: a small upload is stored.
        small = b"a small blob after the disk filled up"
        sha = upload_bytes(client.blobs, small)
        assert missing(client, sha, len(small)) == []
    assert coordinator.process.poll() is None


def test_full_blob_store_is_logged(full_disk: tuple[TmpfsCoordinator, grpc.RpcError]) -> None:
    coordinator, _ = full_disk
    log = coordinator_log(coordinator.root)
    assert re.search(r"ERROR.*blob store full", log), log[-2000:]


# ------------------------------------------------------------ full disk under SQLite


def register(client: FarmClient, keypair: Keypair) -> None:
    """Register `keypair` as a node (a call that must write), signed by that same key."""
    client.nodes.RegisterNode(pb.RegisterNodeRequest(
        node_id=str(keypair.pubkey()), name="disk-full-probe",
        capabilities=pb.NodeCapabilities(threads=1, devices=["CPU"])), timeout=30)


@pytest.mark.sqlite_only(reason="fills the coordinator's own files: SQLite's database and the "
                         "file nonce journal (PostgreSQL's data and nonces live in the server)")
@pytest.mark.parametrize("room", ["none", "journal"], ids=["no-file-may-grow",
                                                        "only-the-database-is-full"])
def test_a_full_disk_is_aborted_with_a_reason_and_loses_nothing(farm: LocalFarm,
                                                                room: str) -> None:
    """The coordinator's files may not grow (RLIMIT_FSIZE, as on a full disk): calls that
    must write are refused with ABORTED and a reason, the coordinator keeps serving, and once
    there is room again everything committed before is still there. "journal": the small
    files (nonce journal, log) still have room and the database's write-ahead log does not,
    so SQLite itself fails."""
    import resource

    farm.start_coordinator()
    assert farm.coordinator is not None
    pid = farm.coordinator.pid
    before = [Keypair() for _ in range(3)]
    for keypair in before:
        with FarmClient(farm.address, keypair) as node:
            register(node, keypair)
    journal = farm.root / "coordinator" / "nonces" / "nonces.log"
    limit = 0 if room == "none" else journal.stat().st_size + 20_000
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))
    except OSError as error:
        pytest.skip(f"cannot lower another process's file-size limit here: {error}")
    try:
        refusals = []
        for _ in range(20):
            keypair = Keypair()
            try:
                with FarmClient(farm.address, keypair) as node:
                    register(node, keypair)
            except grpc.RpcError as error:
                refusals.append(error)
            if len(refusals) == 3:
                break
        assert refusals, "no call failed although no file may grow"
        expected = "storage full" if room == "none" else "database error"
        for refusal in refusals:
            assert refusal.code() == grpc.StatusCode.ABORTED, (refusal.code(), refusal.details())
            assert "could not complete this call" in refusal.details(), refusal.details()
            assert expected in refusal.details(), refusal.details()
        assert farm.coordinator.poll() is None, "the coordinator is still running"
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    after = Keypair()
    with FarmClient(farm.address, after) as node:
        register(node, after)
    with farm.client() as creator:
        listed = {n.node_id for n in creator.nodes.ListNodes(pb.ListNodesRequest(),
                                                               timeout=30).nodes}
    assert {str(k.pubkey()) for k in [*before, after]} <= listed, "nothing committed was lost"
    if room == "journal":
        assert re.search(r"ERROR.*RegisterNode failed: database error", coordinator_log(farm.root))

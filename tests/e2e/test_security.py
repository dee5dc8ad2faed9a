"""Identity and authorization: signed calls, ownership, admin channel, TLS."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pytest
from conftest import SAMPLE_SCENE
from farm_helpers import frames, submit_sample, wait_until_done
from grpc_health.v1 import health_pb2, health_pb2_grpc
from solders.keypair import Keypair

from frameproof.auth import sign_call
from frameproof.client import FarmClient
from frameproof.localfarm import LocalFarm
from frameproof.receipts import sign_receipt, verify_receipt
from frameproof.transfer import upload_bytes
from frameproof.v1 import farm_pb2 as pb
from frameproof.v1 import farm_pb2_grpc

GET_JOB = "/frameproof.v1.JobService/GetJob"


def raw_jobs(address: str) -> tuple[grpc.Channel, farm_pb2_grpc.JobServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, farm_pb2_grpc.JobServiceStub(channel)


def code_and_details(call, request, metadata=None) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10, metadata=metadata)
    return caught.value.code(), caught.value.details()


@pytest.fixture
def coordinator(farm: LocalFarm) -> LocalFarm:
    farm.start_coordinator()
    return farm


def test_unsigned_calls_are_refused_but_health_is_open(coordinator: LocalFarm):
    channel, jobs = raw_jobs(coordinator.address)
    with channel:
        code, details = code_and_details(jobs.ListJobs, pb.ListJobsRequest())
        assert code == grpc.StatusCode.UNAUTHENTICATED and "unsigned call" in details
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_forged_stale_and_replayed_calls_are_refused(coordinator: LocalFarm):
    keypair = Keypair()
    request = pb.GetJobRequest(job_id="0123456789abcdef")
    channel, jobs = raw_jobs(coordinator.address)
    with channel:
        # Signed over another request: the signature does not match what arrives.
        forged = sign_call(keypair, GET_JOB, pb.GetJobRequest(job_id="other").SerializeToString())
        code, details = code_and_details(jobs.GetJob, request, forged)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "bad signature" in details

        stale = sign_call(keypair, GET_JOB, request.SerializeToString(), now=time.time() - 600)
        code, details = code_and_details(jobs.GetJob, request, stale)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "stale call" in details

        good = sign_call(keypair, GET_JOB, request.SerializeToString())
        code, _ = code_and_details(jobs.GetJob, request, good)
        assert code == grpc.StatusCode.NOT_FOUND  # authentic: it got through to the servicer
        code, details = code_and_details(jobs.GetJob, request, good)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "replayed" in details


def test_a_call_replayed_after_a_coordinator_restart_is_refused(coordinator: LocalFarm):
    """Nonces are journalled: a restart inside the freshness window does not reopen it."""
    request = pb.GetJobRequest(job_id="0123456789abcdef")
    captured = sign_call(Keypair(), GET_JOB, request.SerializeToString())
    channel, jobs = raw_jobs(coordinator.address)
    with channel:
        code, _ = code_and_details(jobs.GetJob, request, captured)
        assert code == grpc.StatusCode.NOT_FOUND  # accepted once
    coordinator.kill_coordinator()
    coordinator.start_coordinator()
    channel, jobs = raw_jobs(coordinator.address)
    with channel:
        code, details = code_and_details(jobs.GetJob, request, captured)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "replayed" in details


def test_a_creator_sees_only_their_own_jobs_and_frames(coordinator: LocalFarm, tmp_path: Path):
    coordinator.start_node("node")
    with coordinator.client() as alice:
        job = submit_sample(alice, SAMPLE_SCENE, "1")
        wait_until_done(alice, job.job_id)
        frame = frames(alice, job.job_id)[0]
    with coordinator.client(tmp_path / "mallory.json") as mallory:
        assert mallory.jobs.ListJobs(pb.ListJobsRequest(), timeout=10).jobs == []
        for call, request in [
            (mallory.jobs.GetJob, pb.GetJobRequest(job_id=job.job_id)),
            (mallory.jobs.ListFrames, pb.ListFramesRequest(job_id=job.job_id)),
            (mallory.jobs.CancelJob, pb.CancelJobRequest(job_id=job.job_id)),
        ]:
            code, details = code_and_details(call, request)
            assert code == grpc.StatusCode.PERMISSION_DENIED, details
        for sha in (frame.image.sha256, job.scene_id):
            stream = mallory.blobs.DownloadBlob(pb.DownloadBlobRequest(sha256=sha), timeout=10)
            with pytest.raises(grpc.RpcError) as caught:
                list(stream)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_node_speaks_only_for_itself_and_reads_only_leased_scenes(coordinator: LocalFarm):
    with coordinator.client() as creator:
        job = submit_sample(creator, SAMPLE_SCENE, "1")
    honest, intruder = Keypair(), Keypair()
    with FarmClient(coordinator.address, intruder) as client:
        request = pb.RegisterNodeRequest(node_id=str(honest.pubkey()))
        code, details = code_and_details(client.nodes.RegisterNode, request)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "signed this call" in details
        client.nodes.RegisterNode(pb.RegisterNodeRequest(node_id=str(intruder.pubkey())),
                                  timeout=10)
        stream = client.blobs.DownloadBlob(pb.DownloadBlobRequest(sha256=job.scene_id),
                                           timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            list(stream)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        lease = client.nodes.LeaseTask(pb.LeaseTaskRequest(node_id=str(intruder.pubkey())),
                                       timeout=10).lease
        assert lease.job_id == job.job_id
        # With the lease in hand, the scene may be read.
        chunks = list(client.blobs.DownloadBlob(pb.DownloadBlobRequest(sha256=job.scene_id),
                                                timeout=10))
        assert chunks and chunks[0].total_size > 0
        code, _ = code_and_details(client.nodes.CompleteTask, pb.CompleteTaskRequest(
            node_id=str(honest.pubkey()), lease_id=lease.lease_id))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # A result must carry the node's receipt over exactly what it delivers.
        image = b"pretend pixels"
        sha = upload_bytes(client.blobs, image)
        forged = sign_receipt(intruder, lease.job_id, 1, "0" * 64, lease.settings)
        code, details = code_and_details(client.nodes.CompleteTask, pb.CompleteTaskRequest(
            node_id=str(intruder.pubkey()), lease_id=lease.lease_id, outputs=[pb.FrameOutput(
                frame=1, image=pb.BlobRef(sha256=sha, size=len(image)),
                receipt_signature=forged)]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "receipt" in details


def test_a_self_reported_benchmark_score_is_clamped(coordinator: LocalFarm):
    """A node cannot claim to be a supercomputer (or break the scheduler with NaN)."""
    claims = {"boaster": 1e9, "negative": -5.0, "honest": 2.5}
    ids = {}
    with FarmClient(coordinator.address, Keypair()) as client, pytest.raises(
            grpc.RpcError) as caught:
        client.nodes.RegisterNode(pb.RegisterNodeRequest(
            node_id=client.pubkey, capabilities=pb.NodeCapabilities(
                benchmark_score=float("nan"))), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "benchmark_score must be a finite number" in (caught.value.details() or "")
    for name, score in claims.items():
        key = Keypair()
        ids[name] = str(key.pubkey())
        with FarmClient(coordinator.address, key) as client:
            client.nodes.RegisterNode(pb.RegisterNodeRequest(
                node_id=ids[name], name=name,
                capabilities=pb.NodeCapabilities(benchmark_score=score)), timeout=10)
    with coordinator.client() as client:
        listed = {n.node_id: n.benchmark_score
                  for n in client.nodes.ListNodes(pb.ListNodesRequest(), timeout=10).nodes}
    assert listed[ids["boaster"]] == 20.0
    assert listed[ids["negative"]] == 0.05
    assert listed[ids["honest"]] == 2.5


def test_every_result_keeps_the_nodes_signed_receipt(coordinator: LocalFarm):
    coordinator.start_node("node")
    with coordinator.client() as creator:
        job = submit_sample(creator, SAMPLE_SCENE, "1-2")
        wait_until_done(creator, job.job_id)
        delivered = frames(creator, job.job_id)
    for frame in delivered:
        assert verify_receipt(frame.node_id, frame.receipt_signature, job.job_id, frame.frame,
                              frame.image.sha256, job.settings, frame.receipt_proof)
        assert not verify_receipt(frame.node_id, frame.receipt_signature, job.job_id,
                                  frame.frame + 1, frame.image.sha256, job.settings,
                                  frame.receipt_proof)


def test_the_local_admin_socket_sees_every_job(coordinator: LocalFarm):
    with coordinator.client() as creator:
        job = submit_sample(creator, SAMPLE_SCENE, "1")
    socket = coordinator.data_dir / "admin.sock"
    assert socket.stat().st_mode & 0o777 == 0o600
    with FarmClient(f"unix:{socket}", Keypair()) as admin:
        listed = admin.jobs.ListJobs(pb.ListJobsRequest(), timeout=10).jobs
        assert [each.job_id for each in listed] == [job.job_id]


def test_tls_listener(farm: LocalFarm, tmp_path: Path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj",
         "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    farm.start_coordinator(extra_args=("--tls-cert", str(cert), "--tls-key", str(key)))
    with FarmClient(farm.address, Keypair(), tls_ca=cert) as client:
        assert client.jobs.ListJobs(pb.ListJobsRequest(), timeout=10).jobs == []
    with FarmClient(farm.address, Keypair()) as plaintext:
        with pytest.raises(grpc.RpcError) as caught:
            plaintext.jobs.ListJobs(pb.ListJobsRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

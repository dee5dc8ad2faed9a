"""A denoised frame's passes file travels node -> coordinator -> verifier, and no further.

Issue 11's design checks a denoised frame on its noisy pass: the node uploads a multilayer EXR
of the render's passes next to the frame (`FrameOutput.passes`), the coordinator keeps it with
the frame's result and hands it to the verifier (`VerificationTask.passes`). Real coordinator
processes on SQLite, real signed gRPC, a real node rendering with real Blender; the verifier
here is a key the coordinator trusts (`--verifier-pubkey`), driven by hand so the test sees
what a verifier is given.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import OpenEXR
import pytest
from conftest import SAMPLE_SCENE
from farm_helpers import frames, submit_sample, wait_for, wait_until_done
from saved_scenes import build_saved_scene
from solders.keypair import Keypair
from test_hostile_access import can_download, refused

from frameproof.client import FarmClient
from frameproof.creator import Creator
from frameproof.limits import PASSES_BYTES_PER_PIXEL, PASSES_SLACK_BYTES
from frameproof.localfarm import LocalFarm
from frameproof.receipts import sign_receipt
from frameproof.render_settings import passes_limit
from frameproof.transfer import upload_bytes
from frameproof.v1 import farm_pb2 as pb

AS_SAVED = {"samples": 0, "resolution_percentage": 0}  # the scene's own: 160x90, 16 samples


def start_with_verifier_key(farm: LocalFarm, *extra_args: str) -> Keypair:
    """A coordinator without its built-in verifier; the returned key verifies instead."""
    verifier = Keypair()
    farm.start_coordinator(extra_args=("--no-verifier", "--verifier-pubkey",
                                       str(verifier.pubkey()), *extra_args))
    return verifier


def lease_checks(client: FarmClient, count: int) -> list[pb.VerificationTask]:
    """Lease `count` checks as they arrive (each stays leased to this verifier)."""
    leased: list[pb.VerificationTask] = []

    def all_leased() -> bool:
        response = client.verifier.LeaseVerification(
            pb.LeaseVerificationRequest(verifier_id=client.pubkey), timeout=10)
        if response.HasField("task"):
            leased.append(response.task)
        return len(leased) >= count

    wait_for(all_leased, timeout=240, interval=0.5)
    return leased


def exr_layers(path: Path) -> set[str]:
    """The part names of a multipart multilayer EXR ("ViewLayer.Noisy Image", ...)."""
    return {part.name() for part in OpenEXR.File(str(path), separate_channels=True).parts}


# One lease at a time (uploaded as rendered), and three per call (a proven node: uploaded and
# delivered together with CompleteTasks).
@pytest.mark.parametrize("max_tasks", ["1", "3"])
def test_a_denoised_frames_passes_reach_the_verifier_and_never_the_creator(
        farm: LocalFarm, tmp_path: Path, max_tasks: str) -> None:
    verifier = start_with_verifier_key(farm, "--proven-after", "0")
    denoised = build_saved_scene(tmp_path / "denoised" / "saved.blend", denoise=True,
                                 adaptive=True)
    plain = build_saved_scene(tmp_path / "plain" / "saved.blend", adaptive=True)
    with farm.client() as creator:
        denoised_job = submit_sample(creator, denoised, "1-2", **AS_SAVED)
        plain_job = submit_sample(creator, plain, "1", **AS_SAVED)
    farm.start_node("node", extra_args=("--max-tasks", max_tasks))

    with FarmClient(farm.address, verifier) as client:
        checks = lease_checks(client, 3)
        by_job: dict[str, list[pb.VerificationTask]] = {}
        for check in checks:
            by_job.setdefault(check.job_id, []).append(check)
        assert sorted(c.frame for c in by_job[denoised_job.job_id]) == [1, 2]
        # A scene without a denoiser comes with no passes file.
        [plain_check] = by_job[plain_job.job_id]
        assert not plain_check.HasField("passes")
        passes = {}
        for check in by_job[denoised_job.job_id]:
            assert check.HasField("passes") and check.passes.sha256 != check.image.sha256
            assert 0 < check.passes.size <= passes_limit(check.settings)
            # The verifier holding the check reads it: a float multilayer EXR of the passes.
            assert can_download(client, check.passes.sha256)
            path = tmp_path / f"passes-{check.frame}.exr"
            path.write_bytes(b"".join(chunk.data for chunk in client.blobs.DownloadBlob(
                pb.DownloadBlobRequest(sha256=check.passes.sha256), timeout=30)))
            assert path.stat().st_size == check.passes.size
            assert {"ViewLayer.Noisy Image", "ViewLayer.Denoising Albedo",
                    "ViewLayer.Denoising Normal"} <= exr_layers(path)
            passes[check.frame] = check.passes.sha256
        assert len(set(passes.values())) == 2, "each frame has its own passes"
        # Passed (the checker of passes is not this test's subject): the frames are paid.
        for check in checks:
            client.verifier.SubmitVerification(pb.SubmitVerificationRequest(
                verifier_id=client.pubkey, verification_id=check.verification_id,
                passed=True, reason="identical", mode="exact", pixel_sha256="0" * 64),
                timeout=10)
        assert not any(can_download(client, sha) for sha in passes.values()), "check over"

    # The node kept no passes file once it was uploaded.
    assert not list((farm.root / "node").rglob("*.exr"))
    if max_tasks == "3":
        assert "leased 3 tasks in one call" in (farm.root / "logs" / "node.log").read_text()
    with farm.client() as creator:
        wait_until_done(creator, denoised_job.job_id)
        listed = frames(creator, denoised_job.job_id)
        assert {f.image.sha256 for f in listed}.isdisjoint(passes.values())
        download = Creator(creator).download(denoised_job.job_id, tmp_path / "download")
        assert sorted(p.suffix for p in download.files) == [".png", ".png"]
        assert all(can_download(creator, f.image.sha256) for f in listed)
        assert not any(can_download(creator, sha) for sha in passes.values())


def test_a_node_names_only_passes_it_uploaded_and_within_the_frames_bound(
        farm: LocalFarm) -> None:
    verifier = start_with_verifier_key(farm)
    with farm.client() as creator:
        job = submit_sample(creator, SAMPLE_SCENE, "1")  # 64x36 (tests' TINY)
    limit = passes_limit(job.settings)
    assert limit == 64 * 36 * PASSES_BYTES_PER_PIXEL + PASSES_SLACK_BYTES
    with FarmClient(farm.address, Keypair()) as other_node:  # another key's upload
        theirs = os.urandom(5000)
        theirs_sha = upload_bytes(other_node.blobs, theirs)
    node = Keypair()
    with FarmClient(farm.address, node) as client:
        client.nodes.RegisterNode(pb.RegisterNodeRequest(node_id=client.pubkey), timeout=10)
        lease = client.nodes.LeaseTask(pb.LeaseTaskRequest(node_id=client.pubkey),
                                       timeout=10).lease
        assert lease.job_id == job.job_id
        image = os.urandom(1000)  # stands in for the node's frame
        image_sha = upload_bytes(client.blobs, image)

        def completion(passes: pb.BlobRef) -> pb.CompleteTaskRequest:
            return pb.CompleteTaskRequest(
                node_id=client.pubkey, lease_id=lease.lease_id, outputs=[pb.FrameOutput(
                    frame=1, image=pb.BlobRef(sha256=image_sha, size=len(image)),
                    render_seconds=1.0, passes=passes,
                    receipt_signature=sign_receipt(node, job.job_id, 1, image_sha,
                                                   lease.settings))])

        # Another key's blob, known by its sha256 alone: never this node's passes.
        code, details = refused(client.nodes.CompleteTask,
                                completion(pb.BlobRef(sha256=theirs_sha, size=len(theirs))))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, details
        assert "passes" in details and "upload it first" in details
        # Its own upload, one byte over the bound for the job's 64x36 frame.
        oversized = os.urandom(limit + 1)
        oversized_sha = upload_bytes(client.blobs, oversized)
        code, details = refused(client.nodes.CompleteTask, completion(
            pb.BlobRef(sha256=oversized_sha, size=len(oversized))))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "exceed" in details, details
        # Its own upload at the bound: accepted, kept and handed to the verifier.
        own = oversized[:limit]
        own_sha = upload_bytes(client.blobs, own)
        client.nodes.CompleteTask(completion(pb.BlobRef(sha256=own_sha, size=len(own))),
                                  timeout=30)
    with FarmClient(farm.address, verifier) as client:
        [check] = lease_checks(client, 1)
        assert check.passes == pb.BlobRef(sha256=own_sha, size=limit)
        assert can_download(client, own_sha) and not can_download(client, theirs_sha)
    with farm.client() as creator:
        assert not can_download(creator, own_sha)
        assert [f.image.sha256 for f in frames(creator, job.job_id)] == [image_sha]

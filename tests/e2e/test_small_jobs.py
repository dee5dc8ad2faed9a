"""A small job's fixed costs: the spare Blender child of the coordinator's intake and probe,
and checks handed to an idle verifier as soon as a frame is delivered (a long poll)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import SAMPLE_SCENE
from farm_helpers import TINY, alive, submit_sample, wait_for
from solders.keypair import Keypair

from frameproof.client import FarmClient
from frameproof.creator import Creator, JobOptions
from frameproof.localfarm import LocalFarm
from frameproof.receipts import sign_receipt
from frameproof.transfer import upload_bytes
from frameproof.v1 import farm_pb2 as pb


def blender_children(parent: int) -> set[int]:
    """The Blender children (frameproof.blender.child) whose parent is `parent`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"frameproof.blender.child" in command:
            found.add(int(entry.name))
    return found


def test_a_new_scene_is_inspected_and_probed_in_the_spare_child_which_then_ends(
        farm: LocalFarm) -> None:
    """The coordinator starts a spare Blender ahead of need; an estimate of a new scene takes
    it (the scene's inspection and probe), closes it, and starts the next spare."""
    farm.start_coordinator()
    assert farm.coordinator is not None
    coordinator = farm.coordinator.pid
    (spare,) = wait_for(lambda: blender_children(coordinator), timeout=60)
    with farm.client() as client:
        creator = Creator(client)
        scene = creator.upload_scene(SAMPLE_SCENE)
        estimate = creator.estimate(scene.scene_id, JobOptions(frames="1-3", **TINY))
    assert estimate.method == "full" and list(estimate.probe_frames) == [1, 2, 3]
    wait_for(lambda: not alive(spare), timeout=30)  # used for one scene, then closed
    (following,) = wait_for(lambda: blender_children(coordinator), timeout=60)
    assert following != spare
    scenes = farm.data_dir / "scenes"
    assert "spinning_cube" in (scenes / f"{scene.scene_id}.inspect.log").read_text()
    assert (scenes / f"{scene.scene_id}.probe.log").stat().st_size > 0


def test_an_idle_verifier_gets_a_check_as_soon_as_a_frame_is_delivered(
        farm: LocalFarm) -> None:
    """LeaseVerification is a long poll: an idle verifier's call waits in the coordinator and
    is answered with the check when a node delivers the frame (before: an empty answer, and
    the verifier asked again half a second later)."""
    verifier = Keypair()
    farm.start_coordinator(extra_args=("--no-verifier", "--verifier-pubkey",
                                       str(verifier.pubkey())))
    with farm.client() as creator:
        job = submit_sample(creator, SAMPLE_SCENE, "1")
    request = pb.LeaseVerificationRequest(verifier_id=str(verifier.pubkey()))
    with FarmClient(farm.address, verifier) as checker:
        # Nothing queued: a short call comes back empty before its deadline.
        empty = checker.verifier.LeaseVerification(request, timeout=3)
        assert not empty.HasField("task") and empty.retry_after_ms > 0
        waiting = checker.verifier.LeaseVerification.future(request, timeout=30)
        time.sleep(0.5)
        assert not waiting.done(), "an idle verifier waits for a check in the coordinator"
        node = Keypair()
        image = os.urandom(1000)  # stands in for the node's frame
        with FarmClient(farm.address, node) as client:
            client.nodes.RegisterNode(pb.RegisterNodeRequest(node_id=client.pubkey),
                                      timeout=10)
            lease = client.nodes.LeaseTask(pb.LeaseTaskRequest(node_id=client.pubkey),
                                           timeout=10).lease
            sha = upload_bytes(client.blobs, image)
            client.nodes.CompleteTask(pb.CompleteTaskRequest(
                node_id=client.pubkey, lease_id=lease.lease_id, outputs=[pb.FrameOutput(
                    frame=1, image=pb.BlobRef(sha256=sha, size=len(image)),
                    render_seconds=2.0,
                    receipt_signature=sign_receipt(node, job.job_id, 1, sha,
                                                   lease.settings))]), timeout=10)
        answer = waiting.result(timeout=30)
    assert answer.HasField("task"), "the waiting call was answered with the delivered frame"
    assert answer.task.job_id == job.job_id and answer.task.image.sha256 == sha

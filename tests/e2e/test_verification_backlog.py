"""Verification never blocks, end to end: a real coordinator, node, verifier and Blender.

The scenario of issue 15: a slow-to-verify job is cancelled while its check runs; a small job
submitted behind it finishes in minutes and the cancelled job's escrow is refunded. And the
parts on their own over real gRPC: a lease renewed by the heartbeat, a renewal that says stop
once the job is cancelled, a check that keeps failing held as stuck and reported.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from conftest import SAMPLE_SCENE
from farm_helpers import (
    coordinator_cli,
    job,
    make_scene_variant,
    submit_sample,
    wait_for,
    wait_until_done,
    wait_until_registered,
)

from coordinator.storage.database import open_database
from coordinator.storage.proof import ProofStore
from coordinator.storage.verification_queue import LEASE_FLOOR_SECONDS, MAX_CHECK_FAILURES
from frameproof.cli.main import main as frameproof
from frameproof.client import FarmClient
from frameproof.identity import load_or_create_keypair
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb

# The sample saved without adaptive sampling, at this many samples: a frame the verifier
# re-renders three times at one thread, a check many heartbeats long (~10 s unloaded on two
# cores, more under load), while the node renders it once with two threads. The coordinator
# probes it before escrow and the node renders it: each sample costs the test thrice.
SLOW_SAMPLES = 2048


def settled_receipts(client: FarmClient, job_id: str, timeout: float = 90) -> pb.Receipts:
    """The job's receipts once its refund has landed on chain."""
    def landed() -> pb.Receipts | None:
        receipts = client.jobs.GetReceipts(pb.ReceiptsRequest(job_id=job_id), timeout=30,
                                           wait_for_ready=True)
        return receipts if receipts.refund_state == "landed" else None

    return wait_for(landed, timeout=timeout)


def doctor(farm: LocalFarm) -> list[dict]:
    result = coordinator_cli("doctor", "--data-dir", str(farm.data_dir), "--json")
    assert result.returncode in (0, 1), result.stderr  # 1: something is held
    return json.loads(result.stdout)["quarantined"]


def test_a_renewed_check_stops_on_cancel_and_a_failing_check_is_held_as_stuck(
        tmp_path: Path, capsys) -> None:
    with LocalFarm(tmp_path / "farm", lease_seconds=4.0) as farm:
        farm.start_coordinator(extra_args=("--no-verifier",))  # this test is the verifier
        farm.start_node("n1")
        wait_until_registered(farm, ["n1"])
        client = farm.client()
        submitted = submit_sample(client, SAMPLE_SCENE, "1-2")
        wait_for(lambda: job(client, submitted.job_id).frames.verifying == 2, 180)

        admin = farm.data_dir / "admin-keypair.json"
        me = str(load_or_create_keypair(admin).pubkey())
        verifier = farm.client(admin).verifier

        def lease() -> pb.VerificationTask:
            answer = verifier.LeaseVerification(pb.LeaseVerificationRequest(verifier_id=me),
                                                timeout=30)
            assert answer.HasField("task")
            return answer.task

        # A lease sized from the check's cost (at least the floor), renewed by a heartbeat.
        first = lease()
        assert first.expires_unix_ms / 1000 - time.time() > LEASE_FLOOR_SECONDS - 10
        time.sleep(1.1)
        renewed = verifier.ExtendVerification(pb.ExtendVerificationRequest(
            verifier_id=me, verification_id=first.verification_id), timeout=30)
        assert renewed.keep_going and renewed.expires_unix_ms > first.expires_unix_ms

        # The verifier cannot run it (its own trouble): handed back, counted; held at the cap.
        stuck_id = first.verification_id
        for attempt in range(MAX_CHECK_FAILURES):
            task = first if attempt == 0 else lease()
            assert task.verification_id == stuck_id, "the job's oldest check comes back"
            released = verifier.ReleaseVerification(pb.ReleaseVerificationRequest(
                verifier_id=me, verification_id=stuck_id,
                reason="TransferError: scene download failed"), timeout=30)
            assert released.released
        status = job(client, submitted.job_id)
        assert status.verification.stuck == 1
        assert "TransferError: scene download failed" in status.verification.stuck_reason
        assert any(h["key"] == stuck_id and "stuck after 3 failures" in h["reason"]
                   for h in doctor(farm)), "the operator sees it in render-coordinator doctor"
        capsys.readouterr()
        assert frameproof(["--coordinator", farm.address, "--keypair",
                           str(farm.creator_keypair), "status", submitted.job_id]) == 0
        said = capsys.readouterr().out
        assert "1 stuck: verifier" in said and "render-coordinator doctor" in said, said

        # The other check is being worked on when its job is cancelled: the next renewal says
        # stop, the job settles without waiting for either check, and its escrow comes back.
        other = lease()
        assert other.verification_id != stuck_id
        client.jobs.CancelJob(pb.CancelJobRequest(job_id=submitted.job_id), timeout=30)
        stop = verifier.ExtendVerification(pb.ExtendVerificationRequest(
            verifier_id=me, verification_id=other.verification_id), timeout=30)
        assert not stop.keep_going and "cancelled" in stop.reason
        receipts = settled_receipts(client, submitted.job_id)
        assert receipts.total_tokens_burned == 0, "unverified frames are not charged"
        assert receipts.refunded == receipts.escrowed
        assert not any(h["key"] == stuck_id for h in doctor(farm)), "dropped, not held"


def test_a_small_job_behind_a_cancelled_slow_to_verify_job_finishes_in_minutes(
        tmp_path: Path) -> None:
    with LocalFarm(tmp_path / "farm", lease_seconds=4.0) as farm:
        farm.start_coordinator(extra_args=("--verifier-threads", "1"))
        farm.start_node("n1", threads=2)
        wait_until_registered(farm, ["n1"])
        client = farm.client()
        shutil.copytree(SAMPLE_SCENE.parent / "textures", tmp_path / "textures")
        scene = make_scene_variant(SAMPLE_SCENE, tmp_path / "slow.blend",
                                   "scene.cycles.use_adaptive_sampling = False")
        slow = submit_sample(client, scene, "1", samples=SLOW_SAMPLES)
        wait_for(lambda: job(client, slow.job_id).verification.in_progress == 1, 300,
                 interval=0.5)
        client.jobs.CancelJob(pb.CancelJobRequest(job_id=slow.job_id), timeout=30)

        started = time.monotonic()
        small = submit_sample(client, SAMPLE_SCENE, "1-3")
        wait_until_done(client, small.job_id, timeout=300)
        minutes = (time.monotonic() - started) / 60
        assert minutes < 4, f"the small job took {minutes:.1f} min"

        receipts = settled_receipts(client, slow.job_id)
        assert receipts.total_tokens_burned == 0 and receipts.refunded == receipts.escrowed
        log = (farm.data_dir / "verifier" / "verifier.log").read_text()
        # The dropped check was never approved: either a heartbeat told the verifier to stop
        # mid-render, or (a check quicker than one heartbeat) its verdict was refused.
        assert ("its job was cancelled" in log or "refused: verification" in log), log
        checks = {c.state for c in ProofStore(open_database(farm.database_url))
                  .verifications_of(slow.job_id)}
        assert checks == {"cancelled"}, checks

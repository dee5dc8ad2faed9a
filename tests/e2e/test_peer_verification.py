"""Peer verification: Tier 1 nodes verify other nodes' frames, and are audited.

The store's rules run on a real SQLite database; the end-to-end test runs a real coordinator,
a real render node and `render-verifier` under a peer node's key, over gRPC.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import SAMPLE_SCENE
from farm_helpers import frames, submit_sample, wait_for, wait_until_done
from sqlmodel import Session, select

from coordinator.storage.database import open_database
from coordinator.storage.models import (
    JobRecord,
    NodeStandingRecord,
    PeerVerdictRecord,
    SceneRecord,
)
from coordinator.storage.proof import Peer, ProofStore, VerificationResult
from coordinator.storage.store import FarmStore, FrameOutputRecord, SchedulingPolicy
from frameproof.identity import load_or_create_keypair
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb

POLICY = SchedulingPolicy(lease_seconds=10, max_attempts=3, max_failures_per_node=2)
BUILD, DEVICE = "5.0.1", "CPU"
PEER = Peer("peer", BUILD, DEVICE)


def verdict(passed: bool, reason: str = "") -> VerificationResult:
    return VerificationResult(passed=passed, reason=reason or ("ok" if passed else "bad"),
                              mode="exact", pixel_sha256="", details={})


def make_trusted(proof: ProofStore, node_id: str) -> None:
    """Stand-in for a long honest history: Tier 1, well past probation."""
    with Session(proof.engine) as session:
        session.add(NodeStandingRecord(node_id=node_id, score=0.95, consecutive_verified=400,
                                       verified=400, delivered=2000))
        session.commit()


@pytest.fixture
def stores(db_url: str) -> Iterator[tuple[FarmStore, ProofStore]]:
    engine = open_database(db_url)
    store = FarmStore(engine, POLICY)
    store.save_scene(SceneRecord(scene_id="scene", main_file="a.blend", info_json="{}",
                                 created_at=0.0))
    proof = ProofStore(engine, POLICY, peer_audit_rate=0.0, rng=random.Random(1))
    make_trusted(proof, "peer")
    yield store, proof
    engine.dispose()


def deliver(store: FarmStore, job_id: str, node: str, *, build: str = BUILD,
            device: str = DEVICE, sampled: bool = True, passes: str = "") -> None:
    store.create_job(JobRecord(job_id=job_id, scene_id="scene", frames_spec="",
                               settings_json="{}", created_at=0.0, updated_at=0.0), [[1]], 0.0)
    task = store.lease_next_task(node, now=1.0)
    assert task is not None and task.job_id == job_id
    output = FrameOutputRecord(frame=1, sha256=hashlib.sha256(job_id.encode()).hexdigest(), size=1,
                               extension="png", render_seconds=1.0, blender_version=build,
                               device=device, passes_sha256=passes,
                               passes_size=1000 if passes else 0)
    store.complete_task(task.lease_id, node, [output], 1.0,
                        frozenset({1}) if sampled else frozenset())


def test_only_tier1_nodes_that_are_not_quarantined_may_verify(stores):
    _, proof = stores
    assert proof.peer_may_verify("peer")
    assert not proof.peer_may_verify("newcomer"), "probation"
    proof.set_quarantine("peer", True, "operator request", now=2.0)
    assert not proof.peer_may_verify("peer")


def test_a_peer_gets_only_other_nodes_tile_checks_of_its_own_class(stores):
    store, proof = stores
    deliver(store, "own", "peer")  # its own frame
    deliver(store, "gpu", "node-b", device="OPTIX")  # another device class
    deliver(store, "old", "node-c", build="4.2.0")  # another Blender build
    deliver(store, "unsampled", "node-d", sampled=False)  # cheap checks only
    assert proof.lease_verification("peer", 2.0, 10, PEER) is None
    deliver(store, "good", "node-e")
    check = proof.lease_verification("peer", 2.0, 10, PEER)
    assert check is not None and check.job_id == "good" and check.node_id == "node-e"
    # the coordinator's own verifier takes anything
    taken = {proof.lease_verification("v1", 2.0, 10).job_id for _ in range(4)}
    assert taken == {"own", "gpu", "old", "unsampled"}


def test_a_peer_reads_only_what_its_checks_need(stores):
    store, proof = stores
    deliver(store, "good", "node-e")
    image = store.list_frame_results("good")[0].blob_sha256
    assert not proof.peer_may_read("peer", image), "not leased yet"
    proof.lease_verification("peer", 2.0, 10, PEER)
    assert proof.peer_may_read("peer", image)
    assert proof.peer_may_read("peer", "scene"), "the scene of the job it checks"
    assert not proof.peer_may_read("peer", "f" * 64)
    assert not proof.peer_may_read("someone-else", image)


def test_a_denoised_frames_passes_are_read_by_whoever_holds_its_check_until_decided(stores):
    store, proof = stores
    proof.peer_audit_rate = 1.0  # the peer's pass goes to a coordinator verifier too
    passes = "c" * 64
    deliver(store, "denoised", "node-e", passes=passes)
    [result] = store.list_frame_results("denoised")
    assert (result.passes_sha256, result.passes_size) == (passes, 1000)
    assert not proof.peer_may_read("peer", passes), "not leased yet"
    check = proof.lease_verification("peer", 2.0, 10, PEER)
    assert proof.peer_may_read("peer", passes)
    assert not proof.peer_may_read("someone-else", passes)
    proof.finish_verification(check.verification_id, "peer", verdict(True), 3.0, peer=True)
    assert not proof.peer_may_read("peer", passes), "its check is over"
    # Audited: the frame is not decided, its passes stay with it for the coordinator verifier.
    again = proof.lease_verification("v1", 4.0, 10)
    assert again.verification_id == check.verification_id
    assert proof.peer_may_read("v1", passes)
    proof.finish_verification(again.verification_id, "v1", verdict(True), 5.0)
    assert not proof.peer_may_read("v1", passes)


def test_a_peer_pass_approves_unless_audited(stores, tmp_path):
    store, proof = stores
    deliver(store, "good", "node-e")
    check = proof.lease_verification("peer", 2.0, 10, PEER)
    finished = proof.finish_verification(check.verification_id, "peer", verdict(True), 3.0,
                                         peer=True)
    assert finished.approved and not finished.audit
    assert [r.verdict for r in store.list_frame_results("good")] == ["approved"]
    event = proof.history("node-e", 1)[0]
    assert event.kind == "verified" and json.loads(event.details_json)["peer"] == "peer"
    # audit everything: the pass waits for a coordinator verifier, and the peer cannot retake it
    proof.peer_audit_rate = 1.0
    deliver(store, "audited", "node-e")
    check = proof.lease_verification("peer", 4.0, 10, PEER)
    finished = proof.finish_verification(check.verification_id, "peer", verdict(True), 5.0,
                                         peer=True)
    assert finished.audit and not finished.approved
    assert [r.verdict for r in store.list_frame_results("audited")] != ["approved"]
    assert proof.lease_verification("peer", 6.0, 10, PEER) is None
    again = proof.lease_verification("v1", 6.0, 10)
    assert again.verification_id == check.verification_id
    settled = proof.finish_verification(again.verification_id, "v1", verdict(True), 7.0)
    assert settled.approved and settled.contradicted_peer is None
    with Session(proof.engine) as session:
        record = session.get(PeerVerdictRecord, check.verification_id)
        assert record.audited and record.agreed is True


def test_a_peers_failure_punishes_no_one_until_the_audit_and_a_false_one_cuts_the_peer(stores):
    store, proof = stores
    deliver(store, "honest", "node-e")
    before = proof.standing("node-e")
    check = proof.lease_verification("peer", 2.0, 10, PEER)
    finished = proof.finish_verification(check.verification_id, "peer",
                                         verdict(False, "3/3 tiles failed"), 3.0, peer=True)
    assert finished.audit and not finished.rejected
    assert proof.standing("node-e") == before, "one peer's word punishes no one"
    assert store.list_frame_results("honest"), "the frame is kept"
    audit = proof.lease_verification("v1", 4.0, 10)
    settled = proof.finish_verification(audit.verification_id, "v1", verdict(True), 5.0)
    assert settled.approved
    assert settled.contradicted_peer is not None and settled.contradicted_peer[0] == "peer"
    assert not proof.peer_may_verify("peer"), "a false accusation costs Tier 1"
    event = proof.history("peer", 1)[0]
    assert event.kind == "failed"
    assert json.loads(event.details_json)["peer_verdict"] == "failed"


def test_a_peers_true_failure_rejects_the_frame_after_the_audit(stores):
    store, proof = stores
    deliver(store, "cheat", "cheater")
    check = proof.lease_verification("peer", 2.0, 10, PEER)
    proof.finish_verification(check.verification_id, "peer", verdict(False), 3.0, peer=True)
    audit = proof.lease_verification("v1", 4.0, 10)
    settled = proof.finish_verification(audit.verification_id, "v1", verdict(False), 5.0)
    assert settled.rejected and settled.contradicted_peer is None
    assert proof.peer_may_verify("peer")
    assert proof.standing("cheater").failed == 1


# ---------------------------------------------------------------- end to end


def run_peer_verifier(farm: LocalFarm, keypair: Path) -> subprocess.Popen[bytes]:
    log = open(farm.root / "logs" / "peer-verifier.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "--coordinator", farm.address,
         "--work-dir", str(farm.root / "peer-verifier"), "--keypair", str(keypair),
         "--threads", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def test_a_tier1_node_verifies_another_nodes_frames_over_grpc(farm: LocalFarm):
    """No coordinator verifier runs: the peer alone approves the honest node's frames."""
    farm.start_coordinator(extra_args=("--no-verifier", "--peer-audit-rate", "0"))
    peer_key = farm.root / "peer-keypair.json"
    peer_id = str(load_or_create_keypair(peer_key).pubkey())
    client = farm.client()
    peer_client = farm.client(peer_key)
    request = pb.LeaseVerificationRequest(verifier_id=peer_id, blender_version=BUILD,
                                          device=DEVICE)
    with pytest.raises(grpc.RpcError) as refused:
        peer_client.verifier.LeaseVerification(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    engine = open_database(farm.database_url)
    make_trusted(ProofStore(engine), peer_id)
    engine.dispose()
    job = submit_sample(client, SAMPLE_SCENE, "1-3")
    farm.start_node("honest")
    wait_for(lambda: all(f.state == pb.FRAME_STATE_VERIFYING for f in frames(client, job.job_id)),
             timeout=180)
    peer = run_peer_verifier(farm, peer_key)
    try:
        wait_until_done(client, job.job_id, timeout=180)
    finally:
        peer.terminate()
        peer.wait(30)
    final = frames(client, job.job_id)
    assert [f.state for f in final] == [pb.FRAME_STATE_DONE] * 3
    assert all("passed: exact" in f.verification for f in final), final
    engine = open_database(farm.database_url)
    proof = ProofStore(engine)
    with Session(proof.engine) as session:
        judged = list(session.exec(select(PeerVerdictRecord)))
    engine.dispose()
    sampled = [f for f in final if "cheap" not in f.verification]
    assert len(judged) == len(sampled) >= 1
    assert all(r.peer_id == peer_id and r.passed and not r.audited for r in judged)

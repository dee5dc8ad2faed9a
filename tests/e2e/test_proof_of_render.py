"""Proof-of-Render end to end (real coordinator, verifier, honest and cheating nodes, real
Blender) and the verification queue's rules in the store (SQLite, no processes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE_SCENE
from farm_helpers import (
    coordinator_cli,
    frames,
    render_reference,
    submit_sample,
    wait_for,
    wait_until_done,
    wait_until_registered,
)

from coordinator.domain.states import TaskState
from coordinator.storage.database import open_database
from coordinator.storage.models import JobRecord, SceneRecord, VerificationRecord
from coordinator.storage.proof import ProofStore, VerificationGone, VerificationResult
from coordinator.storage.store import FarmStore, FrameOutputRecord, SchedulingPolicy
from frameproof.cli import jobs, nodes
from frameproof.cli.download import download_frames
from frameproof.client import FarmClient
from frameproof.identity import load_or_create_keypair
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb
from render_node import status
from verifier.compare import load_image, ssim

CHEATER = Path(__file__).resolve().parents[1] / "cheating_node.py"
FRAMES = list(range(1, 7))

# ---------------------------------------------------------------- helpers (processes)


def start_cheater(farm: LocalFarm, name: str, strategy: str,
                  device: str = "") -> subprocess.Popen[bytes]:
    """The cheating node as its own process, stopped with the farm like any other node."""
    log = open(farm.root / "logs" / f"{name}.log", "ab")  # noqa: SIM115
    node = subprocess.Popen(
        [sys.executable, str(CHEATER), "--coordinator", farm.address, "--work-dir",
         str(farm.root / name), "--strategy", strategy, "--name", name, "--threads", "1",
         "--device", device],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    farm.nodes.append(node)
    return node


def node_id_of(farm: LocalFarm, name: str) -> str:
    return str(load_or_create_keypair(farm.root / name / "node-keypair.json").pubkey())


def standing(client: FarmClient, node_id: str, history: int = 200) -> pb.NodeStandingResponse:
    request = pb.GetNodeStandingRequest(node_id=node_id, history_limit=history)
    return client.nodes.GetNodeStanding(request, timeout=10, wait_for_ready=True)


def node_status(farm: LocalFarm, name: str, capsys: pytest.CaptureFixture[str],
                *flags: str) -> str:
    """`render-node status` for a node's work dir, as an operator would run it."""
    parser = argparse.ArgumentParser()
    status.add_arguments(parser)
    capsys.readouterr()
    code = status.run(parser.parse_args(["--coordinator", farm.address, "--work-dir",
                                         str(farm.root / name), *flags]))
    assert code == 0
    return capsys.readouterr().out


def node_status_json(farm: LocalFarm, name: str, capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(node_status(farm, name, capsys, "--json"))


def list_nodes(client: FarmClient, capsys: pytest.CaptureFixture[str], as_json: bool) -> str:
    """`frameproof nodes [--json]`."""
    capsys.readouterr()
    assert nodes.run(argparse.Namespace(json=as_json), client) == 0
    return capsys.readouterr().out


# ---------------------------------------------------------------- end to end


def test_a_cheater_is_caught_quarantined_and_replaced_by_an_honest_node(
    farm: LocalFarm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    farm.start_coordinator()
    start_cheater(farm, "cheater", "quarter-samples")
    wait_until_registered(farm, ["cheater"])
    cheater = node_id_of(farm, "cheater")
    with farm.client() as client:
        job = submit_sample(client, SAMPLE_SCENE, f"{FRAMES[0]}-{FRAMES[-1]}")

        def cheater_delivered_twice() -> bool:
            return standing(client, cheater).standing.leases_completed >= 2

        # The cheater alone has the queue until it has delivered two frames: it really gets
        # work, and two failures are enough to quarantine it.
        wait_for(cheater_delivered_twice, timeout=60)
        farm.start_node("honest")
        wait_until_registered(farm, ["honest"])
        honest = node_id_of(farm, "honest")
        wait_until_done(client, job.job_id, timeout=120)
        final = frames(client, job.job_id)
        download = download_frames(client, job.job_id, tmp_path / "download")
        files, missing = download.files, download.not_ready
        cheats = standing(client, cheater)
        good = standing(client, honest)
        listed = {row["node_id"]: row
                  for row in json.loads(list_nodes(client, capsys, as_json=True))}
        table = list_nodes(client, capsys, as_json=False)
        capsys.readouterr()
        assert jobs.run_frames(argparse.Namespace(job=job.job_id, json=True), client) == 0
        frame_rows = json.loads(capsys.readouterr().out)
        assert jobs.run_frames(argparse.Namespace(job=job.job_id, json=False), client) == 0
        assert "passed" in capsys.readouterr().out

    # Every final frame is the honest node's, approved by Proof-of-Render.
    assert [f.frame for f in final] == FRAMES and missing == 0
    assert {f.node_id for f in final} == {honest}
    assert all(f.state == pb.FRAME_STATE_DONE for f in final)
    assert all(f.verification.startswith("passed") for f in final), [f.verification
                                                                      for f in final]
    assert all(row["state"] == "done" and row["verification"].startswith("passed")
               and row["device"] == "CPU" and row["blender_version"] for row in frame_rows)
    # The cheater's frames were rejected, with the verifier's reason, and re-rendered.
    failed = [e for e in cheats.history if e.kind == "failed"]
    assert len(failed) >= 2 and {e.job_id for e in failed} == {job.job_id}
    assert all(json.loads(e.details_json)["mode"] == "exact" for e in failed)
    rejected = {e.frame for e in failed}
    assert all(f.attempts >= 1 for f in final if f.frame in rejected)
    assert cheats.standing.quarantined and cheats.standing.tier == "quarantined"
    assert cheats.standing.frames_failed >= 2 and cheats.standing.frames_verified == 0
    assert cheats.standing.reputation < 0.5
    # The honest node rose.
    assert not good.standing.quarantined and good.standing.frames_failed == 0
    assert good.standing.frames_verified >= len(FRAMES)
    assert good.standing.reputation > 0.5
    # What the farm sees (`frameproof nodes --json`) and operators (`render-node status`).
    assert listed[cheater]["quarantined"] and listed[cheater]["tier"] == "quarantined"
    assert listed[honest]["reputation"] > 0.5 and not listed[honest]["quarantined"]
    assert "quarantined" in table and "cheater" in table and "honest" in table
    cheater_status = node_status_json(farm, "cheater", capsys)
    honest_status = node_status_json(farm, "honest", capsys)
    assert cheater_status["node_id"] == cheater and cheater_status["quarantined"] is True
    assert cheater_status["frames_failed"] >= 2
    assert any(e["kind"] == "failed" for e in cheater_status["history"])
    assert honest_status["node_id"] == honest and honest_status["quarantined"] is False
    assert isinstance(honest_status["reputation"], float) and honest_status["reputation"] > 0.5
    assert honest_status["frames_verified"] >= len(FRAMES) and honest_status["frames_failed"] == 0
    assert honest_status["tier"] == "probation"  # fewer than 50 verified frames in a row
    text = node_status(farm, "cheater", capsys, "--history", "3")
    assert "QUARANTINED" in text and "failed" in text
    # And every final frame is what plain Blender renders.
    references = render_reference(SAMPLE_SCENE, FRAMES, tmp_path / "reference")
    for number, path in zip(FRAMES, files, strict=True):
        score = ssim(load_image(path), load_image(references[number]))
        assert score >= 0.99, f"frame {number}: SSIM {score:.4f} against a local render"
    # The cheater's rejected frames cost the creator nothing and earn the cheater nothing.
    with farm.client() as client:
        receipts = wait_for(lambda: (r := client.jobs.GetReceipts(
            pb.ReceiptsRequest(job_id=job.job_id), timeout=10)).refund_state == "landed" and r,
            timeout=60)
    assert sorted(f.frame for f in receipts.frames) == FRAMES
    assert {f.node_id for f in receipts.frames} == {honest}
    closed = coordinator_cli("epoch", "close", "--data-dir", str(farm.data_dir), "--json")
    assert closed.returncode == 0, closed.stderr
    minted = {p["node_id"]: p["minted"] for p in json.loads(closed.stdout)["payouts"]}
    assert minted.get(honest, 0) > 0 and minted.get(cheater, 0) == 0


def test_statistical_mode_passes_an_honest_node_of_another_class_and_catches_a_cheater(
    farm: LocalFarm,
):
    """Nodes claiming CUDA are judged statistically by the CPU verifier, with real border
    renders at the job's seed and a second seed: the honest one is approved, the one that cut
    its samples to a quarter is rejected."""
    farm.start_coordinator()
    honest_node = start_cheater(farm, "gpu-honest", "honest", device="CUDA")
    wait_until_registered(farm, ["gpu-honest"])
    look = {"resolution_percentage": 50, "samples": 16}  # 160x90: 40 px tiles
    with farm.client() as client:
        honest_job = submit_sample(client, SAMPLE_SCENE, "1-3", **look)
        wait_until_done(client, honest_job.job_id, timeout=180)
        approved = frames(client, honest_job.job_id)
        honest_node.terminate()
        honest_node.wait(30)
        start_cheater(farm, "gpu-cheater", "quarter-samples", device="CUDA")
        wait_until_registered(farm, ["gpu-cheater"])
        cheater = node_id_of(farm, "gpu-cheater")
        cheat_job = submit_sample(client, SAMPLE_SCENE, "4-5", **look)

        def cheater_failed() -> list[pb.ReputationEvent]:
            return [e for e in standing(client, cheater).history if e.kind == "failed"]

        failures = wait_for(cheater_failed, timeout=180)
        cheat_frames = frames(client, cheat_job.job_id)
    assert [f.state for f in approved] == [pb.FRAME_STATE_DONE] * 3
    assert all(f.device == "CUDA" for f in approved)
    assert all(f.verification == "passed: statistical" for f in approved), approved
    details = json.loads(failures[0].details_json)
    assert details["mode"] == "statistical", details
    assert failures[0].job_id == cheat_job.job_id
    assert not any(f.state == pb.FRAME_STATE_DONE and f.node_id == cheater
                   for f in cheat_frames), "a rejected frame is never final"


@pytest.mark.parametrize("strategy", ["blank", "flat-colour"])
def test_cheap_checks_reject_a_blank_frame(farm: LocalFarm, strategy: str):
    farm.start_coordinator()
    start_cheater(farm, "blank-cheater", strategy)
    wait_until_registered(farm, ["blank-cheater"])
    cheater = node_id_of(farm, "blank-cheater")
    with farm.client() as client:
        job = submit_sample(client, SAMPLE_SCENE, "1-2")

        def rejected() -> list[pb.ReputationEvent]:
            return [e for e in standing(client, cheater).history if e.kind == "failed"]

        failed = wait_for(rejected, timeout=60)
    details = json.loads(failed[0].details_json)
    assert failed[0].job_id == job.job_id
    assert details["mode"] == "cheap", "the cheap checks decide before any tile is rendered"
    assert "blank" in details["reason"]


def test_status_needs_the_nodes_own_keypair_and_makes_none(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]):
    parser = argparse.ArgumentParser()
    status.add_arguments(parser)
    code = status.run(parser.parse_args(["--coordinator", "127.0.0.1:1", "--work-dir",
                                         str(tmp_path / "node"), "--json"]))
    assert code == 2
    assert "no node keypair" in capsys.readouterr().err
    assert not (tmp_path / "node").exists(), "status must not create an identity"


# ---------------------------------------------------------------- the store's rules

POLICY = SchedulingPolicy(lease_seconds=10, max_attempts=3, max_failures_per_node=2)
PASS = VerificationResult(passed=True, reason="all 3 tiles passed", mode="exact",
                          pixel_sha256="", details={})


def failed(reason: str) -> VerificationResult:
    return VerificationResult(passed=False, reason=reason, mode="exact", pixel_sha256="",
                              details={})


@pytest.fixture
def stores(db_url: str) -> Iterator[tuple[FarmStore, ProofStore]]:
    engine = open_database(db_url)
    yield FarmStore(engine, POLICY), ProofStore(engine, POLICY)
    engine.dispose()


def add_job(store: FarmStore, job_id: str, chunks: list[list[int]]) -> None:
    if store.get_scene("scene") is None:
        store.save_scene(SceneRecord(scene_id="scene", main_file="a.blend", info_json="{}",
                                     created_at=0.0))
    store.create_job(JobRecord(job_id=job_id, scene_id="scene", frames_spec="",
                               settings_json="{}", created_at=0.0, updated_at=0.0), chunks, 0.0)


def deliver(store: FarmStore, node: str, sampled: bool = True, now: float = 1.0) -> str:
    """The node leases the next task and delivers every frame; returns the task id."""
    task = store.lease_next_task(node, now=now)
    assert task is not None and task.lease_id
    numbers = list(range(task.first_frame, task.last_frame + 1))
    outputs = [FrameOutputRecord(frame=n, sha256=f"{n:064x}", size=1, extension="png",
                                 render_seconds=1.0) for n in numbers]
    store.complete_task(task.lease_id, node, outputs, now,
                        frozenset(numbers) if sampled else frozenset())
    return task.task_id


def lease(proof: ProofStore, verifier: str = "v1", now: float = 2.0) -> VerificationRecord:
    check = proof.lease_verification(verifier, now, lease_seconds=10)
    assert check is not None
    return check


def test_a_verification_is_leased_to_one_verifier_only(stores):
    store, proof = stores
    add_job(store, "job", [[1]])
    deliver(store, "node")
    first = proof.lease_verification("v1", now=2.0, lease_seconds=10)
    assert first is not None and first.verifier_id == "v1" and first.render_tiles
    assert proof.lease_verification("v2", now=2.0, lease_seconds=10) is None
    with pytest.raises(VerificationGone):
        proof.finish_verification(first.verification_id, "v2", PASS, now=3.0)


def test_passes_approve_frames_and_finish_the_task_with_its_last_frame(stores):
    store, proof = stores
    add_job(store, "job", [[1, 2]])
    task_id = deliver(store, "node")
    first = proof.finish_verification(lease(proof).verification_id, "v1", PASS, now=3.0)
    assert first.approved and not first.task_done
    assert store.list_tasks("job")[0].state == TaskState.VERIFYING
    second = proof.finish_verification(lease(proof).verification_id, "v1", PASS, now=4.0)
    assert second.approved and second.task_done
    task = store.list_tasks("job")[0]
    assert task.task_id == task_id and task.state == TaskState.DONE
    results = store.list_frame_results("job")
    assert [r.verdict for r in results] == ["approved", "approved"]
    assert all(r.verification == "passed: exact" for r in results)
    assert proof.standing("node").verified == 2
    assert proof.standing("node").score > 0.5


def test_a_failure_requeues_the_task_for_another_node_and_records_why(stores):
    store, proof = stores
    add_job(store, "job", [[1, 2]])
    task_id = deliver(store, "cheater")
    check = lease(proof)
    finished = proof.finish_verification(check.verification_id, "v1",
                                         failed("3/3 tiles failed: equal pixels 0.41"), now=3.0)
    assert finished.rejected and not finished.approved
    assert store.list_frame_results("job") == [], "the task's frames are all thrown away"
    task = store.list_tasks("job")[0]
    assert task.state == TaskState.QUEUED and task.attempts == 1
    assert "rejected by Proof-of-Render: 3/3 tiles failed" in task.error
    states = {v.verification_id: v.state for v in proof.verifications_of("job")}
    assert states.pop(check.verification_id) == "done"
    assert set(states.values()) == {"cancelled"}, "the sibling frame's check is moot"
    assert proof.lease_verification("v1", now=3.0, lease_seconds=10) is None
    event = proof.history("cheater", 10)[0]
    assert event.kind == "failed" and event.score_after == pytest.approx(0.125)
    assert json.loads(event.details_json)["reason"].startswith("3/3 tiles failed")
    assert event.job_id == "job" and event.frame == check.frame
    assert store.lease_next_task("cheater", now=4.0) is None, "not back to the cheater"
    again = store.lease_next_task("honest", now=4.0)
    assert again is not None and again.task_id == task_id


def test_a_second_failure_quarantines_the_node(stores):
    store, proof = stores
    add_job(store, "one", [[1]])
    add_job(store, "two", [[1]])
    deliver(store, "cheater")
    deliver(store, "cheater")
    proof.finish_verification(lease(proof).verification_id, "v1", failed("blank"), now=3.0)
    assert not proof.standing("cheater").quarantined
    second = proof.finish_verification(lease(proof).verification_id, "v1", failed("noise"),
                                       now=4.0)
    assert second.change is not None and "quarantined" in second.change.reason
    assert proof.standing("cheater").quarantined
    assert proof.standing("cheater").tier == "quarantined"
    assert [e.kind for e in proof.history("cheater", 10)] == ["failed", "failed"]


def test_duplicate_pixels_escalate_an_unsampled_frame_to_a_tile_check(stores):
    store, proof = stores
    add_job(store, "job", [[1], [2]])
    pixels = "p" * 64
    deliver(store, "node", sampled=False)
    same = VerificationResult(passed=True, reason="decodes, right size, not blank", mode="cheap",
                              pixel_sha256=pixels, details={})
    first = proof.finish_verification(lease(proof).verification_id, "v1", same, now=3.0)
    assert first.approved and first.task_done, "a lone unsampled frame passes on cheap checks"
    deliver(store, "node", sampled=False, now=4.0)
    check = lease(proof, now=5.0)
    assert not check.render_tiles
    escalated = proof.finish_verification(check.verification_id, "v1", same, now=6.0)
    assert escalated.escalated and not escalated.approved and escalated.change is None
    again = lease(proof, "v2", now=7.0)
    assert again.verification_id == check.verification_id and again.render_tiles
    assert store.list_tasks("job")[1].state == TaskState.VERIFYING
    done = proof.finish_verification(again.verification_id, "v2",
                                     VerificationResult(True, "all 3 tiles passed", "exact",
                                                        pixels, {}), now=8.0)
    assert done.approved and done.task_done


def test_an_expired_verification_lease_goes_back_to_the_queue(stores):
    store, proof = stores
    add_job(store, "job", [[1]])
    deliver(store, "node")
    check = lease(proof, "v1", now=2.0)
    assert proof.requeue_expired_verifications(now=5.0) == 0, "still live"
    assert proof.requeue_expired_verifications(now=13.0) == 1
    again = lease(proof, "v2", now=14.0)
    assert again.verification_id == check.verification_id
    with pytest.raises(VerificationGone):
        proof.finish_verification(check.verification_id, "v1", PASS, now=15.0)
    assert proof.finish_verification(again.verification_id, "v2", PASS, now=15.0).task_done

"""The attacks of issue 14 that edge validation and money-path isolation stop, end to end.

Signed calls of our own against a live coordinator on loopback, real nodes rendering with
Blender, real SPL transfers on the embedded chain. Each test failed on the coordinator before
validation at the edge: one node wedged every settlement, one registration broke the node
listing for everyone, money fields answered UNKNOWN with a traceback.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import SAMPLE_SCENE
from farm_helpers import (
    coordinator_cli,
    settled_receipts,
    submit_sample,
    wait_for,
    wait_until_done,
    wait_until_registered,
)
from solders.keypair import Keypair
from sqlalchemy import text

from coordinator.storage.database import open_engine
from frameproof.cli.main import main as frameproof
from frameproof.client import FarmClient
from frameproof.identity import load_or_create_keypair
from frameproof.localfarm import LocalFarm
from frameproof.receipts import sign_receipt
from frameproof.transfer import upload_bytes
from frameproof.v1 import farm_pb2 as pb

CHEATER = Path(__file__).resolve().parents[1] / "cheating_node.py"
SHORT = 200  # an answer names the field and the bound; it never carries the input back


def refused(call: object, request: object) -> str:
    """Details of an INVALID_ARGUMENT answer (anything else fails the test)."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)  # type: ignore[operator]
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    details = error.details() or ""
    assert 0 < len(details) < SHORT, details[:SHORT]
    return details


def no_traceback(farm: LocalFarm) -> None:
    log = (farm.root / "logs" / "coordinator.log").read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]


def test_an_infinite_render_time_is_refused_and_other_creators_still_settle(
        farm: LocalFarm, tmp_path: Path) -> None:
    """A node reports render_seconds = inf for honest pixels; it used to wedge every sweep."""
    farm.start_coordinator()
    log = open(farm.root / "logs" / "liar.log", "ab")  # noqa: SIM115
    liar = subprocess.Popen(
        [sys.executable, str(CHEATER), "--coordinator", farm.address, "--work-dir",
         str(farm.root / "liar"), "--strategy", "honest", "--claim-seconds", "inf",
         "--name", "liar"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    farm.nodes.append(liar)
    with farm.client() as first:
        victim = submit_sample(first, SAMPLE_SCENE, "1")

    def liar_refused() -> bool:
        text = (farm.root / "logs" / "liar.log").read_text(errors="replace")
        return "render_seconds must be a finite number" in text

    wait_for(liar_refused, timeout=240)
    liar.terminate()
    liar.wait(timeout=30)

    farm.start_node("honest")
    wait_until_registered(farm, ["honest"])
    second_key = tmp_path / "second-creator.json"
    load_or_create_keypair(second_key)
    with farm.client(second_key) as second:
        other = submit_sample(second, SAMPLE_SCENE, "1-2")
        wait_until_done(second, other.job_id, timeout=300)
        receipts = settled_receipts(second, other.job_id)
        assert len(receipts.frames) == 2 and receipts.refunded > 0
    with farm.client() as first:
        wait_until_done(first, victim.job_id, timeout=300)
        charged = settled_receipts(first, victim.job_id).frames
        assert [(c.frame, c.node_id != "") for c in charged] == [(1, True)]
    check = coordinator_cli("ledger", "check", "--data-dir", str(farm.data_dir))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "quarantined" not in check.stdout  # refused at the edge: nothing needed holding
    no_traceback(farm)


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFarm, str]]:
    """One coordinator with the sample scene uploaded (by a first, legit job)."""
    with LocalFarm(tmp_path_factory.mktemp("hostile") / "farm") as local:
        local.start_coordinator()
        with local.client() as creator:
            scene = submit_sample(creator, SAMPLE_SCENE, "1").scene_id
        yield local, scene


def test_huge_capabilities_are_refused_and_the_node_listing_keeps_working(
        coordinator: tuple[LocalFarm, str], capsys: pytest.CaptureFixture[str]) -> None:
    """Two registrations with multi-megabyte device lists used to break ListNodes for all."""
    farm, _ = coordinator
    for devices in (["C" * (4 * 1024 * 1024 + 512 * 1024)], ["CPU"] * 400_000):
        key = Keypair()
        with FarmClient(farm.address, key) as client:
            details = refused(client.nodes.RegisterNode, pb.RegisterNodeRequest(
                node_id=client.pubkey, capabilities=pb.NodeCapabilities(devices=devices)))
        assert details.startswith("capabilities.devices")
    honest = Keypair()
    with FarmClient(farm.address, honest) as client:
        client.nodes.RegisterNode(pb.RegisterNodeRequest(
            node_id=client.pubkey, name="honest",
            capabilities=pb.NodeCapabilities(devices=["CPU"])), timeout=10)
    status = frameproof(["--coordinator", farm.address, "--keypair",
                         str(farm.creator_keypair), "nodes"])
    assert status == 0, capsys.readouterr().err
    assert str(honest.pubkey())[:8] in capsys.readouterr().out
    no_traceback(farm)


@pytest.mark.parametrize("cost", [float("inf"), 1e300, float("nan"), -1.0, 1_000_001.0])
def test_money_fields_beyond_the_cap_are_invalid_argument(coordinator: tuple[LocalFarm, str],
                                                         cost: float) -> None:
    """SubmitJob's max_cost_usd and PrepareDeposit's amount_usd share one cap."""
    farm, scene = coordinator
    with farm.client() as creator:
        details = refused(creator.jobs.SubmitJob, pb.SubmitJobRequest(
            scene_id=scene, frames="1", max_cost_usd=cost, signed_deposit=b"\x01" * 64))
        assert details.startswith("max_cost_usd ")
        details = refused(creator.jobs.PrepareDeposit, pb.PrepareDepositRequest(amount_usd=cost))
        assert details.startswith("amount_usd")
        # A multi-megabyte field is named, not echoed back (which broke gRPC's metadata).
        details = refused(creator.jobs.SubmitJob, pb.SubmitJobRequest(
            scene_id=scene, name="n" * (3 * 1024 * 1024)))
        assert details == "name is longer than 200 bytes"
    no_traceback(farm)


def test_every_message_of_an_upload_stream_is_bounded(coordinator: tuple[LocalFarm, str]) -> None:
    """Not only the first chunk: a later one naming a path instead of a sha256 is refused by
    the edge, by name, before the blob service sees (and used to echo) it."""
    farm, _ = coordinator
    data = b"a blob in two chunks"
    sha = hashlib.sha256(data).hexdigest()
    chunks = [pb.UploadChunk(blob=pb.BlobRef(sha256=sha, size=len(data)), offset=0,
                             data=data[:5], crc32=zlib.crc32(data[:5])),
              pb.UploadChunk(blob=pb.BlobRef(sha256="../../" + "x" * 100_000), offset=5,
                             data=data[5:], crc32=zlib.crc32(data[5:]))]
    with farm.client() as creator:
        details = refused(lambda request, timeout: creator.blobs.UploadBlob(
            iter(request), timeout=timeout), chunks)
    assert details.startswith("blob.sha256 ")
    no_traceback(farm)


def test_a_verdict_the_store_cannot_apply_is_held_and_shown_to_the_operator(
        farm: LocalFarm) -> None:
    """The verifier's submit path: a check whose records are damaged is quarantined with its
    reason (FAILED_PRECONDITION to the verifier, not UNKNOWN); the coordinator goes on."""
    verifier = Keypair()
    farm.start_coordinator(extra_args=("--no-verifier", "--verifier-pubkey",
                                       str(verifier.pubkey())))
    database = open_engine(farm.database_url)  # the operator's view, SQLite or PostgreSQL
    with farm.client() as creator:
        job = submit_sample(creator, SAMPLE_SCENE, "1")
    node = Keypair()
    with FarmClient(farm.address, node) as client:
        client.nodes.RegisterNode(pb.RegisterNodeRequest(node_id=client.pubkey), timeout=10)
        lease = client.nodes.LeaseTask(pb.LeaseTaskRequest(node_id=client.pubkey),
                                       timeout=10).lease
        image = b"pretend pixels"
        sha = upload_bytes(client.blobs, image)
        client.nodes.CompleteTask(pb.CompleteTaskRequest(
            node_id=client.pubkey, lease_id=lease.lease_id, outputs=[pb.FrameOutput(
                frame=1, image=pb.BlobRef(sha256=sha, size=len(image)), render_seconds=2.0,
                receipt_signature=sign_receipt(node, job.job_id, 1, sha, lease.settings))]),
            timeout=10)
    with FarmClient(farm.address, verifier) as client:
        check = client.verifier.LeaseVerification(pb.LeaseVerificationRequest(
            verifier_id=client.pubkey), timeout=10).task
        assert check.job_id == job.job_id
        with database.begin() as db:  # the damage: a lost task link
            db.execute(text("UPDATE verification SET task_id = 'gone' "
                            "WHERE verification_id = :id"), {"id": check.verification_id})
        with pytest.raises(grpc.RpcError) as caught:
            client.verifier.SubmitVerification(pb.SubmitVerificationRequest(
                verifier_id=client.pubkey, verification_id=check.verification_id, passed=True,
                reason="identical", mode="exact", pixel_sha256="0" * 64), timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "held for the operator" in (caught.value.details() or "")
    doctor = coordinator_cli("doctor", "--data-dir", str(farm.data_dir))
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert any(line.split()[:2] == ["verification", check.verification_id]
               for line in doctor.stdout.splitlines() if line.strip()), doctor.stdout
    assert "DamagedCheck" in doctor.stdout and "in task gone" in doctor.stdout
    with database.begin() as db:  # no verifier re-renders it in vain
        state = db.execute(text("SELECT state FROM verification WHERE verification_id = :id"),
                           {"id": check.verification_id}).scalar_one()
        assert state == "held"
        db.execute(text("UPDATE verification SET task_id = (SELECT task_id FROM task LIMIT 1)"))
    database.dispose()
    released = coordinator_cli("doctor", "--data-dir", str(farm.data_dir), "--release",
                               "verification", check.verification_id)
    assert released.returncode == 0, released.stdout + released.stderr
    with FarmClient(farm.address, verifier) as client:  # repaired and released: it applies
        again = client.verifier.LeaseVerification(pb.LeaseVerificationRequest(
            verifier_id=client.pubkey), timeout=10).task
        assert again.verification_id == check.verification_id
        client.verifier.SubmitVerification(pb.SubmitVerificationRequest(
            verifier_id=client.pubkey, verification_id=check.verification_id, passed=True,
            reason="identical", mode="exact", pixel_sha256="0" * 64), timeout=10)
    with farm.client() as creator:  # everything else still answers
        creator.nodes.ListNodes(pb.ListNodesRequest(), timeout=10)
        creator.jobs.ListJobs(pb.ListJobsRequest(), timeout=10)
    no_traceback(farm)

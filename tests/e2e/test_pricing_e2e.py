"""Prices the network measured, end to end: real coordinator, real nodes, real Blender.

A modified node that reports 50x its render time and a benchmark score of 20 renders beside an
honest node: it is charged and paid within 2x of the honest node per frame, and its history
holds a claim_mismatch event. The estimate's probe is the one submit uses (probed once).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import SAMPLE_SCENE
from farm_helpers import TINY, submit_sample, wait_for, wait_until_done, wait_until_registered
from sqlmodel import Session, select

from coordinator.cli import MACHINE_SCORE_ENV
from coordinator.storage.database import open_database
from coordinator.storage.models import JobQuoteRecord
from coordinator.storage.payment_models import WorkCreditRecord
from frameproof.cli import money, nodes
from frameproof.client import FarmClient
from frameproof.creator import Creator, JobOptions
from frameproof.identity import load_or_create_keypair
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb

CHEATER = Path(__file__).resolve().parents[1] / "cheating_node.py"
FRAMES = "1-8"


def start_inflating_node(farm: LocalFarm, name: str) -> None:
    """A node that lies about its work only: 50x its render time, a score of 20."""
    log = open(farm.root / "logs" / f"{name}.log", "ab")  # noqa: SIM115
    farm.nodes.append(subprocess.Popen(
        [sys.executable, str(CHEATER), "--coordinator", farm.address, "--work-dir",
         str(farm.root / name), "--strategy", "honest", "--name", name, "--threads", "1",
         "--time-factor", "50", "--claim-score", "20"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True))


def node_id_of(farm: LocalFarm, name: str) -> str:
    return str(load_or_create_keypair(farm.root / name / "node-keypair.json").pubkey())


def settled(client: FarmClient, job_id: str) -> pb.Receipts:
    def landed() -> pb.Receipts | None:
        receipts = client.jobs.GetReceipts(pb.ReceiptsRequest(job_id=job_id), timeout=30)
        return receipts if receipts.refund_state == "landed" else None

    return wait_for(landed, timeout=90)


def test_an_inflating_node_is_priced_like_an_honest_one_and_flagged(
    farm: LocalFarm, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(MACHINE_SCORE_ENV)  # this coordinator measures its machine's score
    farm.start_coordinator()
    farm.start_node("honest")
    start_inflating_node(farm, "inflater")
    wait_until_registered(farm, ["honest", "inflater"])
    honest, inflater = node_id_of(farm, "honest"), node_id_of(farm, "inflater")
    with farm.client() as client:
        # `frameproof estimate --json`, then submit: the probe runs once and both use it.
        capsys.readouterr()
        args = argparse.Namespace(scene=SAMPLE_SCENE, frames=FRAMES, tier=3, format="png",
                                  json=True, **TINY)
        assert money.run_estimate(args, client) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["method"] == "full" and shown["probe_frames"] == [1, 5, 8]
        assert 0 < shown["cost_low_usd"] <= shown["cost_usd"] <= shown["cost_high_usd"]
        assert shown["max_cost_usd"] == shown["cost_high_usd"]
        job = submit_sample(client, SAMPLE_SCENE, FRAMES, max_cost_usd=0.0)  # default escrow
        wait_until_done(client, job.job_id, timeout=300)
        receipts = settled(client, job.job_id)
        history = client.nodes.GetNodeStanding(pb.GetNodeStandingRequest(
            node_id=inflater, history_limit=200), timeout=10).history
        honest_history = client.nodes.GetNodeStanding(pb.GetNodeStandingRequest(
            node_id=honest, history_limit=200), timeout=10).history
        capsys.readouterr()
        assert nodes.run(argparse.Namespace(json=True), client) == 0
        listed = {row["node_id"]: row for row in json.loads(capsys.readouterr().out)}

    log = (farm.root / "logs" / "coordinator.log").read_text()
    assert log.count("probe of scene") == 1, "estimate and submit must share one probe"
    assert (farm.data_dir / "machine-benchmark.json").is_file()  # measured by the coordinator

    # The charge per frame, by node: the creator pays about the same whoever rendered.
    charged: dict[str, list[float]] = defaultdict(list)
    for frame in receipts.frames:
        charged[frame.node_id].append(frame.cost_usd)
    assert set(charged) == {honest, inflater}, "both nodes must have rendered frames"
    ratio = statistics.mean(charged[inflater]) / statistics.mean(charged[honest])
    assert 0.5 <= ratio <= 2.0, f"inflater charged {ratio:.2f}x the honest node per frame"
    assert receipts.total_tokens_burned + receipts.refunded == receipts.escrowed
    # Never more than the quote allows: 1.5x the quoted work per frame.
    engine = open_database(farm.database_url)
    with Session(engine) as session:
        quote = session.get(JobQuoteRecord, job.job_id)
        credits = session.exec(select(WorkCreditRecord)
                               .where(WorkCreditRecord.job_id == job.job_id)).all()
    assert quote is not None
    assert quote.ms_per_frame == pytest.approx(shown["reference_seconds_per_frame"] * 1000,
                                               abs=1)
    # What nodes are paid (epoch credits) is the same network-derived work.
    paid: dict[str, list[int]] = defaultdict(list)
    for credit in credits:
        paid[credit.node_id].append(credit.work_ms)
        assert quote.ms_per_frame // 2 <= credit.work_ms <= quote.ms_per_frame * 3 // 2
    paid_ratio = statistics.mean(paid[inflater]) / statistics.mean(paid[honest])
    assert 0.5 <= paid_ratio <= 2.0, f"inflater paid {paid_ratio:.2f}x the honest node"

    # Flagged in its history, with the numbers; its claims moved no money.
    flags = [event for event in history if event.kind == "claim_mismatch"]
    assert len(flags) == 1 and flags[0].job_id == job.job_id
    assert "score 20.00" in flags[0].reason and "reference s" in flags[0].reason
    assert json.loads(flags[0].details_json)["ratio"] > 100
    assert flags[0].reputation_before == flags[0].reputation_after
    # The honest node's claims (a default score of 1.0 on a loaded machine) may be off by a
    # few times, never by the hundreds.
    assert not any(event.kind == "claim_mismatch"
                   and json.loads(event.details_json)["ratio"] > 30 for event in honest_history)
    # Speed as the network measured it: the inflater is not 1000x faster for its claims.
    speeds = {node: listed[node]["measured_speed"] for node in (honest, inflater)}
    assert all(speed and speed > 0 for speed in speeds.values()), speeds
    assert speeds[inflater] < 3 * speeds[honest], speeds
    assert listed[inflater]["benchmark_score"] == 20.0  # the claim is shown, as a hint


def test_a_big_frame_is_priced_from_the_whole_picture_at_reduced_sizes(
        farm: LocalFarm) -> None:
    """A 1280x720 frame is probed as the whole frame at two reduced sizes, not rendered
    whole; its quote is the full size's, extrapolated (pixels are 16x a 320x180 frame's)."""
    farm.start_coordinator()
    with farm.client() as client:
        creator = Creator(client)
        scene = creator.upload_scene(SAMPLE_SCENE)
        big = creator.estimate(scene.scene_id, JobOptions(
            frames="1-2", resolution_percentage=400, samples=16))
        small = creator.estimate(scene.scene_id, JobOptions(
            frames="1-2", resolution_percentage=100, samples=16))
    assert (big.method, list(big.probe_frames)) == ("scaled", [1])
    assert (small.method, list(small.probe_frames)) == ("full", [1, 2])
    assert "at reduced sizes" in money.probe_line(big)
    ratio = big.reference_seconds_per_frame / small.reference_seconds_per_frame
    assert 4 < ratio < 32, f"the 16x frame was quoted {ratio:.1f}x the small one"
    assert big.cost_low_usd < big.cost_usd < big.cost_high_usd

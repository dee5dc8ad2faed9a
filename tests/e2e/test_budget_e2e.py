"""A budget never destroys work, end to end: real coordinator, nodes, Blender and SPL tokens.

A job escrowed at 40% of its estimate pauses, `frameproof topup` resumes it, and it ends
done with every frame rendered once, never charged past what was escrowed; a paused job
that is cancelled gets the rest of its escrow back. Driven through the CLI as a creator
would.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from conftest import SAMPLE_SCENE
from farm_helpers import (
    TINY,
    coordinator_cli,
    settled_receipts,
    wait_for,
    wait_until_registered,
)

from frameproof.cli.main import main as frameproof
from frameproof.client import FarmClient
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb

RENDER = ("--samples", str(TINY["samples"]), "--resolution-percentage",
          str(TINY["resolution_percentage"]))


def fp(farm: LocalFarm, *args: str, keypair: Path | None = None) -> int:
    return frameproof(["--coordinator", farm.address, "--keypair",
                       str(keypair or farm.creator_keypair), *args])


def run_json(farm: LocalFarm, capsys, *args: str) -> dict:
    status = fp(farm, *args, "--json")
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads(captured.out)


def within_escrow(client: FarmClient, job_id: str) -> pb.Receipts:
    """The invariant checked at every step: burned never exceeds what was escrowed."""
    receipts = client.jobs.GetReceipts(pb.ReceiptsRequest(job_id=job_id), timeout=30)
    assert receipts.total_tokens_burned <= receipts.escrowed, receipts
    return receipts


def submit_at_40_percent(farm: LocalFarm, capsys, frames: str) -> tuple[dict, float]:
    estimate = run_json(farm, capsys, "estimate", str(SAMPLE_SCENE), "--frames", frames,
                        *RENDER)
    budget = round(0.4 * estimate["cost_usd"], 6)
    job = run_json(farm, capsys, "submit", str(SAMPLE_SCENE), "--frames", frames, *RENDER,
                   "--max-cost", str(budget))
    return job, estimate["cost_usd"]


def wait_paused(farm: LocalFarm, capsys, client: FarmClient, job_id: str,
                done_too: bool = False) -> dict:
    """Poll `status --json` until the job pauses (or is done), checking the escrow each time."""
    def paused() -> dict | None:
        within_escrow(client, job_id)
        status = run_json(farm, capsys, "status", job_id)
        ended = ("done",) if done_too else ()
        assert status["state"] not in ("done", "failed", "cancelled") or status["state"] in (
            ended), status
        return status if status["state"] in ("paused", *ended) else None

    return wait_for(paused, timeout=240, interval=0.5)


def suggested_usd(status: dict) -> str:
    match = re.search(r"--usd ([0-9.]+)`$", status["paused_reason"])
    assert match, status["paused_reason"]
    return match[1]


def test_a_job_escrowed_at_40_percent_pauses_and_a_topup_finishes_it(farm: LocalFarm, capsys,
                                                                       tmp_path: Path):
    farm.start_coordinator()
    farm.start_node("node-a")
    farm.start_node("node-b")
    wait_until_registered(farm, ["node-a", "node-b"])
    job, estimate = submit_at_40_percent(farm, capsys, "1-4")
    job_id = job["job_id"]
    with farm.client() as client:
        status = wait_paused(farm, capsys, client, job_id)
        reason = status["paused_reason"]
        assert reason.startswith("paused: budget used up ($"), reason
        assert f"frameproof topup {job_id} --usd " in reason
        assert abs(status["escrowed_usd"] - 0.4 * estimate) < 2e-6, (status, estimate)
        assert status["charged_usd"] <= status["escrowed_usd"]
        assert status["frames"]["queued"] > 0, "paused before the work ran out"
        # Paused means paused: once the frames in flight are in, nothing else is leased.
        def settled_in() -> dict | None:
            now = run_json(farm, capsys, "status", job_id)
            frames = now["frames"]
            quiet = now["state"] == "paused" and frames["rendering"] + frames["verifying"] == 0
            return now if quiet else None

        held = wait_for(settled_in, timeout=240, interval=0.5)
        time.sleep(5)
        later = run_json(farm, capsys, "status", job_id)
        assert later["state"] == "paused" and later["frames"] == held["frames"]
        within_escrow(client, job_id)
        assert fp(farm, "status", job_id) == 0
        assert "frameproof topup" in capsys.readouterr().err

        stranger = tmp_path / "stranger.json"
        assert fp(farm, "topup", job_id, "--usd", "1", keypair=stranger) == 1
        assert "another creator" in capsys.readouterr().err
        assert fp(farm, "topup", job_id, "--usd", "0") == 2

        # The creator tops up what the reason suggests; the job resumes by itself. Should a
        # later frame cost more than the ones before, it pauses again and says so.
        topups: list[dict] = []
        current = status
        while current["state"] == "paused":
            assert len(topups) < 3, f"still paused after {len(topups)} top-ups: {current}"
            escrowed_before = current["escrowed_usd"]
            amount = suggested_usd(current)
            topup = run_json(farm, capsys, "topup", job_id, "--usd", amount)
            assert topup["job_id"] == job_id and topup["topup_usd"] == float(amount)
            assert topup["topup_tokens"] > 0 and topup["deposit_signature"]
            assert abs(topup["escrowed_usd"] - escrowed_before - float(amount)) < 2e-6
            topups.append(topup)
            time.sleep(1)
            current = wait_paused(farm, capsys, client, job_id, done_too=True)

        assert fp(farm, "watch", job_id) == 0
        capsys.readouterr()
        done = run_json(farm, capsys, "status", job_id)
        assert done["state"] == "done" and done["frames"]["done"] == 4
        receipts = settled_receipts(client, job_id)
    frames = json.loads(_out(farm, capsys, "frames", job_id))
    assert [row["frame"] for row in frames] == [1, 2, 3, 4]
    assert all(row["state"] == "done" for row in frames)
    assert all(row["attempts"] == 0 for row in frames), "no frame was rendered twice"
    assert sorted(f.frame for f in receipts.frames) == [1, 2, 3, 4], "each charged once"
    assert receipts.total_tokens_burned + receipts.refunded == receipts.escrowed
    assert receipts.escrowed > sum(t["topup_tokens"] for t in topups), "added to the first"
    assert fp(farm, "download", job_id, "--out", str(tmp_path / "frames")) == 0
    # Named as Blender names them from the scene's output path (//render/frame_####).
    assert len(list((tmp_path / "frames").rglob("frame_*.png"))) == 4

    assert fp(farm, "topup", job_id, "--usd", "1") == 1  # finished: nothing to top up
    assert "nothing to top up" in capsys.readouterr().err
    check = coordinator_cli("ledger", "check", "--data-dir", str(farm.data_dir))
    assert check.returncode == 0 and "MISMATCH" not in check.stdout, check.stdout + check.stderr


def test_cancelling_a_paused_job_refunds_what_is_left(farm: LocalFarm, capsys):
    farm.start_coordinator()
    farm.start_node("node")
    wait_until_registered(farm, ["node"])
    job, _ = submit_at_40_percent(farm, capsys, "1-3")
    job_id = job["job_id"]
    with farm.client() as client:
        wait_paused(farm, capsys, client, job_id)
        assert fp(farm, "cancel", job_id) == 0
        capsys.readouterr()
        receipts = settled_receipts(client, job_id)
        wallet = client.jobs.GetWallet(pb.WalletRequest(), timeout=30)
    assert receipts.state == "settled"
    assert receipts.refunded == receipts.escrowed - receipts.total_tokens_burned > 0
    assert wallet.escrow == 0
    frames = json.loads(_out(farm, capsys, "frames", job_id))
    paid = {f.frame for f in receipts.frames}
    for row in frames:  # a frame is either paid (served) or never served
        assert (row["state"] == "done") == (row["frame"] in paid), row
    check = coordinator_cli("ledger", "check", "--data-dir", str(farm.data_dir))
    assert check.returncode == 0 and "MISMATCH" not in check.stdout, check.stdout + check.stderr


def _out(farm: LocalFarm, capsys, *args: str) -> str:
    assert fp(farm, *args, "--json") == 0
    return capsys.readouterr().out

"""A creator steers a job on a real farm (real Blender, gRPC, SQLite): pause, resume,
requeue and priority by a job id prefix, and the tables read at 80 columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import grpc
from conftest import ROOT, SAMPLE_SCENE
from farm_helpers import TINY, wait_for, wait_until_registered

from frameproof.cli.main import main as frameproof
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb


def fp(farm: LocalFarm, *args: str) -> int:
    return frameproof([*args, "--coordinator", farm.address, "--keypair",
                       str(farm.creator_keypair)])


def as_json(farm: LocalFarm, capsys, *args: str) -> dict:
    status = fp(farm, *args, "--json")
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads(captured.out)


def at_80_columns(farm: LocalFarm, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "frameproof.cli.main", *args, "--coordinator", farm.address,
         "--keypair", str(farm.creator_keypair)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    return result.stdout


def test_pause_resume_requeue_as_a_creator_would(farm: LocalFarm, capsys):
    farm.start_coordinator()
    job = as_json(farm, capsys, "submit", str(SAMPLE_SCENE), "--frames", "1-3",
                  "--samples", str(TINY["samples"]), "--resolution-percentage",
                  str(TINY["resolution_percentage"]), "--max-cost", "1")
    job_id, prefix = job["job_id"], job["job_id"][:6]

    paused = as_json(farm, capsys, "pause", prefix)  # a unique prefix names the job
    assert paused["job_id"] == job_id and paused["paused_by_creator"]
    farm.start_node("node")
    wait_until_registered(farm, ["node"])
    assert (farm.root / "node" / "benchmark.json").exists(), "the first start saves a score"
    time.sleep(4)  # several lease polls of the node
    held = as_json(farm, capsys, "status", prefix)
    assert held["frames"]["queued"] == 3, "a paused job hands out no frame"
    assert fp(farm, "status", prefix) == 0
    assert "paused by you" in capsys.readouterr().out

    assert fp(farm, "resume", prefix) == 0
    capsys.readouterr()

    def started() -> dict | None:
        current = as_json(farm, capsys, "status", job_id)
        busy = current["frames"]["rendering"] + current["frames"]["verifying"]
        return current if busy or current["frames"]["done"] else None

    wait_for(started, timeout=120, interval=0.1)
    assert fp(farm, "pause", job_id) == 0  # pause again while a frame is in flight
    capsys.readouterr()

    def settled_in_flight() -> dict | None:
        current = as_json(farm, capsys, "status", job_id)
        frames = current["frames"]
        return current if not frames["rendering"] and not frames["verifying"] else None

    after = wait_for(settled_in_flight, timeout=180)["frames"]
    # The frame in flight finished and was kept; the rest wait, nothing is lost.
    assert after["done"] >= 1 and after["queued"] >= 1
    assert after["done"] + after["queued"] == 3

    def charged() -> list[int] | None:  # approved frames are charged within a second or so
        rows = as_json(farm, capsys, "frames", job_id)
        done = [row["frame"] for row in rows if row["state"] == "done"]
        return done if len(done) == after["done"] else None

    done = wait_for(charged, timeout=60)

    requeued = as_json(farm, capsys, "requeue", prefix, "--frames", str(done[0]))
    assert requeued["frames"]["queued"] == after["queued"] + 1
    assert fp(farm, "requeue", prefix, "--frames", "3-1") == 2  # a typo: refused locally
    assert "--frames" in capsys.readouterr().err
    assert as_json(farm, capsys, "priority", prefix, "5")["priority"] == 5

    table = at_80_columns(farm, "frames", prefix)
    assert len([line for line in table.splitlines() if line.strip()]) == 4  # header + 3 rows
    listing = at_80_columns(farm, "jobs")
    assert job_id in listing, "the full id is never cut"

    assert fp(farm, "resume", prefix) == 0
    assert fp(farm, "watch", prefix) == 0
    capsys.readouterr()
    rows = as_json(farm, capsys, "frames", job_id)
    assert [row["state"] for row in rows] == ["done"] * 3
    requeued_row = next(row for row in rows if row["frame"] == done[0])
    assert requeued_row["sha256"], "the frame was rendered and approved again"

    # Blender's output for a frame, from its node, without the node's folders; creator only.
    assert fp(farm, "log", prefix, "2") == 0
    captured = capsys.readouterr()
    assert "Saved:" in captured.out and "rendered by node" in captured.err
    assert str(farm.root) not in captured.out, "the node's paths are scrubbed"
    with farm.client(farm.root / "other-creator.json") as other:
        try:
            other.jobs.GetFrameLog(pb.FrameLogRequest(job_id=job_id, frame=2), timeout=30)
            raise AssertionError("another creator read the log")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert fp(farm, "log", prefix, "99") == 1
    assert "no log for frame 99" in capsys.readouterr().err

    def job_settled() -> bool:
        code = fp(farm, "requeue", job_id, "--frames", "1")
        err = capsys.readouterr().err
        return code == 1 and "settled" in err and len(err.strip().splitlines()) == 1

    wait_for(job_settled, timeout=60, interval=1.0)
    # One money unit in text: USD, the tokens in brackets.
    capsys.readouterr()
    assert fp(farm, "receipts", prefix) == 0
    total = capsys.readouterr().out.strip().splitlines()[-1]
    assert total.startswith("total $") and " tokens) burned of $" in total, total
    assert fp(farm, "wallet") == 0
    assert "balance $" in capsys.readouterr().out

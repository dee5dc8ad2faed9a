"""A creator steers a job on a real farm (real Blender, gRPC, SQLite): pause, resume,
requeue and priority by a job id prefix, and the tables read at 80 columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from conftest import ROOT, SAMPLE_SCENE
from farm_helpers import TINY, wait_for, wait_until_registered

from frameproof.cli.main import main as frameproof
from frameproof.identity import load_or_create_keypair
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


def start_verifier(farm: LocalFarm, keypair: Path) -> None:
    """The farm's verifier as a process of its own, started when the test wants checks to
    run (stopped with the farm's nodes)."""
    log = open(farm.root / "logs" / "verifier.log", "ab")  # noqa: SIM115
    farm.nodes.append(subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "--coordinator", farm.address, "--work-dir",
         str(farm.root / "verifier"), "--keypair", str(keypair), "--threads", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}))


def test_pause_resume_requeue_as_a_creator_would(farm: LocalFarm, capsys, tmp_path,
                                                 monkeypatch):
    # No verifier until the pause below, and a node without a verified frame yet holds one
    # frame of a job (--new-node-frames-per-job 1; one verified frame makes the bonded node's
    # record): frame 1 is in flight (rendered, waiting for its check) and frames 2 and 3 are
    # queued when the creator pauses, however fast or slow this machine is.
    verifier_key = farm.root / "verifier-keypair.json"
    verifier = str(load_or_create_keypair(verifier_key).pubkey())
    farm.start_coordinator(extra_args=("--no-verifier", "--verifier-pubkey", verifier,
                                       "--new-node-frames-per-job", "1", "--proven-after", "1"))
    options = ["--frames", "1-3", "--samples", str(TINY["samples"]),
               "--resolution-percentage", str(TINY["resolution_percentage"]), "--max-cost", "1"]
    # estimate takes submit's options and prices the same job: the same quote, field by field
    quote = as_json(farm, capsys, "estimate", str(SAMPLE_SCENE), *options)
    job = as_json(farm, capsys, "submit", str(SAMPLE_SCENE), *options)
    assert job["estimate"] == quote
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
    in_flight = as_json(farm, capsys, "pause", job_id)["frames"]  # pause again, a frame in flight
    assert (in_flight["rendering"] + in_flight["verifying"], in_flight["queued"]) == (1, 2)
    start_verifier(farm, verifier_key)

    def settled_in_flight() -> dict | None:
        current = as_json(farm, capsys, "status", job_id)
        frames = current["frames"]
        return current if not frames["rendering"] and not frames["verifying"] else None

    after = wait_for(settled_in_flight, timeout=180)["frames"]
    # The frame in flight finished and was kept; the rest wait, nothing is lost.
    assert (after["done"], after["queued"]) == (1, 2)

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
    # A finished job stays done: cancel refuses in one line (exit 1) and changes nothing.
    assert fp(farm, "cancel", prefix) == 1
    refused = capsys.readouterr().err.strip()
    assert "already done: nothing to cancel" in refused and len(refused.splitlines()) == 1
    assert as_json(farm, capsys, "status", job_id)["state"] == "done"
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

    def job_settled() -> dict | None:
        receipts = as_json(farm, capsys, "receipts", job_id)
        return receipts if receipts["state"] == "settled" else None

    settled = wait_for(job_settled, timeout=60, interval=1.0)
    # Requeue after settlement: the escrow is closed, so the frame renders as a new job on the
    # same scene and settings, escrowed and paid by the creator like any submit; the settled
    # job's charges and refund stay as they were.
    follow = as_json(farm, capsys, "requeue", prefix, "--frames", "2", "--max-cost", "0.5")
    assert follow["requeue_of"] == job_id and follow["job_id"] != job_id
    assert follow["frames_spec"] == "2" and follow["settings"] == job["settings"]
    assert fp(farm, "requeue", prefix, "--frames", "9") == 1  # not a frame of the job
    assert "not part of job" in capsys.readouterr().err

    # watch --on-done runs the creator's command with the job in its environment, and
    # --notify calls the desktop's notifier (here a stand-in notify-send on PATH).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    notifier = bin_dir / "notify-send"
    notifier.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path / 'notified'}\n")
    notifier.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    hook_out = tmp_path / "hook.env"
    assert fp(farm, "watch", follow["job_id"][:8], "--notify",
              "--on-done", f"env | grep ^FRAMEPROOF_ | sort > {hook_out}") == 0
    seen = dict(line.split("=", 1) for line in hook_out.read_text().splitlines())
    assert seen["FRAMEPROOF_JOB_ID"] == follow["job_id"]
    assert seen["FRAMEPROOF_JOB_STATE"] == "done"
    assert (seen["FRAMEPROOF_FRAMES_DONE"], seen["FRAMEPROOF_FRAMES_TOTAL"]) == ("1", "1")
    notified = (tmp_path / "notified").read_text()
    assert "done" in notified and "1/1 frames done" in notified
    capsys.readouterr()
    assert fp(farm, "watch", follow["job_id"], "--on-done", "exit 7") == 0
    assert "--on-done exited with status 7" in capsys.readouterr().err

    again = as_json(farm, capsys, "receipts", job_id)
    for key in ("frames", "total_tokens_burned", "escrowed", "refund", "state"):
        assert again[key] == settled[key], f"the settled job's {key} changed"
    assert len(as_json(farm, capsys, "receipts", follow["job_id"])["frames"]) == 1

    # One money unit in text: USD, the tokens in brackets.
    capsys.readouterr()
    assert fp(farm, "receipts", prefix) == 0
    total = capsys.readouterr().out.strip().splitlines()[-1]
    assert total.startswith("total $") and " tokens) burned of $" in total, total
    assert fp(farm, "wallet") == 0
    assert "balance $" in capsys.readouterr().out

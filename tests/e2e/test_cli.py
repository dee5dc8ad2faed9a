"""The creator's and operator's commands, as a script would drive them."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import SAMPLE_SCENE
from farm_helpers import TINY, wait_for, wait_until_registered

from frameproof.cli.main import main as frameproof
from frameproof.localfarm import LocalFarm


def fp(farm: LocalFarm, *args: str) -> int:
    """Run the CLI as the farm's test creator."""
    return frameproof(["--coordinator", farm.address, "--keypair", str(farm.creator_keypair),
                       *args])


TINY_ARGS = ("--samples", str(TINY["samples"]), "--resolution-percentage",
             str(TINY["resolution_percentage"]))


def run_json(farm: LocalFarm, capsys, *args: str) -> object:
    status = fp(farm, *args, "--json")
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads(captured.out)


def test_submit_watch_status_download_as_a_creator_would(farm: LocalFarm, tmp_path, capsys):
    farm.start_coordinator()
    farm.start_node("node")
    wait_until_registered(farm, ["node"])
    job = run_json(farm, capsys, "submit", str(SAMPLE_SCENE), "--frames", "1-3,7", "--chunk",
                   "2", "--samples", str(TINY["samples"]), "--resolution-percentage",
                   str(TINY["resolution_percentage"]), "--max-cost", "1")
    assert job["frames"]["total"] == 4 and job["frames_spec"] == "1-3,7"
    assert job["state"] in {"queued", "rendering"}

    assert fp(farm, "watch", job["job_id"]) == 0
    assert "4/4 frames done" in capsys.readouterr().out

    status = run_json(farm, capsys, "status", job["job_id"])
    assert status["state"] == "done"
    assert status["frames"] == {"total": 4, "done": 4, "failed": 0, "queued": 0,
                                "rendering": 0, "cancelled": 0, "verifying": 0}
    listed = run_json(farm, capsys, "jobs")
    assert [entry["job_id"] for entry in listed] == [job["job_id"]]
    assert fp(farm, "jobs", "--limit", "0") == 2
    assert "--limit" in capsys.readouterr().err
    frames = run_json(farm, capsys, "frames", job["job_id"])
    assert [row["frame"] for row in frames] == [1, 2, 3, 7]
    assert all(row["state"] == "done" and row["node_id"] for row in frames)

    out = tmp_path / "frames"
    assert fp(farm, "download", job["job_id"], "--out", str(out)) == 0
    # Named as Blender names them from the scene's output path (//render/frame_).
    assert "output path //render/frame_" in capsys.readouterr().err
    names = sorted(str(path.relative_to(out)) for path in out.rglob("*.png"))
    assert names == ["render/frame_0001.png", "render/frame_0002.png", "render/frame_0003.png",
                     "render/frame_0007.png"]
    # Interrupted download: a truncated partial and a missing frame are both completed.
    render = out / "render"
    whole = (render / "frame_0002.png").read_bytes()
    (render / "frame_0002.png").unlink()
    (render / "frame_0002.png.part").write_bytes(whole[: len(whole) // 2])
    (render / "frame_0007.png").unlink()
    assert fp(farm, "download", job["job_id"], "--out", str(out)) == 0
    assert (render / "frame_0002.png").read_bytes() == whole
    assert (render / "frame_0007.png").exists()
    assert not list(out.rglob("*.part"))

    # An MP4 preview of the approved frames, encoded by imageio-ffmpeg's FFmpeg.
    import imageio_ffmpeg

    movie = tmp_path / "preview.mp4"
    assert fp(farm, "preview", job["job_id"][:8], "--out", str(movie), "--fps", "12") == 0
    assert "4 approved frames at 12 fps" in capsys.readouterr().out
    assert imageio_ffmpeg.count_frames_and_secs(str(movie))[0] == 4


def test_cancel_stops_a_job(farm: LocalFarm, capsys):
    farm.start_coordinator()  # no node: nothing will render
    # Tiny frames: the coordinator's probe renders three of them before the job exists.
    job = run_json(farm, capsys, "submit", str(SAMPLE_SCENE), "--frames", "1-5", *TINY_ARGS)
    assert fp(farm, "cancel", job["job_id"]) == 0
    capsys.readouterr()
    status = run_json(farm, capsys, "status", job["job_id"])
    assert status["state"] == "cancelled" and status["frames"]["cancelled"] == 5
    assert fp(farm, "watch", job["job_id"]) == 1


def test_unreachable_coordinator_is_explained(capsys, tmp_path):
    assert frameproof(["--coordinator", "127.0.0.1:1", "--keypair", str(tmp_path / "k.json"),
                       "jobs"]) == 3  # the documented status for an unreachable coordinator
    assert "cannot reach the coordinator at 127.0.0.1:1" in capsys.readouterr().err


def test_unknown_job_is_explained(farm: LocalFarm, capsys):
    farm.start_coordinator()
    assert fp(farm, "status", "0123456789abcdef") == 1
    assert "no job 0123456789abcdef" in capsys.readouterr().err


def test_render_node_info_prints_its_capabilities():
    result = subprocess.run([sys.executable, "-m", "render_node.cli", "info"],
                            capture_output=True, text=True, timeout=120, check=True)
    info = json.loads(result.stdout)
    assert info["blender_version"].startswith("5.0")
    assert info["threads"] >= 1 and int(info["memory_bytes"]) > 0
    assert "CPU" in info["devices"] and "CYCLES" in info["engines"]


def test_money_commands_as_a_creator_would(farm: LocalFarm, capsys):
    farm.start_coordinator()
    farm.start_node("node")
    estimate = run_json(farm, capsys, "estimate", str(SAMPLE_SCENE), "--frames", "1-2",
                        "--samples", str(TINY["samples"]), "--resolution-percentage",
                        str(TINY["resolution_percentage"]))
    assert estimate["frames"] == 2 and 0 < estimate["cost_usd"] <= estimate["max_cost_usd"]
    assert estimate["cost_low_usd"] <= estimate["cost_usd"] <= estimate["cost_high_usd"]
    assert estimate["max_cost_usd"] == estimate["cost_high_usd"]  # the default escrow
    before = run_json(farm, capsys, "wallet")
    assert before["pubkey"] and before["balance"] == 100 * 10**6 and before["escrow"] == 0
    assert fp(farm, "wallet", "airdrop", "5") == 0
    capsys.readouterr()
    after = run_json(farm, capsys, "wallet")
    assert after["balance"] == before["balance"] + 5 * 10**6
    job = run_json(farm, capsys, "submit", str(SAMPLE_SCENE), "--frames", "1-2", "--samples",
                   str(TINY["samples"]), "--resolution-percentage",
                   str(TINY["resolution_percentage"]), "--max-cost", "0.5")
    assert job["estimate"] == estimate  # the same probe and quote as `frameproof estimate`
    assert fp(farm, "watch", job["job_id"]) == 0
    capsys.readouterr()

    def settled() -> dict | None:
        receipts = run_json(farm, capsys, "receipts", job["job_id"])
        return receipts if receipts["refund_state"] == "landed" else None

    receipts = wait_for(settled, timeout=60)
    assert [row["frame"] for row in receipts["frames"]] == [1, 2]
    assert all(row["tokens_burned"] > 0 and row["signature"] for row in receipts["frames"])
    assert receipts["total_tokens_burned"] + receipts["refund"] == receipts["escrowed"]
    final = run_json(farm, capsys, "wallet")
    assert final["balance"] == after["balance"] - receipts["total_tokens_burned"]

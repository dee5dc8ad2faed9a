"""The walking spine end to end: real coordinator and node processes, real Blender renders."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import SAMPLE_SCENE
from farm_helpers import (
    frames,
    render_reference,
    submit_sample,
    wait_for,
    wait_until_done,
    wait_until_registered,
)

from frameproof.cli.download import download_frames
from frameproof.cli.jobs import timeline_json, timeline_line
from frameproof.client import FarmClient
from frameproof.creator import Creator
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb
from verifier.compare import load_image, ssim


def test_two_nodes_render_a_job_that_matches_local_blender(farm: LocalFarm, tmp_path: Path):
    farm.start_coordinator()
    farm.start_node("node-a")
    farm.start_node("node-b")
    wait_until_registered(farm, ["node-a", "node-b"])
    with farm.client() as client:
        job = submit_sample(client, SAMPLE_SCENE, "1-6")
        assert job.frames.total == 6
        wait_until_done(client, job.job_id)
        download = download_frames(client, job.job_id, tmp_path / "download")
        files, missing = download.files, download.not_ready
        rendered_by = {frame.node_id for frame in frames(client, job.job_id)}
        timeline = wait_for(lambda: settled_timeline(client, job.job_id), timeout=60)

    assert missing == 0
    assert [path.name for path in files] == [f"frame_{n:04d}.png" for n in range(1, 7)]  # as saved
    assert len(rendered_by) == 2, "both nodes should have rendered frames"
    references = render_reference(SAMPLE_SCENE, list(range(1, 7)), tmp_path / "reference")
    for number, path in zip(range(1, 7), files, strict=True):
        score = ssim(load_image(path), load_image(references[number]))
        assert score >= 0.99, f"frame {number}: SSIM {score:.4f} against a local render"
    # Frames differ from each other (the cube turns): a wrong-frame bug would show here.
    assert ssim(load_image(files[0]), load_image(files[5])) < 0.99
    # Where the job's time went, as `frameproof status --json` shows it.
    phases = {phase.phase: phase for phase in timeline.phases}
    assert list(phases) == ["pack", "upload", "estimate", "inspection", "quote", "escrow",
                            "queue_wait", "render", "result_upload", "verification",
                            "approval", "settlement"]
    assert all(p.seconds >= 0 and p.ended_at >= p.started_at > 0 for p in phases.values())
    assert phases["render"].seconds > 0, "the nodes' render seconds"
    assert timeline.submitted_at == phases["pack"].started_at
    assert phases["pack"].ended_at <= phases["upload"].started_at <= phases["queue_wait"].ended_at
    assert phases["queue_wait"].ended_at <= timeline.first_approved_at <= timeline.done_at
    assert phases["settlement"].ended_at >= timeline.done_at
    shown = timeline_json(timeline)
    assert shown["first_approved_after_s"] > 0
    assert [p["phase"] for p in shown["phases"]] == list(phases)
    assert "first frame approved" in timeline_line(timeline)


def settled_timeline(client: FarmClient, job_id: str) -> pb.JobTimeline | None:
    timeline = Creator(client).timeline(job_id)
    return timeline if any(p.phase == "settlement" for p in timeline.phases) else None


def test_a_node_killed_mid_frame_loses_its_lease_and_another_node_finishes(
    farm: LocalFarm, tmp_path: Path
):
    farm.start_coordinator()
    victim = farm.start_node("victim")
    wait_until_registered(farm, ["victim"])
    with farm.client() as client:
        # Enough samples that a frame takes a few seconds: the kill lands mid-render.
        job = submit_sample(client, SAMPLE_SCENE, "1-2", samples=512, resolution_percentage=50)

        def rendering() -> list[pb.Frame]:
            return [f for f in frames(client, job.job_id) if f.state == pb.FRAME_STATE_RENDERING]

        wait_for(rendering, timeout=60, interval=0.05)
        os.killpg(victim.pid, signal.SIGKILL)  # the node and its Blender child
        victim.wait()
        farm.start_node("rescuer")
        wait_until_done(client, job.job_id, timeout=240)
        final = frames(client, job.job_id)

    assert all(frame.state == pb.FRAME_STATE_DONE for frame in final)
    assert {frame.node_id for frame in final} != set(), "frames carry their node"
    assert any(frame.attempts >= 1 for frame in final), "the killed lease was counted"


def test_coordinator_killed_mid_job_resumes_every_frame(farm: LocalFarm, tmp_path: Path):
    farm.start_coordinator()
    farm.start_node("node-a")
    farm.start_node("node-b")
    wait_until_registered(farm, ["node-a", "node-b"])
    with farm.client() as client:
        job = submit_sample(client, SAMPLE_SCENE, "1-8", samples=64)

        def some_done() -> bool:
            done = [f for f in frames(client, job.job_id) if f.state == pb.FRAME_STATE_DONE]
            return 1 <= len(done) < 8

        wait_for(some_done, timeout=120, interval=0.05)
    port = farm.port
    farm.kill_coordinator()
    farm.start_coordinator(port=port)
    with farm.client() as client:
        wait_until_done(client, job.job_id, timeout=240)
        final = frames(client, job.job_id)
        download = download_frames(client, job.job_id, tmp_path / "download")
        files, missing = download.files, download.not_ready
    assert [frame.frame for frame in final] == list(range(1, 9))
    assert all(frame.state == pb.FRAME_STATE_DONE and frame.image.sha256 for frame in final)
    assert missing == 0 and len(files) == 8


def test_sigterm_stops_the_coordinator_cleanly_and_a_restart_resumes(farm: LocalFarm):
    farm.start_coordinator()
    with farm.client() as client:
        job = submit_sample(client, SAMPLE_SCENE, "1-3")
    assert farm.coordinator is not None
    farm.coordinator.send_signal(signal.SIGTERM)
    assert farm.coordinator.wait(timeout=30) == 0
    farm.start_coordinator()
    farm.start_node("late-node")
    with farm.client() as client:
        wait_until_done(client, job.job_id)
        assert len(frames(client, job.job_id)) == 3

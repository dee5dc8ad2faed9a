"""A scene renders on the farm as saved (seed 7, adaptive sampling, denoiser), end to end:
real coordinator, verifier, honest and cheating nodes, real Blender. Issue 11's "done when".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from farm_helpers import frames, submit_sample, wait_for, wait_until_done, wait_until_registered
from saved_scenes import build_saved_scene, render_as_saved
from test_proof_of_render import node_id_of, standing, start_cheater

from frameproof.cli import submit
from frameproof.cli.download import download_frames
from frameproof.cli.main import main as frameproof
from frameproof.client import FarmClient
from frameproof.creator import CoordinatorRefused
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb
from verifier.compare import load_image, ssim

# Six frames: each node's share stays within a new node's 4 frames per job, and the cheater
# still delivers its two leases before the honest node joins (eight cost a third more).
FRAMES = list(range(1, 7))
RANGE = f"1-{FRAMES[-1]}"
# New nodes may take every frame of a job: otherwise the honest node, having rendered its
# first four, idles until the verifier has proven them before it may re-render the cheater's
# rejected frames (the cap itself is tests/e2e/test_sybil.py's subject, not this file's).
UNCAPPED = ("--new-node-frames-per-job", str(len(FRAMES)))
# Issue 11's acceptance job, as a creator submits it: 8 frames on two new nodes (4 each, a
# new node's share), default budget.
ACCEPTANCE = list(range(1, 9))
AS_SAVED = {"samples": 0, "resolution_percentage": 0}  # no overrides: the scene's own
BUDGET = {"max_cost_usd": 0.0}  # the default: the top of the measured estimate's range


def decode(path: Path) -> np.ndarray:
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None, path
    return pixels


def assert_frames_as_saved(files: list[Path], blend: Path, out: Path,
                           numbers: list[int] = FRAMES) -> None:
    """Every delivered frame is the creator's own render of the file as saved: same build and
    device class here, so bit-identical (and SSIM ≥ 0.99, the cross-device promise)."""
    references = render_as_saved(blend, out, numbers)
    assert [p.name for p in files] == [f"frame_{n:04d}.png" for n in numbers]  # as saved
    for number, path in zip(numbers, files, strict=True):
        score = ssim(load_image(path), load_image(references[number]))
        assert score >= 0.99, f"frame {number}: SSIM {score:.4f} against the creator's render"
        assert np.array_equal(decode(path), decode(references[number])), f"frame {number}"


def wait_until_verified(client: FarmClient, job_id: str) -> list[pb.Frame]:
    def verified() -> list[pb.Frame] | None:
        final = frames(client, job_id)
        return final if all(f.verification.startswith("passed") for f in final) else None

    return wait_for(verified, timeout=300)


def test_two_nodes_render_the_scene_as_saved(farm: LocalFarm, tmp_path: Path) -> None:
    blend = build_saved_scene(tmp_path / "scene" / "saved.blend", size=(160, 90), samples=16,
                              seed=7, adaptive=True, adaptive_threshold=0.01, dither=1.0)
    farm.start_coordinator()
    farm.start_node("node-a")
    farm.start_node("node-b")
    wait_until_registered(farm, ["node-a", "node-b"])
    with farm.client() as client:
        job = submit_sample(client, blend, f"1-{ACCEPTANCE[-1]}", **AS_SAVED, **BUDGET)
        assert (job.scene.seed, job.scene.adaptive_sampling) == (7, True)
        assert job.scene.adaptive_threshold == pytest.approx(0.01)
        assert not job.settings.HasField("seed")  # no override: the scene's own seed renders
        wait_until_done(client, job.job_id, timeout=300)
        final = wait_until_verified(client, job.job_id)
        download = download_frames(client, job.job_id, tmp_path / "download")
        files, missing = download.files, download.not_ready
    assert missing == 0 and len({f.node_id for f in final}) == 2
    assert_frames_as_saved(files, blend, tmp_path / "reference", ACCEPTANCE)


def test_a_saved_render_region_comes_back_as_the_creators_blender_renders_it(
        farm: LocalFarm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Render Region with Crop to Render Region, dither on (Blender's default): each frame is
    the cropped region, bit-identical to the creator's render, and checked by the verifier
    (whole: the crop's dither is hashed by position in the cropped file)."""
    blend = build_saved_scene(tmp_path / "scene" / "region.blend", size=(160, 90), samples=8,
                              dither=1.0, extra={
                                  "render.use_border": True, "render.use_crop_to_border": True,
                                  "render.border_min_x": 0.13, "render.border_max_x": 0.911,
                                  "render.border_min_y": 0.07, "render.border_max_y": 0.59})
    numbers = [1, 2, 3, 4]
    farm.start_coordinator()
    farm.start_node("node-a")
    wait_until_registered(farm, ["node-a"])
    with farm.client() as client:
        job = submit_sample(client, blend, "1-4", **AS_SAVED, **BUDGET)
        assert job.settings.HasField("region") and job.settings.region.crop
        wait_until_done(client, job.job_id, timeout=300)
        wait_until_verified(client, job.job_id)
        download = download_frames(client, job.job_id, tmp_path / "download")
    assert download.not_ready == 0
    assert all(decode(path).shape[:2] == (47, 125) for path in download.files)  # the region
    creator = ["--coordinator", farm.address, "--keypair", str(farm.creator_keypair)]
    capsys.readouterr()
    assert frameproof([*creator, "status", job.job_id]) == 0
    said = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "the scene's Render Region: 125x47 pixels, cropped" in said
    assert frameproof([*creator, "status", job.job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["region"]["crop"] is True
    assert_frames_as_saved(download.files, blend, tmp_path / "reference", numbers)


def test_a_render_region_without_a_pixel_is_refused_with_its_reason(
        farm: LocalFarm, tmp_path: Path) -> None:
    """Blender would refuse to render it ("image too small"): the coordinator says why at
    submit instead of queueing frames no node can render."""
    blend = build_saved_scene(tmp_path / "scene" / "thin.blend", size=(160, 90), samples=4,
                              extra={"render.use_border": True,
                                     "render.border_min_x": 0.5, "render.border_max_x": 0.503})
    farm.start_coordinator()
    with farm.client() as client, pytest.raises(CoordinatorRefused) as refused:
        submit_sample(client, blend, "1-2", **AS_SAVED, **BUDGET)
    assert refused.value.code == "INVALID_ARGUMENT"
    assert "Render Region" in refused.value.details and "160x90" in refused.value.details


def submit_with_cli(client: FarmClient, blend: Path,
                    capsys: pytest.CaptureFixture[str]) -> pb.Job:
    """`frameproof submit` as a creator runs it: one `note:` line for the time limit."""
    parser = argparse.ArgumentParser()
    submit.add_arguments(parser)
    capsys.readouterr()
    code = submit.run(parser.parse_args([str(blend), "--frames", RANGE,
                                         "--json"]), client)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "time limit (30 s)" in notes[0], captured.err
    job_id = json.loads(captured.out)["job_id"]
    return client.jobs.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10)


def cheater_then_honest(farm: LocalFarm, client: FarmClient, job_id: str) -> tuple[str, str]:
    """The cheater alone has the queue until it delivered two frames, then an honest node."""
    cheater = node_id_of(farm, "cheater")
    wait_for(lambda: standing(client, cheater).standing.leases_completed >= 2, timeout=240)
    farm.start_node("honest")
    wait_until_registered(farm, ["honest"])
    return cheater, node_id_of(farm, "honest")


def test_a_quarter_sample_node_never_reaches_the_creator(farm: LocalFarm, tmp_path: Path) -> None:
    blend = build_saved_scene(tmp_path / "scene" / "saved.blend", size=(160, 90), samples=16,
                              seed=7, adaptive=True, adaptive_threshold=0.01)
    farm.start_coordinator(extra_args=UNCAPPED)
    start_cheater(farm, "cheater", "quarter-samples")
    wait_until_registered(farm, ["cheater"])
    with farm.client() as client:
        job = submit_sample(client, blend, RANGE, **AS_SAVED, **BUDGET)
        cheater, honest = cheater_then_honest(farm, client, job.job_id)
        wait_until_done(client, job.job_id, timeout=300)
        final = wait_until_verified(client, job.job_id)
        download = download_frames(client, job.job_id, tmp_path / "download")
        files, missing = download.files, download.not_ready
        cheats, good = standing(client, cheater), standing(client, honest)
    assert missing == 0 and {f.node_id for f in final} == {honest}
    assert cheats.standing.frames_failed >= 2
    assert cheats.standing.reputation < good.standing.reputation
    assert_frames_as_saved(files, blend, tmp_path / "reference")


def test_a_denoised_scene_is_verified_and_a_cheater_caught(
    farm: LocalFarm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OpenImageDenoise on: the node delivers its passes with each frame, the verifier checks
    noisy-pass tiles exactly and re-runs the denoiser on them. A time limit is ignored, and
    submit says so."""
    blend = build_saved_scene(tmp_path / "scene" / "denoised.blend", size=(160, 90), samples=16,
                              seed=7, adaptive=True, denoise=True, time_limit=30.0)
    farm.start_coordinator(extra_args=UNCAPPED)
    start_cheater(farm, "cheater", "quarter-samples")
    wait_until_registered(farm, ["cheater"])
    with farm.client() as client:
        job = submit_with_cli(client, blend, capsys)
        assert job.scene.denoise and job.scene.time_limit == 30.0
        cheater, honest = cheater_then_honest(farm, client, job.job_id)
        wait_until_done(client, job.job_id, timeout=300)
        final = wait_until_verified(client, job.job_id)
        download = download_frames(client, job.job_id, tmp_path / "download")
        files, missing = download.files, download.not_ready
        cheats, good = standing(client, cheater), standing(client, honest)
    assert missing == 0 and {f.node_id for f in final} == {honest}
    assert cheats.standing.frames_failed >= 2
    assert cheats.standing.reputation < good.standing.reputation
    modes = {json.loads(e.details_json)["mode"] for e in cheats.history if e.kind == "failed"}
    assert modes == {"exact, noisy pass"}, modes
    assert_frames_as_saved(files, blend, tmp_path / "reference")

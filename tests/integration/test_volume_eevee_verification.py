"""Honest frames of scenes whose border tiles are not bit-exact must pass Proof-of-Render; a
quarter-sample cheat on them must not. Real bpy, the verifier's own check path
(``verifier.checker.check_frame``), no mocks.

Measured (160x90 and 320x180, 16 samples, docs/VERIFICATION.md "Renders as saved"): a Cycles
fog scene's tiles with an 8-px margin were bit-identical or a level off on <= 0.2% of pixels;
EEVEE tiles, even with a 64-px margin, differed by up to 22 levels (95-100% equal), about as
much as a quarter-sample render; whole frames of both were bit-identical on 1 and 2 threads.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest
from fog_scenes import build_scene
from saved_scenes import build_saved_scene

from frameproof.blender import BlenderWorker, RenderSettings
from verifier.checker import FrameJob, check_frame

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None, reason="bpy is not installed"
)

FRAME = 5


def check_honest_and_cheat(blend: Path, tmp_path: Path, plan: str, mode: str,
                           samples: int = 16) -> None:
    """The node renders on 2 threads, the verifier on 1 (exact mode: same build and device);
    the cheat renders a quarter of the scene's `samples`."""
    with BlenderWorker(threads=2) as node:
        honest = node.render_frame(blend, FRAME, tmp_path / "honest.png", RenderSettings()).output
        cheat = node.render_frame(blend, FRAME, tmp_path / "cheat.png",
                                  RenderSettings(samples=samples // 4)).output
    with BlenderWorker(threads=1) as verifier:
        assert verifier.tile_plan(blend, RenderSettings()).strategy == plan
        job = FrameJob(blend=blend, frame=FRAME, settings=RenderSettings(), width=160, height=90,
                       node_blender_version=verifier.blender_version(), node_device="CPU",
                       render_tiles=True)
        passed = check_frame(job, honest, verifier, tmp_path, random.Random(1))
        caught = check_frame(job, cheat, verifier, tmp_path, random.Random(1))
    assert passed.passed and passed.mode == mode, passed.reason
    assert not caught.passed and caught.mode == mode, caught.reason


def test_honest_fog_frame_passes_and_a_cheat_fails(tmp_path: Path) -> None:
    """A volume scene's tiles are judged close (with a margin), not bit-exact."""
    blend = build_scene(tmp_path / "fog.blend", engine="CYCLES", fog=0.2)
    check_honest_and_cheat(blend, tmp_path, "close", "exact, close")


def test_honest_eevee_frame_passes_and_a_cheat_fails(tmp_path: Path) -> None:
    """EEVEE tiles are not reproducible by a border render; its whole frames are.

    4 samples (a 1-sample cheat): on this CPU-only box an EEVEE render (software GL) costs
    about its sample count, and the check renders the whole frame several times."""
    blend = build_scene(tmp_path / "eevee.blend", engine="BLENDER_EEVEE", samples=4)
    check_honest_and_cheat(blend, tmp_path, "whole", "exact, whole frame", samples=4)


@pytest.mark.parametrize("kind", ["denoised", "fog"])
def test_statistical_mode_judges_denoised_and_fog_scenes_on_whole_frames(
    tmp_path: Path, kind: str
) -> None:
    """A node of another device class (statistical mode) on a scene whose tiles need a margin:
    the verifier renders the whole frame with the job's seed and the next one and pools every
    pixel. The honest node's noise is independent of both (seed 100 stands in for another
    device); a quarter-sample render with that seed fails."""
    if kind == "denoised":  # with compositing, so not checkable on its noisy pass alone
        blend = build_saved_scene(tmp_path / "denoised.blend", denoise=True, compositor=True)
    else:
        blend = build_scene(tmp_path / "fog.blend", engine="CYCLES", fog=0.2)
    with BlenderWorker(threads=2) as node:
        honest = node.render_frame(blend, FRAME, tmp_path / "honest.png",
                                   RenderSettings(seed=100)).output
        cheat = node.render_frame(blend, FRAME, tmp_path / "cheat.png",
                                  RenderSettings(samples=4, seed=100)).output
    with BlenderWorker(threads=1) as verifier:
        job = FrameJob(blend=blend, frame=FRAME, settings=RenderSettings(), width=160, height=90,
                       node_blender_version=verifier.blender_version(), node_device="CUDA",
                       render_tiles=True)
        passed = check_frame(job, honest, verifier, tmp_path, random.Random(1))
        caught = check_frame(job, cheat, verifier, tmp_path, random.Random(1))
    assert passed.passed and passed.mode == "statistical, whole frame", passed.reason
    assert not caught.passed and caught.mode == "statistical, whole frame", caught.reason
    assert [(t.w, t.h) for t, _ in caught.tiles] == [(160, 90)]

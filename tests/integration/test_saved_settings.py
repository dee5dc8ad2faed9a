"""The farm renders a scene as saved: only explicit overrides and what reproducibility or
safety needs are changed (frameproof/blender/child.py ``apply_settings``). Real bpy, no mocks.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from saved_scenes import build_saved_scene, render_as_saved

from coordinator.intake import render_notices
from frameproof.blender import BlenderWorker, RenderSettings
from verifier.judge import Outcome, judge_tile
from verifier.tiles import Tile, crop

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None, reason="bpy is not installed"
)

SAVED = {
    "cycles.adaptive_threshold": 0.02,
    "cycles.adaptive_min_samples": 3,
    "cycles.use_light_tree": False,
    "cycles.filter_width": 2.5,
    "cycles.sample_clamp_direct": 5.0,
    "cycles.sample_clamp_indirect": 3.0,
    "cycles.max_bounces": 5,
    "cycles.glossy_bounces": 2,
    "cycles.use_animated_seed": True,
    "cycles.use_denoising": True,
    "cycles.denoising_prefilter": "FAST",
    "cycles.seed": 7,
    "cycles.use_adaptive_sampling": True,
    "render.dither_intensity": 0.7,
    "render.use_freestyle": True,
    "render.use_stamp": True,
    "render.use_stamp_frame": True,
}

APPLY = textwrap.dedent(
    """
    import json, sys, bpy
    from frameproof.blender.child import apply_settings
    blend, settings, names = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False, use_scripts=False)
    scene = bpy.context.scene
    apply_settings(scene, settings)
    owners = {"cycles": scene.cycles, "render": scene.render}
    values = {n: getattr(owners[n.split(".")[0]], n.split(".")[1]) for n in names}
    print("RESULT " + json.dumps(values))
    """
)


def applied(blend: Path, settings: dict[str, object], names: list[str]) -> dict[str, object]:
    """Open ``blend`` in real bpy, run ``apply_settings`` and read the named properties back."""
    done = subprocess.run(
        [sys.executable, "-c", APPLY, str(blend), json.dumps(settings), json.dumps(names)],
        check=True, timeout=300, capture_output=True, text=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture(scope="module")
def saved_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    extra = {k: v for k, v in SAVED.items() if k not in ("cycles.seed",)}
    return build_saved_scene(tmp_path_factory.mktemp("saved") / "saved.blend",
                             time_limit=3.0, freestyle="EDITOR", stamp=True, extra=extra)


def test_apply_settings_keeps_everything_saved(saved_scene: Path) -> None:
    names = [*SAVED, "cycles.time_limit", "render.use_stamp_date", "render.use_stamp_render_time",
             "render.use_stamp_hostname", "render.use_stamp_filename", "cycles.samples"]
    values = applied(saved_scene, {"output_format": "PNG"}, names)
    for name, saved in SAVED.items():
        if isinstance(saved, float):
            assert values[name] == pytest.approx(saved), name
        else:
            assert values[name] == saved, name
    assert values["cycles.samples"] == 16
    # what the farm changes, and says at submit: wall-clock limit, machine-dependent stamps
    assert values["cycles.time_limit"] == 0.0
    for name in ("date", "render_time", "hostname", "filename"):
        assert values[f"render.use_stamp_{name}"] is False, name


def test_apply_settings_applies_only_explicit_overrides(saved_scene: Path) -> None:
    names = ["cycles.seed", "cycles.samples", "render.resolution_x", "cycles.use_adaptive_sampling"]
    values = applied(saved_scene, {"seed": 0, "samples": 5, "resolution_x": 80}, names)
    assert values == {"cycles.seed": 0, "cycles.samples": 5, "render.resolution_x": 80,
                      "cycles.use_adaptive_sampling": True}
    values = applied(saved_scene, {"seed": None, "samples": 0}, names)
    assert values["cycles.seed"] == 7 and values["cycles.samples"] == 16


def test_freestyle_scripting_mode_is_turned_off(tmp_path: Path) -> None:
    blend = build_saved_scene(tmp_path / "script.blend", freestyle="SCRIPT")
    assert applied(blend, {}, ["render.use_freestyle"]) == {"render.use_freestyle": False}


def test_intake_reports_saved_settings_and_notices(saved_scene: Path) -> None:
    with BlenderWorker(threads=1) as worker:
        info = worker.inspect(saved_scene)
    assert (info.seed, info.animated_seed, info.adaptive_sampling) == (7, True, True)
    assert info.adaptive_threshold == pytest.approx(0.02) and info.adaptive_min_samples == 3
    assert (info.denoise, info.denoiser, info.time_limit) == (True, "OPENIMAGEDENOISE", 3.0)
    assert info.freestyle and not info.freestyle_scripts and info.stamp_burned
    notices = render_notices(info)
    assert any("time limit (3 s)" in n and "full 16 samples" in n for n in notices)
    assert any("burned-in stamp" in n for n in notices)
    assert not info.render_region and not any("Render Region" in n for n in notices)


def test_intake_reads_a_saved_render_region(tmp_path: Path) -> None:
    """The region and its crop are read at intake and rendered as saved, so the creator is
    not told otherwise; a record inspected before regions were rendered still says it."""
    blend = build_saved_scene(tmp_path / "region.blend", extra={
        "render.use_border": True, "render.border_max_x": 0.5})
    with BlenderWorker(threads=1) as worker:
        info = worker.inspect(blend)
    assert info.render_region and info.region == [0.0, 0.5, 0.0, 1.0]
    assert info.region_crop is False  # Blender's default: the region in place
    assert not any("Render Region" in n for n in render_notices(info))
    legacy = replace(info, region=None, region_crop=False)
    assert any("Render Region is not used" in n for n in render_notices(legacy))


def decode(path: Path) -> np.ndarray:
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None
    return pixels


def test_farm_render_equals_the_creators_own_render(tmp_path: Path) -> None:
    """Seed 7, adaptive sampling, dither on: the worker's frame is the creator's F12 render,
    and a tile rendered for the verifier is bit-identical to the frame's region."""
    blend = build_saved_scene(tmp_path / "s.blend", size=(96, 54), samples=16)
    reference = render_as_saved(blend, tmp_path / "ref", [3])[3]
    tile = Tile(30, 10, 32, 32)
    with BlenderWorker(threads=2) as worker:
        frame = worker.render_frame(blend, 3, tmp_path / "f.png", RenderSettings())
        plan = worker.tile_plan(blend, RenderSettings())
        part = worker.render_frame(blend, 3, tmp_path / "t.png", RenderSettings(),
                                   tile=(tile.x, tile.y, tile.w, tile.h))
    assert np.array_equal(decode(frame.output), decode(reference))
    assert plan.strategy == "tile" and plan.seed == 7 and part.strategy == "tile"
    assert np.array_equal(crop(decode(part.output), tile), crop(decode(frame.output), tile))


def test_denoised_tile_is_close_and_a_cheat_is_not(tmp_path: Path) -> None:
    """A denoised scene whose frame the creator's compositing shapes (so its noisy pass is not
    enough): its tile is rendered with a margin, close to the frame, unlike a denoised render
    with a quarter of the samples."""
    blend = build_saved_scene(tmp_path / "d.blend", size=(160, 90), samples=16, denoise=True,
                              compositor=True)
    tile = Tile(50, 20, 48, 48)
    with BlenderWorker(threads=2) as worker:
        frame = decode(worker.render_frame(blend, 5, tmp_path / "f.png", RenderSettings()).output)
        cheat = decode(worker.render_frame(blend, 5, tmp_path / "c.png",
                                           RenderSettings(samples=4)).output)
        assert worker.tile_plan(blend, RenderSettings()).strategy == "padded"
        part = worker.render_frame(blend, 5, tmp_path / "t.png", RenderSettings(),
                                   tile=(tile.x, tile.y, tile.w, tile.h))
    assert part.strategy == "padded"
    reference = crop(decode(part.output), tile)
    honest = judge_tile(crop(frame, tile), reference, exact=True, close=True)
    cheated = judge_tile(crop(cheat, tile), reference, exact=True, close=True)
    assert honest.outcome is Outcome.PASS, honest.reason
    assert cheated.outcome is not Outcome.PASS, cheated.reason


def test_adaptive_tile_is_exact_at_high_samples(tmp_path: Path) -> None:
    """At 512 samples adaptive sampling stops pixels by their neighbours: a bare border tile
    differed (measured 98-99% equal, max 6 levels); the verifier's tile (8-px margin) is equal."""
    blend = build_saved_scene(tmp_path / "a.blend", size=(160, 90), samples=512)
    tile = Tile(90, 30, 48, 48)
    with BlenderWorker(threads=2) as worker:
        frame = decode(worker.render_frame(blend, 1, tmp_path / "f.png", RenderSettings()).output)
        part = worker.render_frame(blend, 1, tmp_path / "t.png", RenderSettings(),
                                   tile=(tile.x, tile.y, tile.w, tile.h))
    assert part.strategy == "tile"
    assert np.array_equal(crop(decode(part.output), tile), crop(frame, tile))

"""A scene saved with a Render Region comes back as the creator's Blender renders it: the
region, cropped or in place, never the whole frame; and the verifier checks those pixels.
Real bpy, no mocks (frameproof/region.py, child ``set_region``, verifier ``_area``).
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from saved_scenes import build_saved_scene, render_as_saved

from coordinator.api.convert import effective_settings
from frameproof.blender import BlenderWorker
from frameproof.region import EmptyRegion, Rect, RenderRegion, frame_layout
from frameproof.render_settings import from_proto, layout
from frameproof.v1 import farm_pb2 as pb
from verifier.checker import FrameJob, check_frame
from verifier.tiles import Tile

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None, reason="bpy is not installed"
)

SIZE = (96, 54)
# (min_x, max_x, min_y, max_y), chosen so float32 truncation matters on some edges
REGION = (0.2, 0.7, 0.3, 0.8)
ODD_REGION = (0.13, 0.911, 0.07, 0.59)


def decode(path: Path) -> np.ndarray:
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None, path
    return pixels


def region_scene(path: Path, region: tuple[float, float, float, float], *, crop: bool,
                 dither: float = 0.0, samples: int = 8, size: tuple[int, int] = SIZE) -> Path:
    min_x, max_x, min_y, max_y = region
    return build_saved_scene(path, size=size, samples=samples, dither=dither, extra={
        "render.use_border": True, "render.use_crop_to_border": crop,
        "render.border_min_x": min_x, "render.border_max_x": max_x,
        "render.border_min_y": min_y, "render.border_max_y": max_y})


def job_settings(worker: BlenderWorker, blend: Path) -> pb.RenderSettings:
    """What the coordinator hands nodes and verifiers for this scene, default options."""
    return effective_settings(pb.RenderSettings(), worker.inspect(blend))


def farm_job(blend: Path, settings: pb.RenderSettings, frame: int) -> FrameJob:
    shape = layout(settings)
    area = shape.area
    return FrameJob(blend=blend, frame=frame, settings=from_proto(settings),
                    width=shape.width, height=shape.height,
                    area=Tile(area.x, area.y, area.w, area.h), origin=shape.origin,
                    node_blender_version="", node_device="CPU", render_tiles=True)


@pytest.mark.parametrize(("region", "crop", "dither"), [
    (REGION, True, 1.0), (ODD_REGION, True, 0.0), (ODD_REGION, False, 1.0)])
def test_the_farm_renders_the_saved_region_as_blender_does(
        tmp_path: Path, region: tuple[float, float, float, float], crop: bool,
        dither: float) -> None:
    blend = region_scene(tmp_path / "r.blend", region, crop=crop, dither=dither)
    reference = decode(render_as_saved(blend, tmp_path / "ref", [2])[2])
    with BlenderWorker(threads=2) as worker:
        settings = job_settings(worker, blend)
        frame = worker.render_frame(blend, 2, tmp_path / "f.png", from_proto(settings))
    assert settings.HasField("region") and settings.region.crop is crop
    shape = layout(settings)
    assert (frame.width, frame.height) == (shape.width, shape.height)
    assert reference.shape[:2] == (shape.height, shape.width)
    assert np.array_equal(decode(frame.output), reference)
    if not crop:  # Blender leaves everything outside the region empty: where layout says
        alpha = reference[..., 3]
        rows, cols = np.nonzero(alpha)
        a = shape.area
        assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == \
            (a.y, a.y + a.h, a.x, a.x + a.w)


def test_layout_arithmetic() -> None:
    """Blender truncates each edge's float32 product and counts rows from the bottom."""
    whole = frame_layout(96, 54, None)
    assert whole.whole and whole.area == Rect(0, 0, 96, 54)
    cropped = frame_layout(64, 36, RenderRegion(0.2, 0.7, 0.3, 0.8, crop=True))
    assert (cropped.width, cropped.height) == (32, 18)  # 12..44 x rows 10..28 from the bottom
    assert cropped.area == Rect(0, 0, 32, 18) and cropped.origin == (12, 36 - 28)
    in_place = frame_layout(64, 36, RenderRegion(0.2, 0.7, 0.3, 0.8, crop=False))
    assert (in_place.width, in_place.height) == (64, 36) and not in_place.whole
    assert in_place.area == Rect(12, 8, 32, 18) and in_place.origin == (12, 8)
    with pytest.raises(EmptyRegion, match="holds no pixel"):
        frame_layout(64, 36, RenderRegion(0.5, 0.51, 0.0, 1.0, crop=True))


@pytest.mark.parametrize(("crop", "dither", "strategy"), [
    (True, 0.0, "tile"), (False, 1.0, "tile"), (True, 1.0, "whole")])
def test_the_verifier_checks_the_region_and_catches_a_shifted_one(
        tmp_path: Path, crop: bool, dither: float, strategy: str) -> None:
    """Tiles are chosen in the region and re-rendered where they lie in the frame: the
    honest frame passes exactly; the same region one pixel off does not."""
    blend = region_scene(tmp_path / "v.blend", ODD_REGION, crop=crop, dither=dither,
                         samples=16, size=(160, 90))
    with BlenderWorker(threads=2) as worker:
        settings = job_settings(worker, blend)
        job = farm_job(blend, settings, 1)
        job = FrameJob(**{**job.__dict__, "node_blender_version": worker.blender_version()})
        assert worker.tile_plan(blend, from_proto(settings)).strategy == strategy
        honest = worker.render_frame(blend, 1, tmp_path / "h.png", from_proto(settings)).output
        pixels = decode(honest)
        area = job.area
        assert area is not None
        shifted = pixels.copy()
        inside = shifted[area.y: area.y + area.h, area.x: area.x + area.w]
        inside[:] = np.roll(inside, 1, axis=1)
        cheat = tmp_path / "s.png"
        cv2.imwrite(str(cheat), shifted)
        passed = check_frame(job, honest, worker, tmp_path / "scratch", random.Random(1))
        failed = check_frame(job, cheat, worker, tmp_path / "scratch", random.Random(1))
    assert passed.passed, passed.reason
    assert passed.mode.startswith("exact")
    assert ("whole frame" in passed.mode) is (strategy == "whole")
    if strategy == "tile":
        assert passed.tiles and all(t.x + t.w <= area.w and t.y + t.h <= area.h
                                    for t, _ in passed.tiles)
    assert not failed.passed, failed.reason


def test_pixels_outside_an_uncropped_region_fail_the_cheap_check(tmp_path: Path) -> None:
    blend = region_scene(tmp_path / "o.blend", REGION, crop=False)
    with BlenderWorker(threads=2) as worker:
        settings = job_settings(worker, blend)
        job = farm_job(blend, settings, 1)
        pixels = decode(worker.render_frame(blend, 1, tmp_path / "h.png",
                                            from_proto(settings)).output)
        pixels[0:2, 0:2] = 255  # the corner lies outside the region
        painted = tmp_path / "p.png"
        cv2.imwrite(str(painted), pixels)
        outcome = check_frame(job, painted, worker, tmp_path / "scratch", random.Random(1))
    assert not outcome.passed and outcome.mode == "cheap"
    assert "outside the scene's Render Region" in outcome.reason


def test_a_denoised_region_is_checked_with_a_margin_not_on_its_noisy_pass(tmp_path: Path) -> None:
    """The noisy-pass check re-runs the denoiser on whole frames: a region's frames keep to
    the padded tiles, and nodes are not asked for passes they would upload for nothing."""
    blend = build_saved_scene(tmp_path / "d.blend", size=SIZE, samples=8, denoise=True, extra={
        "render.use_border": True, "render.border_max_x": 0.6})
    with BlenderWorker(threads=2) as worker:
        settings = from_proto(job_settings(worker, blend))
        assert worker.tile_plan(blend, settings).strategy == "padded"
        frame = worker.render_frame(blend, 1, tmp_path / "f.png", settings,
                                    passes=tmp_path / "p.exr")
    assert frame.passes is None and not (tmp_path / "p.exr").exists()


def test_an_exr_region_is_checked_on_its_float_bits_tile_by_tile(tmp_path: Path) -> None:
    """EXR has no dither: a cropped, dithered scene's EXR region takes exact tiles (float
    bits), placed in the region."""
    blend = region_scene(tmp_path / "x.blend", ODD_REGION, crop=True, dither=1.0, samples=16,
                         size=(160, 90))
    with BlenderWorker(threads=2) as worker:
        settings = effective_settings(pb.RenderSettings(output_format=pb.OUTPUT_FORMAT_EXR),
                                      worker.inspect(blend))
        job = farm_job(blend, settings, 1)
        job = FrameJob(**{**job.__dict__, "node_blender_version": worker.blender_version()})
        assert worker.tile_plan(blend, from_proto(settings)).strategy == "tile"
        frame = worker.render_frame(blend, 1, tmp_path / "h.exr", from_proto(settings))
        assert (frame.width, frame.height) == (job.width, job.height) == (125, 47)
        outcome = check_frame(job, frame.output, worker, tmp_path / "scratch", random.Random(2))
    assert outcome.passed, outcome.reason
    assert outcome.mode.startswith("exact") and "float bits" in outcome.mode and outcome.tiles


def test_the_probe_renders_the_region_at_a_reduced_size(tmp_path: Path) -> None:
    """The probe's reduced sizes keep the region's share of the frame (coordinator/probe.py),
    and the next render is the job's own size again."""
    blend = region_scene(tmp_path / "p.blend", REGION, crop=True)
    with BlenderWorker(threads=2) as worker:
        settings = from_proto(job_settings(worker, blend))
        small = worker.render_frame(blend, 1, tmp_path / "s.png", settings, size=(64, 36))
        full = worker.render_frame(blend, 1, tmp_path / "f.png", settings)
    reduced = frame_layout(64, 36, settings.region)
    assert (small.width, small.height) == (reduced.width, reduced.height) == (32, 18)
    assert (full.width, full.height) == (48, 27)  # 96x54: 19..67 x rows 16..43 from the bottom

"""Denoised frames checked on their noisy pass: real renders of a scene saved with
OpenImageDenoise, adaptive sampling and seed 7, judged by the verifier's own code.

A node returns its passes next to the frame; the verifier re-runs the denoiser on them
(the frame must be its output), judges noisy-pass tiles like a frame without a denoiser and
checks the guide passes. Statistical mode (another device class) is stood in for by a node
rendering another seed, as in docs/VERIFICATION.md.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest
from saved_scenes import build_saved_scene

from frameproof.blender.worker import BlenderWorker, RenderSettings
from verifier.checker import FrameJob, check_frame
from verifier.compare import ImageDecodeError, load_passes
from verifier.tiles import Tile, crop

SIZE = (160, 90)
FRAME = 3
OTHER_SEED = 20  # "another device": noise independent of the verifier's seeds 7, 8, 9


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The scene, a node's frames with passes (honest, other seed, cheats) and a verifier tile."""
    work = tmp_path_factory.mktemp("noisy")
    blend = build_saved_scene(work / "dn.blend", size=SIZE, samples=16, seed=7, adaptive=True,
                              denoise=True)
    out = {"blend": blend}
    variants = {
        "honest": (FRAME, RenderSettings()),
        "next": (FRAME + 1, RenderSettings()),
        "half": (FRAME, RenderSettings(samples=8)),
        "other": (FRAME, RenderSettings(seed=OTHER_SEED)),
        "other_quarter": (FRAME, RenderSettings(seed=OTHER_SEED, samples=4)),
    }
    with BlenderWorker(threads=1) as node:
        for name, (frame, settings) in variants.items():
            result = node.render_frame(blend, frame, work / f"{name}.png", settings,
                                       passes=work / f"{name}.exr")
            assert result.passes == work / f"{name}.exr"
            out[name] = result.output
            out[f"{name}.exr"] = work / f"{name}.exr"
    return out


@pytest.fixture(scope="module")
def verifier() -> BlenderWorker:
    with BlenderWorker(threads=2) as worker:
        yield worker


def check(renders: dict[str, Path], verifier: BlenderWorker, tmp_path: Path, image: str,
          passes: str | None, *, statistical: bool = False) -> tuple[bool, str, str]:
    version = "4.2.0" if statistical else verifier.blender_version()
    job = FrameJob(blend=renders["blend"], frame=FRAME, settings=RenderSettings(),
                   width=SIZE[0], height=SIZE[1], node_blender_version=version,
                   node_device="CPU", render_tiles=True,
                   passes=renders[f"{passes}.exr"] if passes else None)
    outcome = check_frame(job, renders[image], verifier, tmp_path, random.Random(3))
    return outcome.passed, outcome.mode, outcome.reason


def test_passes_hold_the_noisy_image_and_tiles_reproduce_them(
        renders: dict[str, Path], verifier: BlenderWorker, tmp_path: Path) -> None:
    """Storing the passes does not change the frame; a border tile's passes equal the frame's."""
    plain = verifier.render_frame(renders["blend"], FRAME, tmp_path / "plain.png", RenderSettings())
    assert plain.passes is None and verifier.tile_plan(renders["blend"],
                                                       RenderSettings()).strategy == "noisy"
    assert np.array_equal(cv2.imread(str(plain.output)), cv2.imread(str(renders["honest"])))
    tile = Tile(48, 16, 48, 48)
    part = verifier.render_frame(renders["blend"], FRAME, tmp_path / "t.png", RenderSettings(),
                                 tile=(tile.x, tile.y, tile.w, tile.h), passes=tmp_path / "t.exr")
    assert part.strategy == "noisy" and part.passes is not None
    full, ours = load_passes(renders["honest.exr"], SIZE), load_passes(part.passes, SIZE)
    for name in ("noisy", "albedo", "normal"):
        assert np.array_equal(crop(getattr(full, name), tile), crop(getattr(ours, name), tile))
    # the verifier's reference: a denoiser-off render holds the same noisy pass and guides, and
    # its frame is the node's noisy pass as the scene's view shows it
    off = verifier.render_frame(renders["blend"], FRAME, tmp_path / "off.png", RenderSettings(),
                                passes=tmp_path / "off.exr", noisy_pass=True)
    assert off.passes is not None
    plain_off = load_passes(off.passes, SIZE, noisy="Combined")
    for name in ("noisy", "albedo", "normal"):
        assert np.array_equal(getattr(full, name), getattr(plain_off, name))
    verifier.denoise_passes(renders["blend"], FRAME, renders["honest.exr"], tmp_path / "d.png",
                            RenderSettings(), noisy_output=tmp_path / "view.png")
    assert np.array_equal(cv2.imread(str(tmp_path / "d.png")), cv2.imread(str(renders["honest"])))
    assert np.array_equal(cv2.imread(str(tmp_path / "view.png")), cv2.imread(str(off.output)))


def test_exact_mode_passes_the_honest_frame_and_catches_cheats(
        renders: dict[str, Path], verifier: BlenderWorker, tmp_path: Path) -> None:
    passed, mode, reason = check(renders, verifier, tmp_path, "honest", "honest")
    assert passed and mode == "exact, noisy pass", reason
    passed, _, reason = check(renders, verifier, tmp_path, "half", "half")
    assert not passed and reason.startswith("noisy pass:"), reason
    # an honest noisy pass next to a cheaper frame, or another frame's passes
    passed, _, reason = check(renders, verifier, tmp_path, "half", "honest")
    assert not passed and "denoiser output" in reason, reason
    passed, _, reason = check(renders, verifier, tmp_path, "honest", "next")
    assert not passed and "denoiser output" in reason, reason
    passed, _, reason = check(renders, verifier, tmp_path, "honest", None)
    assert not passed and "without its render passes" in reason, reason


def test_statistical_mode_passes_another_devices_noise_and_catches_a_quarter(
        renders: dict[str, Path], verifier: BlenderWorker, tmp_path: Path) -> None:
    # the stand-in for another device really is other noise, not the verifier's own
    assert not np.array_equal(load_passes(renders["honest.exr"], SIZE).noisy,
                              load_passes(renders["other.exr"], SIZE).noisy)
    passed, mode, reason = check(renders, verifier, tmp_path, "other", "other", statistical=True)
    assert passed and mode == "statistical, noisy pass", reason
    passed, _, reason = check(renders, verifier, tmp_path, "other_quarter", "other_quarter",
                              statistical=True)
    assert not passed and reason.startswith("noisy pass:"), reason
    passed, _, reason = check(renders, verifier, tmp_path, "other_quarter", "other",
                              statistical=True)
    assert not passed and "denoiser output" in reason, reason


def write_exr(path: Path, parts: list[tuple[str, dict[str, np.ndarray]]]) -> Path:
    OpenEXR.File([OpenEXR.Part({"type": OpenEXR.scanlineimage}, channels, name=name)
                  for name, channels in parts]).write(str(path))
    return path


def rgb(prefix: str, shape: tuple[int, int], letters: str = "RGB") -> dict[str, np.ndarray]:
    return {f"{prefix}.{c}": np.zeros(shape, np.float32) for c in letters}


def test_hostile_passes_files_are_refused_before_decoding(tmp_path: Path) -> None:
    shape = (SIZE[1], SIZE[0])
    good = [("L.Noisy Image", rgb("L.Noisy Image", shape)),
            ("L.Denoising Albedo", rgb("L.Denoising Albedo", shape)),
            ("L.Denoising Normal", rgb("L.Denoising Normal", shape, "XYZ"))]
    passes = load_passes(write_exr(tmp_path / "ok.exr", good), SIZE)
    assert passes.noisy.shape == (90, 160, 3)
    cases = {
        "missing": good[:2],
        "too many parts": good + [(f"L.X{i}", rgb(f"L.X{i}", shape)) for i in range(8)],
        "wrong size": [(n, rgb(n, (45, 80), "XYZ" if "Normal" in n else "RGB"))
                       for n, _ in good],
        "many channels": [good[0], good[1], ("L.Denoising Normal",
                                             rgb("L.Denoising Normal", shape, "XYZWUV"))],
    }
    for name, parts in cases.items():
        with pytest.raises(ImageDecodeError):
            load_passes(write_exr(tmp_path / f"{name}.exr", parts), SIZE)
    (tmp_path / "junk.exr").write_bytes(b"\x76\x2f\x31\x01" + b"\xff" * 200)
    with pytest.raises(ImageDecodeError):
        load_passes(tmp_path / "junk.exr", SIZE)

"""EXR frames through the verifier: real Blender renders, the real OpenEXR decoder, and the
hostile files a node could upload (huge declared size, truncated, the wrong format)."""

from __future__ import annotations

import random
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from conftest import SAMPLE_SCENE

from frameproof.blender import BlenderWorker, RenderSettings
from verifier import metrics
from verifier.checker import FrameJob, check_frame
from verifier.compare import ImageDecodeError, exr_view, load_exr, load_image

SETTINGS = RenderSettings(samples=4, resolution_x=64, resolution_y=36,
                          resolution_percentage=100, output_format="EXR", seed=0)


def _write_exr(path: Path, bgr: np.ndarray) -> None:
    rgb = np.ascontiguousarray(bgr[..., ::-1], dtype=np.float32)
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 {"RGB": rgb}).write(str(path))


def _job(blender: str = "", device: str = "", render_tiles: bool = False) -> FrameJob:
    return FrameJob(blend=SAMPLE_SCENE, frame=1, settings=SETTINGS, width=64, height=36,
                    node_blender_version=blender, node_device=device, render_tiles=render_tiles)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory):
    """An honest EXR of frame 1, and the worker that rendered it (the verifier's build)."""
    folder = tmp_path_factory.mktemp("exr")
    with BlenderWorker(threads=1) as worker:
        path = folder / "node.exr"
        worker.render_frame(SAMPLE_SCENE, 1, path, SETTINGS)
        yield worker, path, folder


def test_exact_mode_compares_float_bits_and_catches_a_change_8_bits_cannot_see(rendered):
    worker, honest, folder = rendered
    job = _job(worker.blender_version(), worker.device, render_tiles=True)
    passed = check_frame(job, honest, worker, folder, random.Random(1))
    assert passed.passed, passed.reason
    assert passed.mode.startswith("exact, float bits"), passed.mode
    # A node of another device class: statistical mode, on the display view (clipped, sRGB).
    judged = check_frame(replace(job, node_device="CUDA"), honest, worker, folder,
                         random.Random(2))
    assert judged.passed and judged.mode == "statistical", (judged.mode, judged.reason)

    # Brighter by 0.05 %: invisible on 8 bits, but not the render the job paid for.
    raw = load_exr(honest)
    tampered = folder / "tampered.exr"
    _write_exr(tampered, raw * np.float32(1.0005))
    assert metrics.exact_match(exr_view(raw), exr_view(load_exr(tampered))).equal_fraction > 0.9
    failed = check_frame(job, tampered, worker, folder, random.Random(1))
    assert not failed.passed and "differs from the same-seed re-render" in failed.reason


def test_hostile_exr_files_are_refused_before_decoding(rendered, tmp_path: Path):
    _, honest, _ = rendered
    data = honest.read_bytes()
    key = b"dataWindow\x00box2i\x00"
    at = data.index(key) + len(key) + 4  # after the attribute's size
    assert struct.unpack("<4i", data[at:at + 16]) == (0, 0, 63, 35)
    cases = {
        "huge.exr": data[:at] + struct.pack("<4i", 0, 0, 199_999, 199_999) + data[at + 16:],
        "tall.exr": data[:at] + struct.pack("<4i", 0, 0, 63, 35_999) + data[at + 16:],
        "truncated.exr": data[: len(data) // 2],
        "header-only.exr": data[:40],
        "garbage.exr": b"\x76\x2f\x31\x01" + bytes(range(256)) * 4,
    }
    for name, body in cases.items():
        path = tmp_path / name
        path.write_bytes(body)
        with pytest.raises(ImageDecodeError):
            load_image(path)
        outcome = check_frame(_job(), path, None, tmp_path)  # type: ignore[arg-type]
        assert not outcome.passed and outcome.mode == "cheap", name
        assert "\n" not in outcome.reason and outcome.reason, name
    assert "declares 200000x200000 pixels" in check_frame(
        _job(), tmp_path / "huge.exr", None, tmp_path).reason  # type: ignore[arg-type]
    assert "differs from the job's 64x36" in check_frame(
        _job(), tmp_path / "tall.exr", None, tmp_path).reason  # type: ignore[arg-type]


def test_a_png_where_the_job_asked_for_exr_is_refused(rendered, tmp_path: Path):
    import cv2

    _, honest, _ = rendered
    png = tmp_path / "frame.exr"  # the name is the node's to choose; the bytes decide
    assert cv2.imwrite(str(tmp_path / "x.png"), metrics.to_uint8(exr_view(load_exr(honest))))
    (tmp_path / "x.png").rename(png)
    outcome = check_frame(_job(), png, None, tmp_path)  # type: ignore[arg-type]
    assert not outcome.passed and "not the OpenEXR image" in outcome.reason
    assert check_frame(_job(), honest, None, tmp_path).passed  # type: ignore[arg-type]

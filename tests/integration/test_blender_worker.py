"""Tests of the Blender layer with real Blender (bpy) in child processes; no mocks.

bpy is never imported into the pytest process: scenes are built and rendered in children.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from frameproof.blender import (
    BlenderCrashed,
    BlenderError,
    BlenderTimeout,
    BlenderWorker,
    RenderSettings,
    inspect_scene,
)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None, reason="bpy is not installed"
)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "spinning_cube.blend"
SCENES = REPO.parent / "shared" / "scenes" / "bat"
TINY = RenderSettings(samples=4, resolution_percentage=20)  # 64x36 of the 320x180 sample
needs_scenes = pytest.mark.skipif(not SCENES.is_dir(), reason="shared third-party scenes absent")


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlenderWorker]:
    """One warm child shared by the tests that do not kill it (with a sensible memory cap)."""
    log = tmp_path_factory.mktemp("log") / "blender.log"
    with BlenderWorker(threads=1, memory_limit_bytes=8 << 30, log_path=log) as w:
        yield w


def decode(path: Path) -> np.ndarray:
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None, f"{path} does not decode"
    return pixels


def test_package_does_not_import_bpy() -> None:
    assert "bpy" not in sys.modules


def test_render_then_warm_frame_reuses_child(tmp_path: Path) -> None:
    with BlenderWorker(threads=1) as w:
        t0 = time.perf_counter()
        first = w.render_frame(SAMPLE, 1, tmp_path / "f1.png", TINY)
        cold = time.perf_counter() - t0
        pid = w.pid
        t0 = time.perf_counter()
        second = w.render_frame(SAMPLE, 2, tmp_path / "f2.png", TINY)
        warm = time.perf_counter() - t0
        assert w.pid == pid, "the child was restarted between frames"
    for result in (first, second):
        assert result.output.is_file()
        assert decode(result.output).shape == (36, 64, 4)
        assert (result.width, result.height) == (64, 36)
        assert result.blender_version == "5.0.1" and result.device == "CPU"
    assert warm < cold / 3, f"warm frame {warm:.3f}s vs first {cold:.3f}s"
    assert not list(tmp_path.glob(".*partial*")), "temporary files left behind"
    # The parent re-encodes PNGs: no Blender metadata (paths, dates) survives.
    assert str(REPO).encode() not in first.output.read_bytes()


def test_renders_are_deterministic_across_children(worker: BlenderWorker, tmp_path: Path) -> None:
    a = worker.render_frame(SAMPLE, 7, tmp_path / "a.png", TINY)
    with BlenderWorker(threads=2) as other:
        b = other.render_frame(SAMPLE, 7, tmp_path / "b.png", TINY)
    c = worker.render_frame(SAMPLE, 8, tmp_path / "c.png", TINY)
    assert np.array_equal(decode(a.output), decode(b.output))
    assert not np.array_equal(decode(a.output), decode(c.output)), "the cube should move"


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_idle_child_frees_its_fixed_thread_session_and_stops_spinning(tmp_path: Path) -> None:
    """bpy 5.0.1 keeps one of its TBB workers spinning (a whole core) while a Cycles session
    rendered with a fixed thread count is kept for the next frame; a child left idle frees
    the session, and its next render of the same frame is unchanged."""
    from frameproof.blender.child import IDLE_RELEASE_SECONDS

    with BlenderWorker(threads=1) as w:
        first = w.render_frame(SAMPLE, 3, tmp_path / "first.png", TINY)
        assert w.pid is not None
        time.sleep(IDLE_RELEASE_SECONDS + 1.0)
        before = cpu_seconds(w.pid)
        time.sleep(2.0)
        idle = cpu_seconds(w.pid) - before
        again = w.render_frame(SAMPLE, 3, tmp_path / "again.png", TINY)
    # Spinning, the child burns ~2 CPU s here on an idle machine.
    assert idle < 0.5, f"the idle child used {idle:.2f} CPU s in 2 s"
    assert np.array_equal(decode(first.output), decode(again.output))


def test_exr_output(worker: BlenderWorker, tmp_path: Path) -> None:
    settings = RenderSettings(samples=4, resolution_percentage=20, output_format="EXR")
    result = worker.render_frame(SAMPLE, 3, tmp_path / "f3.exr", settings)
    data = result.output.read_bytes()
    assert data[:4] == b"\x76\x2f\x31\x01" and len(data) > 100
    assert (result.width, result.height) == (64, 36)


@pytest.mark.parametrize(
    ("border", "shape"),
    [((0.0, 0.5, 0.0, 0.5), (18, 32)), ((0.25, 1.0, 0.5, 1.0), (18, 48))],
)
def test_border_render_is_cropped(
    worker: BlenderWorker,
    tmp_path: Path,
    border: tuple[float, float, float, float],
    shape: tuple[int, int],
) -> None:
    result = worker.render_frame(SAMPLE, 1, tmp_path / "tile.png", TINY, border=border)
    assert decode(result.output).shape[:2] == shape
    assert (result.height, result.width) == shape


def test_a_reduced_size_renders_the_whole_picture_and_leaves_the_scene_as_saved(
        worker: BlenderWorker, tmp_path: Path) -> None:
    """The probe's reduced frame: the whole picture at that size (the frame downscaled, not
    a crop of it), and the next frame again at the job's own size in the same child."""
    full = worker.render_frame(SAMPLE, 3, tmp_path / "full.png", TINY)
    small = worker.render_frame(SAMPLE, 3, tmp_path / "small.png", TINY, size=(32, 18))
    assert (small.width, small.height) == (32, 18)
    shrunk = cv2.resize(decode(full.output), (32, 18), interpolation=cv2.INTER_AREA)
    ours = decode(small.output).astype(np.float64)
    assert np.mean(np.abs(ours - shrunk)) < 12, "not the same picture, downscaled"
    corner = decode(full.output)[:18, :32].astype(np.float64)  # what a crop would give
    assert np.mean(np.abs(ours - shrunk)) < np.mean(np.abs(ours - corner))
    again = worker.render_frame(SAMPLE, 3, tmp_path / "again.png", TINY)
    assert (again.width, again.height) == (64, 36)
    assert np.array_equal(decode(again.output), decode(full.output))
    with pytest.raises(ValueError, match="size"):
        worker.render_frame(SAMPLE, 3, tmp_path / "bad.png", TINY, size=(0, 18))


def test_inspect_sample(worker: BlenderWorker) -> None:
    info = worker.inspect(SAMPLE)
    assert info.engine == "CYCLES"
    assert (info.frame_start, info.frame_end) == (1, 24)
    assert (info.resolution_x, info.resolution_y, info.resolution_percentage) == (320, 180, 100)
    assert info.samples == 16
    assert info.camera == "Camera"
    assert info.file_blender_version.startswith("5.0.")
    assert info.libraries == [] and info.missing == []
    assert info.output_media_type == "IMAGE"


def test_inspect_reports_missing_texture(tmp_path: Path) -> None:
    blend = tmp_path / "copy.blend"
    blend.write_bytes(SAMPLE.read_bytes())  # copied without its textures/ folder
    info = inspect_scene(blend)
    assert len(info.missing) == 1 and "checker.png" in info.missing[0]


def test_scene_error_keeps_child_alive(worker: BlenderWorker, tmp_path: Path) -> None:
    worker.blender_version()
    pid = worker.pid
    with pytest.raises(BlenderError, match=r"no such \.blend file"):
        worker.render_frame(tmp_path / "absent.blend", 1, tmp_path / "x.png", TINY)
    with pytest.raises(BlenderError, match="unsupported engine"):
        worker.render_frame(SAMPLE, 1, tmp_path / "x.png", RenderSettings(engine="POVRAY"))
    assert worker.pid == pid
    assert not list(tmp_path.iterdir())


def test_memory_limit_applies_to_child(worker: BlenderWorker) -> None:
    worker.blender_version()
    limits = Path(f"/proc/{worker.pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max address space"))
    assert str(8 << 30) in line


@needs_scenes
def test_inspect_corrupt_file(worker: BlenderWorker) -> None:
    with pytest.raises(BlenderError, match=r"not a readable \.blend file"):
        worker.inspect(SCENES / "corrupt_only_magic.blend")


@needs_scenes
def test_inspect_third_party_scenes(worker: BlenderWorker, tmp_path: Path) -> None:
    basic = worker.inspect(SCENES / "basic_file.blend")
    assert basic.camera is None
    assert basic.output_media_type == "VIDEO"
    assert worker.inspect(SCENES / "basic_file_compressed_zstd.blend").engine
    linked = worker.inspect(SCENES / "doubly_linked.blend")
    assert "//material_textures.blend" in linked.libraries
    assert len(linked.missing) == 1 and "material_textures.blend" in linked.missing[0]
    up = worker.inspect(SCENES / "subdir" / "doubly_linked_up.blend")
    assert len(up.missing) == 1 and "material_textures.blend" in up.missing[0]
    with pytest.raises(BlenderError, match="no active camera"):
        worker.render_frame(SCENES / "basic_file.blend", 1, tmp_path / "x.png", TINY)


HOSTILE_BUILDER = textwrap.dedent(
    """
    import sys, bpy
    out, text_marker, driver_marker = sys.argv[1:4]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"  # the factory default, Eevee, compiles shaders for ~30 s
    scene.render.resolution_x, scene.render.resolution_y = 160, 90
    scene.cycles.samples = 1
    text = bpy.data.texts.new("evil.py")
    text.write(f"open({text_marker!r}, 'w').write('pwned')\\n")
    text.use_module = True
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.object
    fcurve = cube.driver_add("location", 0)
    fcurve.driver.type = "SCRIPTED"
    fcurve.driver.expression = f"__import__('os').system('touch {driver_marker}') or 0"
    bpy.ops.object.camera_add(location=(0, -8, 0), rotation=(1.5708, 0, 0))
    scene.camera = bpy.context.object
    bpy.ops.wm.save_as_mainfile(filepath=out)
    """
)

POSITIVE_CONTROL = textwrap.dedent(
    """
    import sys, bpy
    bpy.ops.wm.open_mainfile(filepath=sys.argv[1], use_scripts=True)
    bpy.context.scene.frame_set(2)
    """
)


def run_bpy(script: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-c", script, *args],
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_hostile_scene_runs_no_python(worker: BlenderWorker, tmp_path: Path) -> None:
    blend = tmp_path / "hostile.blend"
    text_marker, driver_marker = tmp_path / "TEXT_MARKER", tmp_path / "DRIVER_MARKER"
    run_bpy(HOSTILE_BUILDER, str(blend), str(text_marker), str(driver_marker))
    # Positive control: the payloads are live when a file is trusted.
    run_bpy(POSITIVE_CONTROL, str(blend))
    assert text_marker.exists() and driver_marker.exists()
    text_marker.unlink()
    driver_marker.unlink()

    info = worker.inspect(blend)
    assert info.scripts_blocked
    worker.render_frame(blend, 1, tmp_path / "h1.png", TINY)
    worker.render_frame(blend, 2, tmp_path / "h2.png", TINY)
    assert not text_marker.exists(), "a text block registered as a module ran"
    assert not driver_marker.exists(), "a Python driver expression ran"


def test_crash_is_reported_and_recovered(tmp_path: Path) -> None:
    with BlenderWorker(threads=1) as w:
        w.blender_version()
        pid = w.pid
        assert pid is not None
        killer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
        killer.start()
        slow = RenderSettings(samples=256)  # ~10 s at 320x180: still rendering when killed
        try:
            with pytest.raises(BlenderCrashed, match="SIGKILL"):
                w.render_frame(SAMPLE, 1, tmp_path / "dead.png", slow)
        finally:
            killer.cancel()
        assert w.pid is None
        result = w.render_frame(SAMPLE, 1, tmp_path / "alive.png", TINY)
        assert w.pid not in (None, pid)
        assert decode(result.output).shape == (36, 64, 4)
    assert not (tmp_path / "dead.png").exists()


def test_timeout_kills_and_recovers(tmp_path: Path) -> None:
    with BlenderWorker(threads=1) as w:
        w.blender_version()
        pid = w.pid
        with pytest.raises(BlenderTimeout):
            w.render_frame(SAMPLE, 1, tmp_path / "late.png", TINY, timeout=0.01)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the old child is gone (reaped)
        result = w.render_frame(SAMPLE, 1, tmp_path / "ok.png", TINY)
        assert w.pid != pid
        assert result.output.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png"]


def test_border_tile_matches_crop_of_full_frame(worker: BlenderWorker, tmp_path: Path) -> None:
    """Border Y runs bottom-up: (0, .5, 0, .5) is the bottom-left quarter of the image."""
    full = decode(worker.render_frame(SAMPLE, 4, tmp_path / "full.png", TINY).output)
    border = (0.0, 0.5, 0.0, 0.5)
    tile = decode(worker.render_frame(SAMPLE, 4, tmp_path / "t.png", TINY, border=border).output)
    assert np.array_equal(tile, full[18:36, 0:32])

"""The coordinator's spare Blender child (coordinator/warm_blender.py), with real Blender.

A spare is started ahead of need with bpy imported and no scene opened; one request takes it
for one scene (inspection, then probe) and it is closed afterwards: never handed to another
scene. Its output goes to the scene's own log once it has a scene.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from farm_helpers import alive

from coordinator.intake import INSPECT_CPU_SECONDS
from coordinator.probe import (
    PROBE_CPU_SECONDS,
    PROBE_MEMORY_BYTES,
    reduced_sizes,
    time_frames,
)
from coordinator.warm_blender import SceneSession, WarmBlender
from frameproof.blender import RenderSettings

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bpy") is None, reason="bpy is not installed"
)

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "spinning_cube.blend"
TINY = RenderSettings(samples=4, resolution_percentage=20)
SCENE_A, SCENE_B = "a" * 64, "b" * 64


def test_a_scene_gets_the_started_spare_and_its_child_ends_with_the_request(
        tmp_path: Path) -> None:
    warm = WarmBlender(memory_limit_bytes=PROBE_MEMORY_BYTES, log_path=tmp_path / "spare.log")
    try:
        warm.prepare()
        session = SceneSession(warm, SCENE_A)
        inspect_log, probe_log = tmp_path / "a.inspect.log", tmp_path / "a.probe.log"
        worker = session.worker(SCENE_A, log_path=inspect_log, cpu_seconds=INSPECT_CPU_SECONDS)
        spare_pid = worker.pid
        assert spare_pid is not None and alive(spare_pid), "the spare was started ahead"
        assert worker.inspect(SAMPLE).camera  # the scene opened in the spare's process
        with pytest.raises(ValueError, match="not bbbbbbbbbbbb"):  # never another scene
            session.worker(SCENE_B, log_path=tmp_path / "b.log", cpu_seconds=1.0)
        # The probe runs in the same child, its output in the probe's log.
        probe = session.worker(SCENE_A, log_path=probe_log, cpu_seconds=PROBE_CPU_SECONDS)
        assert probe is worker and probe.pid == spare_pid
        seconds = time_frames(SAMPLE, TINY, [1, 2], None, worker=probe)
        assert len(seconds) == 2 and all(s > 0 for s in seconds)
        scaled = time_frames(SAMPLE, TINY, [1], reduced_sizes(64, 36, 1 / 4), worker=probe)
        assert len(scaled) == 1 and scaled[0] > 0
        assert probe.pid == spare_pid, "the probe did not start a child of its own"
        session.close()
        assert not alive(spare_pid), "a child that opened a creator's scene is closed"
        # The next request gets a new spare, never the used one.
        nxt = SceneSession(warm, SCENE_B)
        fresh = nxt.worker(SCENE_B, log_path=tmp_path / "b.inspect.log", cpu_seconds=1.0)
        assert fresh.pid is not None and fresh.pid != spare_pid and alive(fresh.pid)
        nxt.close()
    finally:
        warm.close()
    # Blender's output about the scene went to the scene's logs, not to the spare's.
    assert "spinning_cube" in inspect_log.read_text()
    assert probe_log.stat().st_size > 0
    spare_log = (tmp_path / "spare.log").read_text()
    assert "spinning_cube" not in spare_log


def test_without_a_spare_each_request_starts_its_own_child(tmp_path: Path) -> None:
    """`--no-spare-blender`: nothing is started ahead; a request's child starts on use."""
    warm = WarmBlender(memory_limit_bytes=PROBE_MEMORY_BYTES, log_path=tmp_path / "spare.log",
                       spare=False)
    warm.prepare()
    session = SceneSession(warm, SCENE_A)
    worker = session.worker(SCENE_A, log_path=tmp_path / "a.log", cpu_seconds=1.0)
    assert worker.pid is None, "nothing was started ahead"
    assert worker.inspect(SAMPLE).camera
    pid = worker.pid
    assert pid is not None
    session.close()
    assert not alive(pid)
    assert not (tmp_path / "spare.log").exists()
    warm.close()

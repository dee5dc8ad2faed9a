"""The Blender add-on, installed from its extension zip into bpy and driven like a creator.

Real parts: the extension zip built by addon/build_extension.py (with frameproof's wheel; its
dependencies come from this venv), Blender's own extension installer, a live coordinator and
render node, the sample scene. bpy runs in a child process without the checkout on its path,
so the add-on can only use the frameproof it installed from the zip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from conftest import ROOT, SAMPLE_SCENE
from farm_helpers import wait_until_registered

from frameproof.localfarm import LocalFarm

sys.path.insert(0, str(ROOT / "addon"))
from build_extension import build


@pytest.mark.timeout(900)
def test_addon_estimates_submits_follows_and_downloads_next_to_the_blend(
        farm: LocalFarm, tmp_path: Path) -> None:
    extension = build(tmp_path / "frameproof_blender.zip", [], frameproof_only=True)
    project = tmp_path / "project"
    shutil.copytree(SAMPLE_SCENE.parent, project)  # the scene and its texture
    blend = project / "shot.blend"
    (project / SAMPLE_SCENE.name).rename(blend)
    farm.start_coordinator()
    farm.start_node("node")
    wait_until_registered(farm, ["node"])

    home = tmp_path / "home"  # Blender's user folders (extensions) live under it
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HOME=str(home), FRAMEPROOF_KEYPAIR=str(farm.creator_keypair))
    seen_file = tmp_path / "seen.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "addon_driver.py"), str(extension), str(blend),
         farm.address, str(seen_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seen = json.loads(seen_file.read_text())

    assert seen["install"] == ["FINISHED"] and seen["enabled"]
    # The bundled wheel, installed by Blender, not the checkout or the venv's frameproof.
    assert str(home) in seen["library_file"], seen["library_file"]
    assert "runs backwards" in seen["bad_range"]
    assert seen["bad_range_dirty"], "a refused request saved (or packed) the scene"
    assert seen["dirty_before"] and seen["saved"], "the .blend was not saved before packing"
    assert seen["estimate"].startswith("2 frames: about $"), seen["estimate_message"]
    assert seen["job_id"]
    assert seen["job_state"] == "done", seen["message"]
    assert seen["progress"][-1] == 100.0
    assert seen["message"].startswith("done: 2/2 done")

    out = project / "frameproof" / seen["job_id"]
    assert Path(seen["downloaded"]) == out
    # named after the scene's output path (//render/frame_), under the add-on's folder
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "render/frame_0001.png", "render/frame_0002.png"]
    image = cv2.imread(str(out / "render" / "frame_0001.png"))
    assert image.shape[:2] == (36, 64)  # the saved 20% of 320x180: the add-on saved first
    assert seen["download_message"] == f"2 frames in {out}"
    assert seen["unreachable_message"].startswith(
        "Download failed: cannot reach the coordinator at 127.0.0.1:1 ("), seen

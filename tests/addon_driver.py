"""Drive the Blender add-on headless, as a creator would in Blender: run by tests/e2e/test_addon.py
in its own process (bpy), without the checkout on sys.path.

argv: EXTENSION_ZIP BLEND COORDINATOR OUT_JSON. Installs and enables the extension from the
zip, opens BLEND, makes the render tiny (unsaved: the add-on must save it), sets the panel's
properties, runs Estimate, Submit, follows the job by driving the add-on's timer function, then
Download. Writes what it saw to OUT_JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import bpy

EXTENSION = "bl_ext.user_default.frameproof_blender"


def drive(addon, until, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Call the add-on's timer function (headless Blender runs no timers) until done."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out; panel says: {bpy.context.scene.frameproof.message}")
        addon.tick()
        time.sleep(0.1)
    print(f"[driver] {bpy.context.scene.frameproof.message}", flush=True)


def main() -> None:
    zip_path, blend, address, out_json = sys.argv[1:5]
    seen: dict[str, object] = {}
    result = bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo="user_default", enable_on_install=True)
    seen["install"] = sorted(result)
    seen["enabled"] = EXTENSION in bpy.context.preferences.addons
    addon = sys.modules[EXTENSION]
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    scene.render.resolution_percentage = 20  # tiny renders, saved by the add-on
    scene.cycles.samples = 4
    scene.frame_start, scene.frame_end = 1, 12
    seen["dirty_before"] = bpy.data.is_dirty

    settings = scene.frameproof
    settings.coordinator = address
    settings.use_scene_range = False
    settings.frame_start, settings.frame_end = 5, 2  # backwards: refused before packing
    try:
        seen["bad_range"] = sorted(bpy.ops.frameproof.estimate())
    except RuntimeError as error:  # bpy.ops raises what the operator reported as an ERROR
        seen["bad_range"] = str(error)
    seen["bad_range_dirty"] = bpy.data.is_dirty  # not saved: nothing was done
    settings.frame_start, settings.frame_end = 1, 2
    settings.tier = "3"
    settings.max_cost = 1.0

    saved_at = Path(blend).stat().st_mtime_ns
    seen["estimate_op"] = sorted(bpy.ops.frameproof.estimate())
    seen["saved"] = Path(blend).stat().st_mtime_ns != saved_at
    drive(addon, lambda: bool(settings.estimate) or "failed" in settings.message, 300)
    seen["estimate"] = settings.estimate
    if not settings.estimate:
        raise SystemExit(f"no estimate: {settings.message}")
    seen["estimate_message"] = settings.message

    seen["submit_op"] = sorted(bpy.ops.frameproof.submit())
    drive(addon, lambda: bool(settings.job_id) or "failed" in settings.message, 300)
    seen["job_id"] = settings.job_id
    if not settings.job_id:
        raise SystemExit(f"no job: {settings.message}")
    progress: list[float] = []

    def ended() -> bool:
        if not progress or progress[-1] != settings.progress:
            progress.append(settings.progress)
        return settings.job_state in ("done", "failed", "cancelled")

    drive(addon, ended, 300)
    seen["job_state"] = settings.job_state
    seen["progress"] = progress
    seen["message"] = settings.message

    seen["download_op"] = sorted(bpy.ops.frameproof.download())
    drive(addon, lambda: bool(settings.downloaded) or "failed" in settings.message, 120)
    seen["downloaded"] = settings.downloaded
    seen["download_message"] = settings.message
    seen["library_file"] = sys.modules["frameproof.creator"].__file__

    settings.coordinator = "127.0.0.1:1"  # nothing listens: the panel says so, in one line
    bpy.ops.frameproof.download()
    drive(addon, lambda: "failed" in settings.message, 120)
    seen["unreachable_message"] = settings.message
    Path(out_json).write_text(json.dumps(seen, indent=2))


if __name__ == "__main__":
    main()

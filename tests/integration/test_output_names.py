"""Downloaded frames are named as Blender names them from the scene's output path.

The names are checked against Blender itself: `scene.render.frame_path(frame=n)` in bpy,
run in a child process, for every pattern below.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import PurePosixPath

import pytest
from conftest import SAMPLE_SCENE

from frameproof.output_names import frame_output_path, uses_fallback

# Relative (`//`) patterns as a creator saves them: Blender writes them next to the .blend.
BLENDER_PATTERNS = [
    "//render/shot_####",
    "//render/shot_",
    "//render/frame_",  # the sample scene's own
    "//shot_###.png",
    "//x_#.exr",  # a known image extension is replaced by the frames' format
    "//shot.jpg",  # digits go after it, then .png: Blender's own odd name
    "//a#b/c_##_x##",  # `#` in a folder is not the frame; the last run in the name is
    "//render/SHOT_####.PNG",
    "//deep/er/v2_#####_final",
]
FRAMES = [1, 7, 12345, -3]


def blender_names(patterns: list[str], frames: list[int]) -> dict[str, list[str]]:
    """What Blender itself names each frame, relative to the .blend's folder."""
    script = f"""
import json, os, bpy
bpy.ops.wm.open_mainfile(filepath={str(SAMPLE_SCENE)!r}, load_ui=False, use_scripts=False)
render = bpy.context.scene.render
render.image_settings.file_format = "PNG"
base = os.path.dirname(bpy.data.filepath)
names = {{}}
for pattern in {patterns!r}:
    render.filepath = pattern
    names[pattern] = [os.path.relpath(render.frame_path(frame=f), base) for f in {frames!r}]
print("NAMES " + json.dumps(names))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("NAMES "))
    return json.loads(line[len("NAMES "):])


def test_names_match_blenders_own_frame_path():
    expected = blender_names(BLENDER_PATTERNS, FRAMES)
    for pattern in BLENDER_PATTERNS:
        ours = [str(frame_output_path(pattern, frame, "png")) for frame in FRAMES]
        assert ours == expected[pattern], pattern


@pytest.mark.parametrize(("pattern", "frame", "extension", "name"), [
    ("//render/shot_####", 1, "png", "render/shot_0001.png"),
    ("//render/shot_####", 1, "exr", "render/shot_0001.exr"),
    ("//render/shot_####.png", 2, "exr", "render/shot_0002.exr"),
    ("//render/shot_####", 123456, "png", "render/shot_123456.png"),
    # No file named: the fallback, in the pattern's folder when it is relative.
    ("", 7, "png", "frame_000007.png"),
    ("/tmp/", 7, "png", "frame_000007.png"),  # Blender's default
    ("//render/", 7, "png", "render/frame_000007.png"),
    # A folder on the creator's machine: only the file name is kept.
    ("/home/ana/renders/shot_##", 7, "png", "shot_07.png"),
    ("C:\\renders\\shot_####", 7, "png", "shot_0007.png"),
    # Nothing escapes the download folder.
    ("//../../etc/passwd_#", 7, "png", "etc/passwd_7.png"),
    ("//render\\..\\..\\x_#", 7, "png", "render/x_7.png"),
    ("//..", 7, "png", "frame_000007.png"),
])
def test_names(pattern: str, frame: int, extension: str, name: str):
    path = frame_output_path(pattern, frame, extension)
    assert path == PurePosixPath(name)
    assert not path.is_absolute() and ".." not in path.parts
    assert uses_fallback(pattern) == name.split("/")[-1].startswith("frame_0")


def test_distinct_frames_get_distinct_names():
    for pattern in [*BLENDER_PATTERNS, "", "/tmp/", "//r/x_#"]:
        names = {frame_output_path(pattern, frame, "png") for frame in range(-20, 2000)}
        assert len(names) == 2020, pattern

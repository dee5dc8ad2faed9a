"""Where a downloaded frame goes: the scene's own output path, named as Blender names it.

The creator saved `//render/shot_####` in Output Properties; the farm's frames come back as
`OUT/render/shot_0001.png`, the file Blender itself would have written for frame 1 next to
the .blend (`scene.render.frame_path(frame=1)`, checked in tests/integration/test_output_names.py).
The pattern is read by the coordinator's inspection (a property read, no script of the
scene runs) and travels in `SceneInfo.output_path`. Pure string work: no Blender here.

Blender's rules, as followed here (BLI_path_frame, BKE_image_path_ext_from_imformat):
- the last run of `#` in the file name (never in a folder name) becomes the frame number,
  zero-padded to as many digits as there are `#`; a file name without `#` gets four;
- the frames' own extension at the end stays as typed (`.PNG`); another known image
  extension is replaced by the frames' own (`x_#.exr` rendered as
  PNG is `x_1.png`); anything else gets the extension appended (`shot.jpg` → `shot.jpg0001.png`).
Only what stays inside the download folder is used: `//` paths keep their folders (without
`..`); an absolute path (a folder on the creator's machine, like Blender's default `/tmp/`)
keeps only its file name. A path that names no file (`/tmp/`, `//render/`, or none) falls back
to `frame_000001.png` in that folder.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# The file-name extensions Blender recognises as images (imb_ext_image, lower case).
IMAGE_EXTENSIONS = frozenset({
    ".png", ".tga", ".bmp", ".jpg", ".jpeg", ".sgi", ".rgb", ".rgba", ".tif", ".tiff",
    ".tx", ".jp2", ".j2c", ".hdr", ".dds", ".dpx", ".cin", ".exr", ".psd", ".pdd", ".psb",
    ".webp",
})
FALLBACK_STEM = "frame_"
FALLBACK_DIGITS = 6  # frame_000001.png, the name used before patterns were followed
BLENDER_DIGITS = 4
_HASHES = re.compile(r"#+")


def frame_output_path(pattern: str, frame: int, extension: str) -> PurePosixPath:
    """The frame's file, relative to the download folder, for the scene's output `pattern`."""
    folders, name = _split(pattern)
    if not name:
        return PurePosixPath(*folders, f"{FALLBACK_STEM}{_number(frame, FALLBACK_DIGITS)}"
                                       f".{extension}")
    runs = list(_HASHES.finditer(name))
    if runs:
        last = runs[-1]
        name = name[:last.start()] + _number(frame, len(last.group())) + name[last.end():]
    else:
        name += _number(frame, BLENDER_DIGITS)
    stem, dot, suffix = name.rpartition(".")
    if dot and stem and suffix.lower() == extension.lower():
        return PurePosixPath(*folders, name)  # already the format's (`.PNG` stays as typed)
    if dot and stem and f".{suffix.lower()}" in IMAGE_EXTENSIONS:
        name = stem
    return PurePosixPath(*folders, f"{name}.{extension}")


def uses_fallback(pattern: str) -> bool:
    """True when the scene's output path names no file, so frames get `frame_NNNNNN`."""
    return not _split(pattern)[1]


def _split(pattern: str) -> tuple[list[str], str]:
    """(folders kept under the download folder, file name) of a Blender output path."""
    path = pattern.replace("\\", "/")
    relative = path.startswith("//")
    parts = path[2:].split("/") if relative else path.split("/")
    name = parts[-1]
    if name in (".", ".."):
        name = ""
    folders = [part for part in parts[:-1] if part not in ("", ".", "..")] if relative else []
    if not relative and re.fullmatch(r"[A-Za-z]:", name or ""):
        name = ""  # a bare Windows drive
    return folders, name.replace(":", "_")


def _number(frame: int, digits: int) -> str:
    sign = "-" if frame < 0 else ""  # Blender pads the magnitude: -3 with 4 digits is -0003
    return f"{sign}{abs(frame):0{digits}d}"

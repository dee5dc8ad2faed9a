"""An MP4 preview of a job's approved frames, encoded by FFmpeg from imageio-ffmpeg.

imageio-ffmpeg (the imaging community's maintained FFmpeg wrapper, a static FFmpeg build with
libx264) is optional: `pip install 'frameproof[preview]'`. Its binary is ~160 MB, more than the
rest of a creator's install, so only those who want previews carry it. FFmpeg reads the frames
itself: no image library is needed here. `IMAGEIO_FFMPEG_EXE` may name another ffmpeg.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

INSTALL_HINT = "pip install 'frameproof[preview]' (imageio-ffmpeg)"
MAX_FPS = 240
ENCODE_TIMEOUT_S = 3600.0


class EncoderMissing(RuntimeError):
    """No FFmpeg to encode with: the message says how to install one."""


class EncodeFailed(RuntimeError):
    """FFmpeg ran and refused; the message is its last line of output."""


def find_encoder() -> str:
    """The ffmpeg executable imageio-ffmpeg provides (or IMAGEIO_FFMPEG_EXE names)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise EncoderMissing(f"the MP4 preview needs an encoder: {INSTALL_HINT}") from None
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as error:
        raise EncoderMissing(f"imageio-ffmpeg found no ffmpeg ({error}); reinstall it: "
                             f"{INSTALL_HINT}") from None
    if not os.access(exe, os.X_OK):
        raise EncoderMissing(f"{exe} is not an executable ffmpeg; {INSTALL_HINT}")
    return exe


def encode_mp4(frames: Sequence[Path], out: Path, *, fps: float, work: Path,
               encoder: str | None = None) -> Path:
    """Encode `frames` (image files, in order) into an H.264 MP4 at `fps`.

    The frames are linked under `work` as a numbered sequence (gaps in frame numbers play as
    consecutive frames); odd sizes are padded to even ones, which H.264 in yuv420p needs.
    """
    if not frames:
        raise ValueError("no frames to encode")
    exe = encoder or find_encoder()
    suffix = frames[0].suffix
    for index, frame in enumerate(frames):
        link = work / f"{index:06d}{suffix}"
        try:
            os.link(frame, link)
        except OSError:
            link.write_bytes(frame.read_bytes())
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        exe, "-hide_banner", "-loglevel", "error", "-y",
        "-framerate", f"{fps:g}", "-i", str(work / f"%06d{suffix}"),
        "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=ENCODE_TIMEOUT_S,
                            check=False)
    if result.returncode != 0 or not out.is_file():
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise EncodeFailed(lines[-1] if lines else f"ffmpeg exited {result.returncode}")
    return out

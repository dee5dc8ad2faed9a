"""Small PNG thumbnails of frames, made once per image and kept on disk.

A frame's bytes come from a node, so decoding is defensive: the image's size is read from its
PNG header before anything is decoded (a 2-pixel file that claims 100,000 x 100,000 pixels
gets a placeholder, not a 40 GB allocation), and EXR frames are never decoded in the
coordinator's process (OpenCV ships its EXR reader disabled for safety; the verifier decodes
EXR in its own process): they get a placeholder. The cache is keyed by the image's sha256, so
a frame re-rendered after a rejection gets a new thumbnail and a cached one never goes stale.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import cv2
import numpy as np

from coordinator.blobstore import BlobStore

THUMB_WIDTH = 192  # pixels; height follows the frame's aspect ratio
MAX_SOURCE_PIXELS = 64_000_000  # larger frames get a placeholder instead of a decode
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Thumbnails:
    """Thumbnails of frame blobs under `cache_dir`, made on first request."""

    def __init__(self, blobs: BlobStore, cache_dir: Path) -> None:
        self.blobs = blobs
        self.cache_dir = cache_dir
        self._placeholders: dict[str, bytes] = {}
        self._lock = threading.Lock()  # one decode at a time: thumbnails must not starve RPCs

    def png(self, sha256: str, extension: str) -> bytes:
        """The thumbnail's PNG bytes (a placeholder for EXR, missing or odd images)."""
        cached = self.cache_dir / sha256[:2] / f"{sha256}.png"
        if cached.is_file():
            return cached.read_bytes()
        if extension.lower().lstrip(".") == "exr":
            return self.placeholder("EXR")
        if not self.blobs.has(sha256):
            return self.placeholder("missing")
        with self._lock:
            data = _thumbnail(self.blobs.path(sha256))
        if data is None:
            return self.placeholder("no preview")
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
        part.write_bytes(data)
        os.replace(part, cached)
        return data

    def placeholder(self, label: str) -> bytes:
        """A grey tile that says why there is no picture."""
        if label not in self._placeholders:
            image = np.full((108, THUMB_WIDTH, 3), 58, np.uint8)
            font = cv2.FONT_HERSHEY_SIMPLEX
            (width, height), _ = cv2.getTextSize(label, font, 0.6, 1)
            cv2.putText(image, label, ((THUMB_WIDTH - width) // 2, (108 + height) // 2), font,
                        0.6, (200, 200, 200), 1, cv2.LINE_AA)
            self._placeholders[label] = _encode(image)
        return self._placeholders[label]


def png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk, or None if it is not a PNG."""
    with path.open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != PNG_MAGIC or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _thumbnail(path: Path) -> bytes | None:
    size = png_size(path)
    if size is None or not 0 < size[0] * size[1] <= MAX_SOURCE_PIXELS:
        return None
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.dtype != np.uint8:  # 16-bit PNG
        image = (image / 257).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:  # composite on the page's dark background
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = (image[:, :, :3] * alpha + 30 * (1 - alpha)).astype(np.uint8)
    height, width = image.shape[:2]
    if width > THUMB_WIDTH:
        new_height = max(1, round(height * THUMB_WIDTH / width))
        image = cv2.resize(image, (THUMB_WIDTH, new_height), interpolation=cv2.INTER_AREA)
    return _encode(image)


def _encode(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError("could not encode a thumbnail")
    return data.tobytes()

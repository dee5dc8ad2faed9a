"""Image decoding and comparison on decoded pixels (never file bytes: Blender's metadata
differs per run).

Frames come from untrusted nodes, so nothing is decoded before its header has been read and
bounded: file size, dimensions (and, when the caller knows them, the job's exact size),
channels. PNG is decoded by OpenCV; OpenEXR by the ASWF's own `OpenEXR` bindings (OpenCV's EXR
reader ships disabled in the PyPI wheels, for its security record).

EXR frames hold linear float data. :func:`load_exr` returns it as it is (exact mode compares
it bit for bit); :func:`load_image` returns a display view of it, clipped to [0, 1] and
sRGB-encoded, on which the statistical metrics and the 8-bit checks run as they do for PNG.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXR_MAGIC = b"\x76\x2f\x31\x01"
MAX_IMAGE_PIXELS = 64_000_000  # 8K x 8K: larger frames are refused before any decode
MAX_IMAGE_BYTES = 1 << 30  # a 64 Mpx RGBA float32 frame, uncompressed
MAX_EXR_CHANNELS = 8  # Blender writes RGBA; a file with hundreds of channels is an attack


class ImageDecodeError(ValueError):
    """The file is not an image we can read (or will not read: the message says why)."""


def is_exr(path: Path) -> bool:
    """Whether the file starts with OpenEXR's magic number (names are the node's to choose)."""
    with Path(path).open("rb") as f:
        return f.read(4) == EXR_MAGIC


def load_image(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image to float32 in [0, 1], channels last, alpha dropped.

    ``expected_size`` (width, height): refuse any other size before decoding. EXR comes back
    as its display view (:func:`exr_view`).
    """
    path = Path(path)
    head = _head(path)
    if head.startswith(EXR_MAGIC):
        return exr_view(load_exr(path, expected_size))
    if head.startswith(PNG_MAGIC):
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise ImageDecodeError(f"{path.name}: a PNG without its IHDR header")
        width, height = struct.unpack(">II", head[16:24])
        _check_size(path, width, height, expected_size)
    else:
        raise ImageDecodeError(f"{path.name} is neither a PNG nor an OpenEXR image")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageDecodeError(f"{path.name} does not decode as an image")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    scale = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    return image.astype(np.float32) / scale


def load_exr(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """An OpenEXR frame's linear RGB as float32 (height, width, 3), in OpenCV's BGR order
    like :func:`load_image`, after its header passed the bounds; alpha dropped."""
    import OpenEXR  # lazy: only the verifier decodes EXR

    path = Path(path)
    _head(path)  # the file size bound
    try:
        header_file = OpenEXR.File(str(path), header_only=True)
        parts = header_file.parts
        if len(parts) != 1:
            raise ImageDecodeError(f"{path.name}: {len(parts)} parts; a frame has one")
        header = header_file.header()
        if header.get("type") not in (OpenEXR.scanlineimage, OpenEXR.tiledimage):
            raise ImageDecodeError(f"{path.name}: not a flat scanline or tiled image")
        low, high = header["dataWindow"]
        width, height = int(high[0]) - int(low[0]) + 1, int(high[1]) - int(low[1]) + 1
        channels = header["channels"]
    except ImageDecodeError:
        raise
    except Exception as error:  # the bindings raise plain RuntimeError/KeyError on bad files
        raise ImageDecodeError(f"{path.name}: not a readable OpenEXR header ({error})") from None
    _check_size(path, width, height, expected_size)
    names = {channel.name for channel in channels}
    if len(names) > MAX_EXR_CHANNELS or not {"R", "G", "B"} <= names:
        raise ImageDecodeError(f"{path.name}: channels {sorted(names)[:MAX_EXR_CHANNELS]}; "
                               "a frame has R, G, B (and A)")
    if any(channel.xSampling != 1 or channel.ySampling != 1 for channel in channels):
        raise ImageDecodeError(f"{path.name}: subsampled channels; a frame has none")
    try:
        pixels = OpenEXR.File(str(path), separate_channels=True).channels()
        planes = [np.asarray(pixels[name].pixels) for name in ("B", "G", "R")]
    except Exception as error:  # truncated or corrupt chunks
        raise ImageDecodeError(f"{path.name}: its pixels do not decode ({error})") from None
    for plane in planes:
        if plane.shape != (height, width) or plane.dtype not in (np.float16, np.float32):
            raise ImageDecodeError(f"{path.name}: a channel of {plane.dtype} {plane.shape}; "
                                   f"expected half or float {height}x{width}")
    return np.stack(planes, axis=2).astype(np.float32)


# A denoised frame's passes file: one part per pass, each a few channels.
MAX_PASS_PARTS = 8
MAX_PASS_CHANNELS = 4
PASS_CHANNELS = {  # what the denoiser reads, in the order load_passes returns (BGR like cv2)
    "Noisy Image": ("B", "G", "R"),
    "Denoising Albedo": ("B", "G", "R"),
    "Denoising Normal": ("Z", "Y", "X"),
}


@dataclass(frozen=True)
class Passes:
    """The denoiser's inputs from a node's passes file: linear float32 (height, width, 3)."""

    noisy: np.ndarray
    albedo: np.ndarray
    normal: np.ndarray


def load_passes(path: Path, expected_size: tuple[int, int], *,
                noisy: str = "Noisy Image") -> Passes:
    """A multilayer EXR of a denoised frame's passes (``Layer.Pass`` parts, as Blender writes
    them), bounded before decoding: at most :data:`MAX_PASS_PARTS` parts of at most
    :data:`MAX_PASS_CHANNELS` full-resolution float channels, each the job's size; exactly one
    part per pass the denoiser reads (:data:`PASS_CHANNELS`). ``noisy``: the part holding the
    noisy image (``Combined`` in the verifier's own renders with the denoiser off)."""
    import OpenEXR  # lazy: only the verifier decodes EXR

    path = Path(path)
    _head(path)
    try:
        parts = OpenEXR.File(str(path), header_only=True).parts
        if not 0 < len(parts) <= MAX_PASS_PARTS:
            raise ImageDecodeError(f"{path.name}: {len(parts)} parts; a passes file has 1 to "
                                   f"{MAX_PASS_PARTS}")
        found: dict[str, int] = {}
        for index, part in enumerate(parts):
            header = part.header
            if header.get("type") not in (OpenEXR.scanlineimage, OpenEXR.tiledimage):
                raise ImageDecodeError(f"{path.name}: part {index} is not a flat image")
            low, high = header["dataWindow"]
            width, height = int(high[0]) - int(low[0]) + 1, int(high[1]) - int(low[1]) + 1
            _check_size(path, width, height, expected_size)
            channels = header["channels"]
            if len(channels) > MAX_PASS_CHANNELS or any(
                    c.xSampling != 1 or c.ySampling != 1 for c in channels):
                raise ImageDecodeError(f"{path.name}: part {index} has {len(channels)} "
                                       "channels or subsampled ones")
            name = part.name().rsplit(".", 1)[-1] if "." in part.name() else part.name()
            name = "Noisy Image" if name == noisy else name
            if name in PASS_CHANNELS:
                if name in found:
                    raise ImageDecodeError(f"{path.name}: two {name} passes")
                found[name] = index
    except ImageDecodeError:
        raise
    except Exception as error:  # the bindings raise plain RuntimeError/KeyError on bad files
        raise ImageDecodeError(f"{path.name}: not a readable OpenEXR header ({error})") from None
    missing = [name for name in PASS_CHANNELS if name not in found]
    if missing:
        raise ImageDecodeError(f"{path.name}: no {', '.join(missing)} pass")
    try:
        decoded = OpenEXR.File(str(path), separate_channels=True).parts
        planes: dict[str, np.ndarray] = {}
        for name, order in PASS_CHANNELS.items():
            part = decoded[found[name]]
            prefix = part.name() + "."
            channels = part.channels
            planes[name] = np.stack(
                [np.asarray(channels[prefix + c].pixels) for c in order], axis=2)
    except Exception as error:  # truncated or corrupt chunks, a missing channel
        raise ImageDecodeError(f"{path.name}: its passes do not decode ({error})") from None
    width, height = expected_size
    for name, plane in planes.items():
        if plane.shape != (height, width, 3) or plane.dtype not in (np.float16, np.float32):
            raise ImageDecodeError(f"{path.name}: {name} is {plane.dtype} {plane.shape}; "
                                   f"expected float {height}x{width}x3")
    return Passes(*(planes[name].astype(np.float32) for name in PASS_CHANNELS))


def exr_view(linear: np.ndarray) -> np.ndarray:
    """Display view of linear float pixels: non-finite values as 0, clipped to [0, 1],
    sRGB-encoded; float32 in [0, 1] like a decoded PNG (what the statistical metrics read)."""
    x = np.clip(np.nan_to_num(linear, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    x = x.astype(np.float64)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return srgb.astype(np.float32)


def _head(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageDecodeError(f"{path.name}: {size} bytes, over the "
                                   f"{MAX_IMAGE_BYTES} a frame may have")
        with path.open("rb") as f:
            return f.read(32)
    except OSError as error:
        raise ImageDecodeError(f"{path.name} cannot be read: {error}") from None


def _check_size(path: Path, width: int, height: int,
                expected_size: tuple[int, int] | None) -> None:
    if width <= 0 or height <= 0 or width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(f"{path.name} declares {width}x{height} pixels; at most "
                               f"{MAX_IMAGE_PIXELS} are decoded")
    if expected_size is not None and (width, height) != tuple(expected_size):
        raise ImageDecodeError(f"size {width}x{height} differs from the job's "
                               f"{expected_size[0]}x{expected_size[1]}")


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two same-sized images in [0, 1]; 1.0 is identical."""
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: {a.shape} vs {b.shape}")
    if min(a.shape[:2]) < 7:
        raise ValueError("images smaller than 7x7 pixels cannot be compared with SSIM")
    channel_axis = 2 if a.ndim == 3 else None
    from skimage.metrics import structural_similarity  # scipy: not at a verifier's start

    return float(structural_similarity(a, b, data_range=1.0, channel_axis=channel_axis))

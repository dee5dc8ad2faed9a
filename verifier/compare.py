"""Image comparison on decoded pixels (never file bytes: Blender's metadata differs per run)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage.metrics import structural_similarity


class ImageDecodeError(ValueError):
    """The file is not an image we can read."""


def load_image(path: Path) -> np.ndarray:
    """Decode an image to float32 in [0, 1], channels last, alpha dropped."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageDecodeError(f"{path} does not decode as an image")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    scale = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    return image.astype(np.float32) / scale


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two same-sized images in [0, 1]; 1.0 is identical."""
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: {a.shape} vs {b.shape}")
    if min(a.shape[:2]) < 7:
        raise ValueError("images smaller than 7x7 pixels cannot be compared with SSIM")
    channel_axis = 2 if a.ndim == 3 else None
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=channel_axis))

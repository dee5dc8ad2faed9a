"""Which pixels of a frame Blender renders and where they land in the file it writes.

A scene saved with a Render Region (Blender's border) renders only that part of the frame:
with Crop to Render Region the file holds just the region, otherwise the whole frame with
everything outside the region left empty (transparent black). The farm renders the file as
saved, so the node, the verifier and the coordinator's size checks all need the same layout,
computed here as Blender computes it (bpy 5.0.1, checked pixel for pixel in
tests/integration/test_render_region.py): each edge is the float32 product of the fraction
and the frame's size, truncated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class RenderRegion:
    """Blender's Render Region as saved: fractions of the frame, y from the bottom.

    ``crop``: the file holds only the region; otherwise the whole frame, empty outside it."""

    min_x: float
    max_x: float
    min_y: float
    max_y: float
    crop: bool = False


@dataclass(frozen=True)
class Rect:
    """A pixel rectangle, top-left origin."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class FrameLayout:
    """A frame as rendered: the file's size, where its rendered pixels are in it (``area``)
    and where that area's top-left pixel is in the whole frame (``origin``)."""

    width: int  # of the file written
    height: int
    area: Rect
    origin: tuple[int, int]

    @property
    def whole(self) -> bool:
        """The file holds the whole frame, all of it rendered (no Render Region)."""
        return self.area == Rect(0, 0, self.width, self.height) and self.origin == (0, 0)


class EmptyRegion(ValueError):
    """The Render Region holds no whole pixel at this frame size: Blender refuses to render."""


def frame_layout(width: int, height: int, region: RenderRegion | None) -> FrameLayout:
    """The layout of a ``width`` x ``height`` frame (already scaled by the percentage)."""
    if region is None:
        return FrameLayout(width, height, Rect(0, 0, width, height), (0, 0))
    x0, x1 = _edge(region.min_x, width), _edge(region.max_x, width)
    y0, y1 = _edge(region.min_y, height), _edge(region.max_y, height)
    w, h = x1 - x0, y1 - y0
    if w < 1 or h < 1:
        raise EmptyRegion(
            f"the scene's Render Region ({region.min_x:g}-{region.max_x:g} x "
            f"{region.min_y:g}-{region.max_y:g} of the frame) holds no pixel of a "
            f"{width}x{height} frame: widen it in Blender or turn it off")
    top = height - y1  # Blender counts rows from the bottom
    if region.crop:
        return FrameLayout(w, h, Rect(0, 0, w, h), (x0, top))
    return FrameLayout(width, height, Rect(x0, top, w, h), (x0, top))


def _edge(fraction: float, size: int) -> int:
    """Blender's ``(int)(border * size)`` in float32 arithmetic."""
    return int(_f32(_f32(fraction) * size))


def _f32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])

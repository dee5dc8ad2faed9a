"""Where to check a frame: tile choice and pixel ↔ Blender-border conversion.

Tiles are chosen with a secret ``random.Random`` *after* the node has committed to its frame,
so a node cannot know which pixels will be re-rendered. Positions are stratified over the frame
as a Latin hypercube (``n`` tiles: one in each of ``n`` column bands and each of ``n`` row bands),
so every half of the frame, left, right, top or bottom, holds at least ``n // 2`` tiles and a frame
that is only partly rendered properly is still hit (a plain grid left a whole half unchecked in
6% of draws). Tiles with no detail are skipped: a flat region tells nothing about samples, shifts
or frame swaps.

Blender's border is in fractions of the frame with Y running bottom-up and truncates the
fraction x size product; ``(px + 0.25) / W`` lands safely inside the intended pixel (measured:
the naive ``px / W`` gave a 65-row tile for a 64-row request).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import cv2
import numpy as np

MAX_TILE = 128  # the measured sweet spot: 3 tiles of 128² ≈ 4% of a 1080p frame
MIN_TILE = 16  # SSIM needs a 7x7 window and noise estimates need some hundreds of pixels
FLAT_STD = 0.01  # std of the blurred luminance in [0, 1] below which a tile is "flat"


@dataclass(frozen=True)
class Tile:
    """A pixel rectangle, top-left origin, as numpy indexes it: ``image[y:y+h, x:x+w]``."""

    x: int
    y: int
    w: int
    h: int


def default_tile_size(width: int, height: int) -> int:
    """128 px for HD frames, 64 px for small ones, never below :data:`MIN_TILE`."""
    short = min(width, height)
    if short >= 512:
        return MAX_TILE
    if short >= 160:
        return 64
    return max(MIN_TILE, (short // 2) // 8 * 8)


def to_border(tile: Tile, width: int, height: int) -> tuple[float, float, float, float]:
    """Blender border ``(min_x, max_x, min_y, max_y)`` that renders exactly ``tile``.

    Blender truncates ``fraction x size``, so a quarter pixel is added to every edge; Y is
    flipped because Blender counts rows from the bottom of the frame.
    """
    _check_inside(tile, width, height)
    min_x = (tile.x + 0.25) / width
    max_x = (tile.x + tile.w + 0.25) / width
    min_y = (height - (tile.y + tile.h) + 0.25) / height
    max_y = (height - tile.y + 0.25) / height
    return min_x, min(max_x, 1.0), min_y, min(max_y, 1.0)


def crop(image: np.ndarray, tile: Tile) -> np.ndarray:
    """The tile's pixels (a view); asserts the tile lies inside the image."""
    height, width = image.shape[:2]
    _check_inside(tile, width, height)
    out = image[tile.y : tile.y + tile.h, tile.x : tile.x + tile.w]
    assert out.shape[:2] == (tile.h, tile.w), (out.shape, tile)
    return out


def detail(image: np.ndarray, tile: Tile) -> float:
    """Std of the blurred luminance: structure that survives the blur, not render noise."""
    patch = crop(image, tile)
    integer = np.issubdtype(patch.dtype, np.integer)
    scale = float(np.iinfo(patch.dtype).max) if integer else 1.0
    if patch.ndim == 3:
        patch = patch[..., :3].mean(axis=2)
    patch = patch.astype(np.float32) / scale
    if not integer:  # [0, 1] display values, or linear float data whose highlights pass 1
        patch = np.clip(patch, 0.0, 1.0)
    return float(cv2.GaussianBlur(patch, (0, 0), 2.0).std())


def choose_tiles(
    image: np.ndarray,
    count: int,
    rng: random.Random,
    *,
    size: int | None = None,
    flat_std: float = FLAT_STD,
    tries: int = 24,
) -> list[Tile]:
    """Pick ``count`` random, non-flat tiles of the node's frame, stratified as a Latin hypercube.

    ``image`` is the node's decoded frame (HxW or HxWxC). Tile ``i`` has its centre in column
    band ``i`` and row band ``perm[i]`` (a secret permutation). A cell with only flat tiles falls
    back to anywhere in the frame; a frame with no detail at all gets no tiles (the cheap checks
    judge it). Tiles never overlap the frame edge.
    """
    height, width = image.shape[:2]
    size = size or default_tile_size(width, height)
    size = min(size, width, height)
    assert size >= MIN_TILE, f"frame {width}x{height} is too small for {MIN_TILE}px tiles"
    if count <= 0:
        return []
    rows = list(range(count))
    rng.shuffle(rows)
    chosen: list[Tile] = []
    for column, row in enumerate(rows):
        cell = (column / count, (column + 1) / count, row / count, (row + 1) / count)
        tile = _pick(image, rng, size, tries, flat_std, chosen, cell)
        if tile is None:
            tile = _pick(image, rng, size, tries * 2, flat_std, chosen, (0.0, 1.0, 0.0, 1.0))
        if tile is not None:
            chosen.append(tile)
    return chosen


def _pick(
    image: np.ndarray,
    rng: random.Random,
    size: int,
    tries: int,
    flat_std: float,
    taken: list[Tile],
    cell: tuple[float, float, float, float],
) -> Tile | None:
    """A random non-flat tile whose centre lies in ``cell`` (x0, x1, y0, y1 as fractions)."""
    height, width = image.shape[:2]
    x0, x1, y0, y1 = cell
    for _ in range(tries):
        cx = rng.uniform(x0 * width, x1 * width)
        cy = rng.uniform(y0 * height, y1 * height)
        x = min(max(0, int(cx - size / 2)), width - size)
        y = min(max(0, int(cy - size / 2)), height - size)
        tile = Tile(x, y, size, size)
        if tile in taken:
            continue
        if detail(image, tile) >= flat_std:
            return tile
    return None


def _check_inside(tile: Tile, width: int, height: int) -> None:
    ok = tile.w > 0 and tile.h > 0 and tile.x >= 0 and tile.y >= 0
    ok = ok and tile.x + tile.w <= width and tile.y + tile.h <= height
    assert ok, f"tile {tile} is not inside a {width}x{height} frame"

"""Frame specifications: parse what creators type, print it back normalised, cut it into tasks."""

from __future__ import annotations

# Parsing and printing live with the creator library (which refuses a bad range before
# packing): one implementation for both sides.
from frameproof.frames import FrameSpecError, format_frames, parse_frames

__all__ = ["FrameSpecError", "chunk_frames", "format_frames", "parse_frames"]


def chunk_frames(frames: list[int], chunk_size: int) -> list[list[int]]:
    """Cut sorted frames into tasks of at most chunk_size consecutive frames.

    A chunk never spans a gap, so one task renders one contiguous stretch and a
    node keeps its scene state (caches, simulations) warm across it.
    """
    if chunk_size < 1:
        raise FrameSpecError("chunk size must be at least 1")
    chunks: list[list[int]] = []
    for start, end in _runs(frames):
        for first in range(start, end + 1, chunk_size):
            chunks.append(list(range(first, min(first + chunk_size, end + 1))))
    return chunks


def _runs(frames: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for frame in frames:
        if runs and frame == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], frame)
        else:
            runs.append((frame, frame))
    return runs

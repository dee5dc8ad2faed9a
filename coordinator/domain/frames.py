"""Frame specifications: parse what creators type, print it back normalised, cut it into tasks."""

from __future__ import annotations

# Parsing lives with the creator library, which refuses a bad range before packing.
from frameproof.frames import FrameSpecError, parse_frames

__all__ = ["FrameSpecError", "chunk_frames", "format_frames", "parse_frames"]


def format_frames(frames: list[int]) -> str:
    """The shortest spec for a sorted list of frames: [1,2,3,7] -> "1-3,7"."""
    parts: list[str] = []
    for start, end in _runs(frames):
        parts.append(str(start) if start == end else f"{start}-{end}")
    return ",".join(parts)


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

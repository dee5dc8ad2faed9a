"""Frame specifications as creators type them ("1-250", "1,5,10-20"): parsed the same way by
the creator library (to refuse a bad range before packing) and by the coordinator."""

from __future__ import annotations

MAX_FRAMES_PER_JOB = 100_000
MAX_FRAME_NUMBER = 1_048_574  # Blender's own limit (MAXFRAME)


class FrameSpecError(ValueError):
    """A frame specification a creator can fix: the message says how."""


def parse_frames(spec: str) -> list[int]:
    """Parse "1-250", "1,5,10-20" or "7" into a sorted list of distinct frames."""
    text = spec.replace(" ", "")
    if not text:
        raise FrameSpecError("the frame list is empty; give e.g. 1-250 or 1,5,10-20")
    frames: set[int] = set()
    for part in text.split(","):
        if not part:
            raise FrameSpecError(f"empty item in frame list {spec!r}")
        first, sep, last = part.partition("-")
        start = _frame_number(first, spec)
        end = _frame_number(last, spec) if sep else start
        if end < start:
            raise FrameSpecError(f"range {part!r} runs backwards; write {end}-{start}")
        if end - start + 1 + len(frames) > MAX_FRAMES_PER_JOB:
            raise FrameSpecError(f"more than {MAX_FRAMES_PER_JOB} frames in one job")
        frames.update(range(start, end + 1))
    return sorted(frames)


def format_frames(frames: list[int]) -> str:
    """The shortest spec for sorted distinct frames: [1, 2, 3, 7] -> "1-3,7"."""
    runs: list[list[int]] = []
    for frame in frames:
        if runs and frame == runs[-1][1] + 1:
            runs[-1][1] = frame
        else:
            runs.append([frame, frame])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _frame_number(token: str, spec: str) -> int:
    if not token.isdigit():
        raise FrameSpecError(
            f"{token!r} in {spec!r} is not a frame number; use e.g. 1-250 or 1,5,10-20"
        )
    number = int(token)
    if number > MAX_FRAME_NUMBER:
        raise FrameSpecError(f"frame {number} is beyond Blender's limit of {MAX_FRAME_NUMBER}")
    return number

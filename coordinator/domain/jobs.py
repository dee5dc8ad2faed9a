"""The job compiler: a creator's request and the scene's facts become frames and tasks.

Like Flamenco's job compilers, this decides everything about a new job before anything is
stored or paid: which frames, cut into which tasks, at which tier. The servicer then opens the
escrow and the store writes the job and its tasks in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.domain.errors import InvalidRequest
from coordinator.domain.frames import FrameSpecError, chunk_frames, format_frames, parse_frames
from coordinator.domain.reputation import DEFAULT_JOB_TIER, JOB_TIERS

MAX_CHUNK_SIZE = 1000
MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class JobRequest:
    """What the creator asked for, as on the wire (0 and "" mean the defaults)."""

    frames: str = ""  # a frame spec ("1-250", "1,5,10-20"); "" is the scene's own range
    chunk_size: int = 0  # consecutive frames per task; 0 is 1
    tier: int = 0  # 1 trusted nodes only .. 3 any verified node; 0 is 3
    name: str = ""  # "" is the scene's main file


@dataclass(frozen=True)
class SceneRange:
    """The frames the saved scene renders (its frame_start..frame_end)."""

    first: int
    last: int


@dataclass(frozen=True)
class CompiledJob:
    name: str
    frames: tuple[int, ...]
    frames_spec: str  # the frames, normalised ("1-3,7")
    chunk_size: int
    tier: int
    tasks: tuple[tuple[int, ...], ...]  # each task's frames, in order


def check_request(request: JobRequest) -> None:
    """Refuse what is wrong with the request alone, before the scene is even looked at."""
    if not 0 <= request.chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidRequest(f"chunk_size must be 1..{MAX_CHUNK_SIZE}")
    check_tier(request.tier, "tier must be 1 (trusted nodes), 2 (priority) or 3 (economy)")
    if len(request.name) > MAX_NAME_LENGTH:
        raise InvalidRequest("job name is too long")


def check_tier(tier: int, message: str = "tier must be 1, 2 or 3") -> int:
    """The job's tier number (0 on the wire is the default, 3)."""
    if tier != 0 and tier not in JOB_TIERS:
        raise InvalidRequest(message)
    return tier or DEFAULT_JOB_TIER


def job_frames(spec: str, scene: SceneRange) -> list[int]:
    """The job's frames: the creator's spec, or the scene's own range; never outside it."""
    if not spec.strip():
        return list(range(scene.first, scene.last + 1))
    try:
        frames = parse_frames(spec)
    except FrameSpecError as error:
        raise InvalidRequest(str(error)) from error
    outside = [frame for frame in frames if not scene.first <= frame <= scene.last]
    if outside:
        raise InvalidRequest(
            f"frames {outside[0]}..{outside[-1]} are outside the scene's range "
            f"{scene.first}-{scene.last}"
        )
    return frames


def compile_job(request: JobRequest, frames: list[int], *, default_name: str) -> CompiledJob:
    """The job to store: its frames cut into tasks of `chunk_size` consecutive frames."""
    check_request(request)
    chunk_size = request.chunk_size or 1
    return CompiledJob(
        name=request.name or default_name,
        frames=tuple(frames),
        frames_spec=format_frames(frames),
        chunk_size=chunk_size,
        tier=check_tier(request.tier),
        tasks=tuple(tuple(chunk) for chunk in chunk_frames(frames, chunk_size)),
    )


def reserved_frame_price(escrow_tokens_for_estimate: int, frames: int) -> int:
    """Tokens a lease reserves per frame until real charges say better: the estimate's
    escrow spread over the job's frames (rounded down)."""
    return escrow_tokens_for_estimate // max(1, frames)

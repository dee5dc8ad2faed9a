"""A job's render settings as the Blender worker takes them, for node and verifier alike."""

from __future__ import annotations

from frameproof.blender.worker import RenderSettings
from frameproof.limits import passes_limit_bytes
from frameproof.region import FrameLayout, RenderRegion, frame_layout
from frameproof.v1 import farm_pb2 as pb

FORMATS = {pb.OUTPUT_FORMAT_EXR: ("EXR", "exr")}
DEFAULT_FORMAT = ("PNG", "png")


def from_proto(settings: pb.RenderSettings) -> RenderSettings:
    return RenderSettings(
        engine=settings.engine,
        samples=settings.samples,
        resolution_x=settings.resolution_x,
        resolution_y=settings.resolution_y,
        resolution_percentage=settings.resolution_percentage,
        output_format=FORMATS.get(settings.output_format, DEFAULT_FORMAT)[0],
        seed=settings.seed if settings.HasField("seed") else None,
        region=region_of(settings),
    )


def region_of(settings: pb.RenderSettings) -> RenderRegion | None:
    """The job's Render Region (the scene's, as inspected), or None for whole frames."""
    if not settings.HasField("region"):
        return None
    r = settings.region
    return RenderRegion(r.min_x, r.max_x, r.min_y, r.max_y, r.crop)


def extension(settings: pb.RenderSettings) -> str:
    return FORMATS.get(settings.output_format, DEFAULT_FORMAT)[1]


def frame_size(settings: pb.RenderSettings) -> tuple[int, int]:
    """Pixels of the whole frame: resolution scaled by the percentage, as Blender does (a
    Render Region may render less: :func:`layout`)."""
    scale = settings.resolution_percentage / 100
    return int(settings.resolution_x * scale), int(settings.resolution_y * scale)


def layout(settings: pb.RenderSettings) -> FrameLayout:
    """The file a frame of these settings is (its size) and where its rendered pixels are.
    Raises ``frameproof.region.EmptyRegion`` for a region with no pixel at this size."""
    return frame_layout(*frame_size(settings), region_of(settings))


def passes_limit(settings: pb.RenderSettings) -> int:
    """The largest passes file (``FrameOutput.passes``) a frame of these settings may have:
    the coordinator refuses a larger one and the verifier never downloads more."""
    width, height = frame_size(settings)
    if not width or not height:  # settings without a percentage: the full resolution
        width, height = settings.resolution_x, settings.resolution_y
    return passes_limit_bytes(width, height)

"""A job's render settings as the Blender worker takes them, for node and verifier alike."""

from __future__ import annotations

from frameproof.blender.worker import RenderSettings
from frameproof.limits import passes_limit_bytes
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
    )


def extension(settings: pb.RenderSettings) -> str:
    return FORMATS.get(settings.output_format, DEFAULT_FORMAT)[1]


def frame_size(settings: pb.RenderSettings) -> tuple[int, int]:
    """Pixels of the rendered frame: resolution scaled by the percentage, as Blender does."""
    scale = settings.resolution_percentage / 100
    return int(settings.resolution_x * scale), int(settings.resolution_y * scale)


def passes_limit(settings: pb.RenderSettings) -> int:
    """The largest passes file (``FrameOutput.passes``) a frame of these settings may have:
    the coordinator refuses a larger one and the verifier never downloads more."""
    width, height = frame_size(settings)
    if not width or not height:  # settings without a percentage: the full resolution
        width, height = settings.resolution_x, settings.resolution_y
    return passes_limit_bytes(width, height)

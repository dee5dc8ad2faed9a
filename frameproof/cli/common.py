"""What every subcommand shares: the coordinator connection, output and errors."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import grpc
from rich.console import Console

from frameproof.creator import CoordinatorUnavailable, CreatorError
from frameproof.v1 import farm_pb2 as pb
from frameproof.wallet import money  # noqa: F401  (the CLI modules' one money unit)

out = Console()
err = Console(stderr=True)

STATE_NAMES = {
    pb.JOB_STATE_QUEUED: "queued",
    pb.JOB_STATE_RENDERING: "rendering",
    pb.JOB_STATE_DONE: "done",
    pb.JOB_STATE_FAILED: "failed",
    pb.JOB_STATE_CANCELLED: "cancelled",
    pb.JOB_STATE_PAUSED: "paused",
}
FRAME_STATE_NAMES = {
    pb.FRAME_STATE_QUEUED: "queued",
    pb.FRAME_STATE_RENDERING: "rendering",
    pb.FRAME_STATE_VERIFYING: "verifying",
    pb.FRAME_STATE_DONE: "done",
    pb.FRAME_STATE_FAILED: "failed",
    pb.FRAME_STATE_CANCELLED: "cancelled",
    pb.FRAME_STATE_UNPAID: "unpaid",
}
ENDED = {pb.JOB_STATE_DONE, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


class CliError(Exception):
    """A failure to report in one line, with exit status 1 (2 for usage errors)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def fail(message: str, status: int = 1) -> NoReturn:
    raise CliError(message, status)


def explain_rpc_error(error: grpc.RpcError, address: str) -> str:
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return (f"cannot reach the coordinator at {address}; start one with "
                "`render-coordinator serve` or set --coordinator / FRAMEPROOF_COORDINATOR")
    return f"{error.details()} ({code.name})"


def describe_creator_error(error: CreatorError) -> str:
    """The library's one-line message, with the CLI's hint where there is one."""
    if isinstance(error, CoordinatorUnavailable):
        return (f"cannot reach the coordinator at {error.address}; start one with "
                "`render-coordinator serve` or set --coordinator / FRAMEPROOF_COORDINATOR")
    return str(error)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def job_json(job: pb.Job) -> dict[str, Any]:
    frames = job.frames
    return {
        "job_id": job.job_id,
        "name": job.name,
        "scene_id": job.scene_id,
        "state": STATE_NAMES.get(job.state, "unknown"),
        "frames_spec": job.frames_spec,
        "chunk_size": job.chunk_size,
        "tier": job.tier,
        "frames": {
            "total": frames.total,
            "queued": frames.queued,
            "rendering": frames.rendering,
            "verifying": frames.verifying,
            "done": frames.done,
            "failed": frames.failed,
            "cancelled": frames.cancelled,
        },
        "settings": {
            "engine": job.settings.engine,
            "samples": job.settings.samples,
            "resolution_x": job.settings.resolution_x,
            "resolution_y": job.settings.resolution_y,
            "resolution_percentage": job.settings.resolution_percentage,
            "output_format": "exr" if job.settings.output_format == pb.OUTPUT_FORMAT_EXR
            else "png",
            "region": ({"min_x": job.settings.region.min_x, "max_x": job.settings.region.max_x,
                        "min_y": job.settings.region.min_y, "max_y": job.settings.region.max_y,
                        "crop": job.settings.region.crop}
                       if job.settings.HasField("region") else None),
        },
        "created_unix_ms": job.created_unix_ms,
        "error": job.error,
        "escrowed_usd": job.escrowed_usd,
        "charged_usd": job.charged_usd,
        "paused_reason": job.paused_reason,
    }



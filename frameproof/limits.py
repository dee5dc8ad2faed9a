"""Sizes the coordinator accepts that clients must respect when they send free text.

The coordinator refuses (INVALID_ARGUMENT) a request field over its bound rather than storing
it (coordinator/api/validation.py, docs/API-LIMITS.md). Nodes and verifiers send error text
they do not control (Blender's messages), so they clip it to these sizes before sending.
"""

from __future__ import annotations

FAIL_REASON_BYTES = 4000  # FailTaskRequest.reason
VERDICT_REASON_BYTES = 2000  # SubmitVerificationRequest.reason
TILE_REASON_BYTES = 500  # TileCheck.reason
# Leases one HeartbeatLeases or CompleteTasks call may carry (a node holding more splits them).
LEASES_PER_CALL = 64
# Small blobs (frames, manifests, textures) go several to a BatchUploadBlobs call, each whole;
# larger ones are streamed by UploadBlob. The call stays well under gRPC's message limit.
BATCH_BLOB_BYTES = 2 * 1024 * 1024  # the largest blob a batch may carry
BATCH_UPLOAD_BYTES = 6 * 1024 * 1024  # the data of one call, all blobs together
BATCH_UPLOAD_BLOBS = 256  # blobs in one call


def clip_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never in the middle of a character."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")

# Blender's output for one frame that a node uploads with its result (the end of it).
FRAME_LOG_BYTES = 16 * 1024

# A node's passes file of a denoised frame (FrameOutput.passes): float32 multilayer EXR, about
# 28 bytes a pixel measured (docs/VERIFICATION.md, "noisy pass"); the bound leaves room for
# more passes and worse compression, the slack for headers and tiny frames.
PASSES_BYTES_PER_PIXEL = 64
PASSES_SLACK_BYTES = 1024 * 1024


def passes_limit_bytes(width: int, height: int) -> int:
    """The largest passes file a frame of width x height pixels may come with."""
    return max(0, width) * max(0, height) * PASSES_BYTES_PER_PIXEL + PASSES_SLACK_BYTES

"""Every request field has a bound, checked in one place before any handler runs.

The signed-call interceptor (coordinator/api/auth.py) calls `problem()` on every request
message, and on every message of a client stream, after the signature check and before the
servicer. A field over its bound is answered INVALID_ARGUMENT with a short message naming the
field and the bound, never the value (an echo of a multi-megabyte input would itself fail).

The bounds are a generic walk of the message descriptor with a default per type, plus the
override table `FIELDS` keyed by "Message.field":

- strings: at most DEFAULT_STRING_BYTES bytes of UTF-8, no NUL (PostgreSQL cannot store it);
- bytes: at most DEFAULT_BYTES;
- repeated fields and maps: at most DEFAULT_ITEMS entries, each entry bounded like a field;
- doubles and floats: finite (no NaN, no infinity), within a range where one is given;
- enums: one of the declared values;
- integers: within a range where one is given.

proto3 does not send a field at its zero value, so 0 and "" always pass here: "unset" is
the handler's to interpret (usually "the default"), as are rules between fields.
`python -m coordinator.api.validation` prints the table as docs/API-LIMITS.md.
"""

from __future__ import annotations

import functools
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from coordinator.domain.scheduling import MAX_TASKS_PER_CALL as MAX_TASKS_PER_LEASE_CALL
from frameproof.limits import (
    BATCH_BLOB_BYTES,
    BATCH_UPLOAD_BLOBS,
    FAIL_REASON_BYTES,
    FRAME_LOG_BYTES,
    LEASES_PER_CALL,
    PASSES_BYTES_PER_PIXEL,
    PASSES_SLACK_BYTES,
    TILE_REASON_BYTES,
    VERDICT_REASON_BYTES,
)
from frameproof.receipts import PROOF_STEP, TREE_DEPTH
from frameproof.v1 import farm_pb2

DEFAULT_STRING_BYTES = 256
DEFAULT_BYTES = 64 * 1024
DEFAULT_ITEMS = 100
MAX_JOB_COST_USD = 1_000_000.0  # SubmitJob's max_cost_usd and PrepareDeposit's amount_usd
MAX_RENDER_SECONDS = 7 * 86_400.0  # a node's (or verifier's) reported time for one frame
MAX_CHUNK_FRAMES = 1000  # frames per task; a completion carries at most this many outputs
MAX_BLENDER_FRAME = 1_048_574  # Blender's own frame limit (MAXFRAME)
MAX_RESOLUTION = 65_536
SOLANA_TX_BYTES = 1232  # a Solana transaction's size limit: the signed deposit
UPLOAD_CHUNK_BYTES = 4 * 1024 * 1024  # clients send 1 MiB; the message limit is 8 MiB
SERVICES = ("JobService", "NodeService", "BlobStore", "VerifierService", "AdminService")

PATTERNS: dict[str, tuple[re.Pattern[str], str]] = {
    "sha256": (re.compile(r"[0-9a-f]{64}"), "64 lowercase hex digits (a sha256)"),
    "pubkey": (re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}"), "a base58 public key"),
    "hex-id": (re.compile(r"[0-9a-f]{1,64}"), "1-64 lowercase hex digits"),
    "signature": (re.compile(r"[1-9A-HJ-NP-Za-km-z]{64,88}"), "a base58 ed25519 signature"),
    "receipt-proof": (re.compile(rf"(?:[lr][0-9a-f]{{64}}){{1,{TREE_DEPTH}}}"),
                      f"up to {TREE_DEPTH} steps of l or r and a sha256"),
}


@dataclass(frozen=True)
class Bound:
    """What one field may hold; None: the type's default applies (see the module docstring)."""

    max_bytes: int | None = None  # strings and bytes (each element of a repeated field)
    max_items: int | None = None  # repeated fields and maps
    low: float | None = None  # numbers
    high: float | None = None
    pattern: str | None = None  # a key of PATTERNS, for non-empty strings
    finite: bool = True  # doubles (map values: the map's bound says)
    note: str = ""  # why, for docs/API-LIMITS.md


FIELDS: dict[str, Bound] = {
    # blobs
    "BlobRef.sha256": Bound(pattern="sha256"),
    "BlobRef.size": Bound(low=0, note="the per-blob limit is the blob store's: "
                          "RESOURCE_EXHAUSTED"),
    "FindMissingBlobsRequest.blobs": Bound(max_items=10_000),
    "BatchUploadBlobsRequest.blobs": Bound(max_items=BATCH_UPLOAD_BLOBS),
    "BlobData.data": Bound(max_bytes=BATCH_BLOB_BYTES, note="larger blobs go by UploadBlob; "
                           "the call is also bound by gRPC's message limit"),
    "UploadChunk.offset": Bound(low=0),
    "UploadChunk.data": Bound(max_bytes=UPLOAD_CHUNK_BYTES, note="clients send 1 MiB chunks"),
    "DownloadBlobRequest.sha256": Bound(pattern="sha256"),
    "DownloadBlobRequest.offset": Bound(low=0),
    # jobs
    "RenderSettings.engine": Bound(max_bytes=64, note="the engine names are checked by intake"),
    "RenderSettings.samples": Bound(low=0, high=1_000_000, note="0: the scene's own"),
    "RenderSettings.resolution_x": Bound(low=0, high=MAX_RESOLUTION, note="0: the scene's own"),
    "RenderSettings.resolution_y": Bound(low=0, high=MAX_RESOLUTION, note="0: the scene's own"),
    "RenderSettings.resolution_percentage": Bound(low=0, high=1000, note="0: the scene's own"),
    "RenderRegion.min_x": Bound(low=0, high=1, note="ignored in requests: the scene's own"),
    "RenderRegion.max_x": Bound(low=0, high=1, note="ignored in requests: the scene's own"),
    "RenderRegion.min_y": Bound(low=0, high=1, note="ignored in requests: the scene's own"),
    "RenderRegion.max_y": Bound(low=0, high=1, note="ignored in requests: the scene's own"),
    "SubmitJobRequest.scene_id": Bound(pattern="sha256"),
    "SubmitJobRequest.frames": Bound(max_bytes=10_000, note="a frame list such as 1-250,300"),
    "SubmitJobRequest.chunk_size": Bound(low=0, high=MAX_CHUNK_FRAMES, note="0: 1"),
    "SubmitJobRequest.name": Bound(max_bytes=200),
    "SubmitJobRequest.tier": Bound(low=0, high=3, note="0: 3"),
    "SubmitJobRequest.max_cost_usd": Bound(low=0, high=MAX_JOB_COST_USD,
                                           note="0: the estimate x the safety factor; the "
                                           "same cap as PrepareDeposit"),
    "SubmitJobRequest.signed_deposit": Bound(max_bytes=SOLANA_TX_BYTES,
                                             note="a Solana transaction's size limit"),
    "InspectSceneRequest.scene_id": Bound(pattern="sha256"),
    "SubmitJobRequest.creator_phases": Bound(max_items=10, note="pack, upload, estimate"),
    "JobPhase.phase": Bound(max_bytes=32),
    "JobPhase.started_at": Bound(low=0),
    "JobPhase.ended_at": Bound(low=0),
    "JobPhase.seconds": Bound(low=0, high=MAX_RENDER_SECONDS),
    "EstimateRequest.scene_id": Bound(pattern="sha256"),
    "EstimateRequest.frames": Bound(max_bytes=10_000),
    "EstimateRequest.tier": Bound(low=0, high=3, note="0: 3"),
    "PrepareDepositRequest.amount_usd": Bound(low=0, high=MAX_JOB_COST_USD,
                                              note="must be > 0 (the handler)"),
    "AirdropRequest.tokens": Bound(low=0, note="the upper limit is the handler's "
                                   "(1,000,000 tokens)"),
    "ReceiptsRequest.job_id": Bound(pattern="hex-id"),
    "GetJobRequest.job_id": Bound(pattern="hex-id"),
    "CancelJobRequest.job_id": Bound(pattern="hex-id"),
    "ListFramesRequest.job_id": Bound(pattern="hex-id"),
    "ListJobsRequest.limit": Bound(low=0, high=1000, note="0: 100"),
    "TopUpRequest.job_id": Bound(pattern="hex-id"),
    "TopUpRequest.signed_deposit": Bound(max_bytes=SOLANA_TX_BYTES,
                                         note="a Solana transaction's size limit"),
    "TopUpRequest.amount_usd": Bound(low=0, high=MAX_JOB_COST_USD,
                                     note="must be > 0 (the handler); the same cap as "
                                     "PrepareDeposit"),
    "JobControlRequest.job_id": Bound(pattern="hex-id", note="or a unique prefix (4+)"),
    "SetJobPriorityRequest.job_id": Bound(pattern="hex-id"),
    "SetJobPriorityRequest.priority": Bound(low=-100, high=100),
    "RequeueFramesRequest.job_id": Bound(pattern="hex-id"),
    "RequeueFramesRequest.frames": Bound(max_bytes=10_000),
    "FrameLogRequest.job_id": Bound(pattern="hex-id"),
    "FrameLogRequest.frame": Bound(low=0, high=MAX_BLENDER_FRAME),
    "FrameOutput.log": Bound(max_bytes=FRAME_LOG_BYTES, note="the end of Blender's output"),
    "FrameOutput.passes": Bound(note=f"denoised frames only; the handler refuses one over "
                                f"{PASSES_BYTES_PER_PIXEL} bytes a pixel of the job's frame + "
                                f"{PASSES_SLACK_BYTES // 1024**2} MiB, or one the node did not "
                                "upload"),
    # nodes
    "NodeCapabilities.blender_version": Bound(max_bytes=64),
    "NodeCapabilities.devices": Bound(max_items=16, max_bytes=64),
    "NodeCapabilities.threads": Bound(low=0, high=65_536),
    "NodeCapabilities.memory_bytes": Bound(low=0),
    "NodeCapabilities.engines": Bound(max_items=16, max_bytes=64),
    "NodeCapabilities.benchmark_score": Bound(note="clamped to 0.05..20 by the handler"),
    "RegisterNodeRequest.node_id": Bound(pattern="pubkey"),
    "RegisterNodeRequest.name": Bound(max_bytes=200),
    "LeaseTaskRequest.node_id": Bound(pattern="pubkey"),
    "LeaseTaskRequest.max_tasks": Bound(low=0, high=MAX_TASKS_PER_LEASE_CALL, note="0: 1"),
    "HeartbeatRequest.node_id": Bound(pattern="pubkey"),
    "HeartbeatRequest.lease_id": Bound(pattern="hex-id"),
    "HeartbeatRequest.frames_done": Bound(low=0, high=MAX_CHUNK_FRAMES),
    "FrameOutput.frame": Bound(low=-MAX_BLENDER_FRAME, high=MAX_BLENDER_FRAME),
    "FrameOutput.render_seconds": Bound(low=0, high=MAX_RENDER_SECONDS,
                                        note="a week; prices do not rest on it"),
    "FrameOutput.blender_version": Bound(max_bytes=64),
    "FrameOutput.device": Bound(max_bytes=64),
    "FrameOutput.receipt_signature": Bound(pattern="signature"),
    "FrameOutput.receipt_proof": Bound(max_bytes=TREE_DEPTH * PROOF_STEP,
                                       pattern="receipt-proof"),
    "CompleteTaskRequest.node_id": Bound(pattern="pubkey"),
    "CompleteTaskRequest.lease_id": Bound(pattern="hex-id"),
    "CompleteTaskRequest.outputs": Bound(max_items=MAX_CHUNK_FRAMES),
    "HeartbeatLeasesRequest.node_id": Bound(pattern="pubkey"),
    "HeartbeatLeasesRequest.lease_ids": Bound(max_items=LEASES_PER_CALL, pattern="hex-id"),
    "CompleteTasksRequest.node_id": Bound(pattern="pubkey"),
    "CompleteTasksRequest.results": Bound(max_items=LEASES_PER_CALL,
                                          note=f"and at most {MAX_CHUNK_FRAMES} outputs in "
                                          "all (the handler)"),
    "DeliverTasksRequest.node_id": Bound(pattern="pubkey"),
    "DeliverTasksRequest.images": Bound(max_items=BATCH_UPLOAD_BLOBS),
    "DeliverTasksRequest.results": Bound(max_items=LEASES_PER_CALL,
                                         note=f"and at most {MAX_CHUNK_FRAMES} outputs in "
                                         "all (the handler)"),
    "DeliverTasksRequest.max_tasks": Bound(low=0, high=MAX_TASKS_PER_LEASE_CALL,
                                           note="0: lease nothing"),
    "LeaseResult.lease_id": Bound(pattern="hex-id"),
    "LeaseResult.outputs": Bound(max_items=MAX_CHUNK_FRAMES),
    "FailTaskRequest.node_id": Bound(pattern="pubkey"),
    "FailTaskRequest.lease_id": Bound(pattern="hex-id"),
    "FailTaskRequest.reason": Bound(max_bytes=FAIL_REASON_BYTES,
                                    note="nodes clip their reasons to this"),
    "GetNodeStandingRequest.node_id": Bound(pattern="pubkey"),
    "GetNodeStandingRequest.history_limit": Bound(low=0, note="0: 50; more than 1000 "
                                                  "is read as 1000"),
    "EarningsRequest.node_id": Bound(pattern="pubkey"),
    # bonds
    "PrepareBondRequest.node_id": Bound(pattern="pubkey"),
    "PrepareBondRequest.tokens": Bound(low=0, note="base units; 0 is refused by the handler"),
    "PostBondRequest.node_id": Bound(pattern="pubkey"),
    "PostBondRequest.signed_bond": Bound(max_bytes=SOLANA_TX_BYTES,
                                         note="the signed PrepareBond message"),
    "PostBondRequest.tokens": Bound(low=0, note="base units; 0 is refused by the handler"),
    "UnbondRequest.node_id": Bound(pattern="pubkey"),
    "GetBondRequest.node_id": Bound(pattern="pubkey"),
    # Proof-of-Render
    "LeaseVerificationRequest.verifier_id": Bound(pattern="pubkey"),
    "LeaseVerificationRequest.blender_version": Bound(max_bytes=64),
    "LeaseVerificationRequest.device": Bound(max_bytes=64),
    "TileCheck.x": Bound(low=0, high=MAX_RESOLUTION),
    "TileCheck.y": Bound(low=0, high=MAX_RESOLUTION),
    "TileCheck.width": Bound(low=0, high=MAX_RESOLUTION),
    "TileCheck.height": Bound(low=0, high=MAX_RESOLUTION),
    "TileCheck.mode": Bound(max_bytes=32),
    "TileCheck.outcome": Bound(max_bytes=32),
    "TileCheck.scores": Bound(max_items=32, max_bytes=64, finite=False,
                             note="informational: NaN is a metric without a value"),
    "TileCheck.reason": Bound(max_bytes=TILE_REASON_BYTES),
    "SubmitVerificationRequest.verifier_id": Bound(pattern="pubkey"),
    "SubmitVerificationRequest.verification_id": Bound(pattern="hex-id"),
    "SubmitVerificationRequest.reason": Bound(max_bytes=VERDICT_REASON_BYTES,
                                              note="verifiers clip their reasons to this"),
    "SubmitVerificationRequest.pixel_sha256": Bound(pattern="sha256"),
    "SubmitVerificationRequest.tiles": Bound(max_items=64),
    "SubmitVerificationRequest.render_seconds": Bound(low=0, high=MAX_RENDER_SECONDS),
    "SubmitVerificationRequest.mode": Bound(max_bytes=32),
    "ExtendVerificationRequest.verifier_id": Bound(pattern="pubkey"),
    "ExtendVerificationRequest.verification_id": Bound(pattern="hex-id"),
    "ReleaseVerificationRequest.verifier_id": Bound(pattern="pubkey"),
    "ReleaseVerificationRequest.verification_id": Bound(pattern="hex-id"),
    "ReleaseVerificationRequest.reason": Bound(max_bytes=VERDICT_REASON_BYTES),
    # administration
    "SetQuarantineRequest.node_id": Bound(pattern="pubkey"),
    "SetQuarantineRequest.reason": Bound(max_bytes=500),
}

_NUMBERS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
_TYPE_NAMES = {
    FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_BOOL: "bool", FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float", FieldDescriptor.TYPE_ENUM: "enum",
    FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32", FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_MESSAGE: "message",
}


def problem(message: Message) -> str | None:
    """What is wrong with this request, in a short sentence that names the field; None: fine."""
    found = _walk(message)
    return None if found is None else f"{found[0]} {found[1]}"


def bound_of(field: FieldDescriptor) -> Bound:
    return FIELDS.get(f"{field.containing_type.name}.{field.name}", _NO_OVERRIDE)


_NO_OVERRIDE = Bound()


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 6: `label` is gone
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


Check = Callable[[Any], "str | None"]  # a scalar's rule: what it breaks, or None


@functools.cache
def _plan(field: FieldDescriptor) -> tuple[Check | None, bool, bool, bool, int]:
    """(the check of each scalar value, or None where any value passes; repeated; map;
    message; most entries) of a field, worked out once: requests are many."""
    bound = bound_of(field)
    items = bound.max_items if bound.max_items is not None else DEFAULT_ITEMS
    return (_checker(field, bound), _is_repeated(field), _is_map(field),
            field.type == FieldDescriptor.TYPE_MESSAGE, items)


def _walk(message: Message) -> tuple[str, str] | None:
    """(path of the first field over its bound, the rule it breaks); names are built only
    on the way back up from a failure, so a good request costs no string work."""
    for field, value in message.ListFields():
        check, repeated, is_map, nested, items = _plan(field)
        if not repeated:
            if nested:
                if (inner := _walk(value)) is not None:
                    return f"{field.name}.{inner[0]}", inner[1]
            elif check is not None and (rule := check(value)) is not None:
                return field.name, rule
            continue
        if len(value) > items:
            return field.name, f"has more than {items} entries"
        if is_map:
            bound = bound_of(field)
            check_key = _checker(field.message_type.fields_by_name["key"], bound)
            check_value = _checker(field.message_type.fields_by_name["value"],
                                   Bound(finite=bound.finite))
            for key, item in value.items():
                if check_key is not None and (rule := check_key(key)) is not None:
                    return f"{field.name} key", rule
                if check_value is not None and (rule := check_value(item)) is not None:
                    return f"{field.name} value", rule
            continue
        if nested:
            for index, item in enumerate(value):
                if (inner := _walk(item)) is not None:
                    return f"{field.name}[{index}].{inner[0]}", inner[1]
        elif check is not None:
            for index, item in enumerate(value):
                if (rule := check(item)) is not None:
                    return f"{field.name}[{index}]", rule
    return None


@functools.cache
def _checker(field: FieldDescriptor, bound: Bound) -> Check | None:
    """The check of one scalar field's values under `bound`, made once per field: the
    type's branch and the bound's numbers are decided here, not per value."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _string_check(bound.max_bytes if bound.max_bytes is not None
                             else DEFAULT_STRING_BYTES,
                             PATTERNS[bound.pattern] if bound.pattern else None)
    if kind == FieldDescriptor.TYPE_BYTES:
        limit = bound.max_bytes if bound.max_bytes is not None else DEFAULT_BYTES

        def check_bytes(value: bytes) -> str | None:
            return f"is longer than {limit} bytes" if len(value) > limit else None
        return check_bytes
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = field.enum_type.values_by_number
        names = ", ".join(field.enum_type.values_by_name)

        def check_enum(value: int) -> str | None:
            return None if value in numbers else f"must be one of {names}"
        return check_enum
    if kind == FieldDescriptor.TYPE_BOOL or kind == FieldDescriptor.TYPE_MESSAGE:
        return None
    low, high, finite = bound.low, bound.high, bound.finite
    in_range = f"must be in {_range(bound)}"
    if kind in _NUMBERS:
        def check_number(value: float) -> str | None:
            if not math.isfinite(value):
                return "must be a finite number" if finite else None
            if (low is not None and value < low) or (high is not None and value > high):
                return in_range
            return None
        return check_number
    if low is None and high is None:
        return None  # an integer the wire already bounds

    def check_integer(value: int) -> str | None:
        if (low is not None and value < low) or (high is not None and value > high):
            return in_range
        return None
    return check_integer


def _string_check(limit: int, pattern: tuple[re.Pattern[str], str] | None) -> Check:
    quick = limit // 4  # a character is at most 4 bytes of UTF-8: shorter needs no encoding
    fullmatch = pattern[0].fullmatch if pattern else None
    must_be = f"must be {pattern[1]}" if pattern else ""
    too_long = f"is longer than {limit} bytes"

    def check_string(value: str) -> str | None:
        size = len(value)
        if size > quick and (size > limit or len(value.encode("utf-8")) > limit):
            return too_long
        if "\x00" in value:
            return "contains a NUL character"
        if fullmatch is not None and value and fullmatch(value) is None:
            return must_be
        return None
    return check_string


def _range(bound: Bound) -> str:
    low = "-inf" if bound.low is None else _number(bound.low)
    high = "inf" if bound.high is None else _number(bound.high)
    return f"[{low}, {high}]"


def _number(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:g}"


# ---------------------------------------------------------------- the documented table


def request_messages() -> list[Descriptor]:
    """Every message type a client can send, in the order the services declare them."""
    seen: dict[str, Descriptor] = {}

    def visit(descriptor: Descriptor) -> None:
        if descriptor.full_name in seen or descriptor.GetOptions().map_entry:
            return
        seen[descriptor.full_name] = descriptor
        for field in descriptor.fields:
            if field.message_type is not None:
                visit(field.message_type)

    for service in SERVICES:
        for method in farm_pb2.DESCRIPTOR.services_by_name[service].methods:
            visit(method.input_type)
    return list(seen.values())


def rule(field: FieldDescriptor) -> str:
    """The bound of one field in words (the docs' table)."""
    bound = bound_of(field)
    parts = []
    if _is_repeated(field):
        items = bound.max_items if bound.max_items is not None else DEFAULT_ITEMS
        parts.append(f"at most {items} entries")
        if _is_map(field):
            values = "finite" if bound.finite else "any double"
            return "; ".join([*parts, f"keys at most {bound.max_bytes or DEFAULT_STRING_BYTES} "
                              f"bytes, values {values}"])
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        parts.append(f"at most {bound.max_bytes or DEFAULT_STRING_BYTES} bytes, no NUL")
        if bound.pattern:
            parts.append(PATTERNS[bound.pattern][1] + " (or empty)")
    elif kind == FieldDescriptor.TYPE_BYTES:
        parts.append(f"at most {bound.max_bytes or DEFAULT_BYTES} bytes")
    elif kind == FieldDescriptor.TYPE_ENUM:
        parts.append("one of " + ", ".join(field.enum_type.values_by_name))
    elif kind == FieldDescriptor.TYPE_MESSAGE:
        parts.append(f"each field as in {field.message_type.name}")
    elif kind in _NUMBERS:
        parts.append("finite" + (f", in {_range(bound)}" if bound.low is not None
                                 or bound.high is not None else ""))
    elif kind != FieldDescriptor.TYPE_BOOL and (bound.low is not None or bound.high is not None):
        parts.append(f"in {_range(bound)}")
    elif kind != FieldDescriptor.TYPE_BOOL:
        parts.append("any")
    return "; ".join(parts) or "any"


def fields_table() -> Iterator[tuple[str, str, str, str]]:
    """(Message.field, type, bound, note) for every field of every request message."""
    for descriptor in request_messages():
        for field in descriptor.fields:
            kind = "map" if _is_map(field) else _TYPE_NAMES.get(field.type, "int")
            if _is_repeated(field) and not _is_map(field):
                kind = f"repeated {kind}"
            yield (f"{descriptor.name}.{field.name}", kind, rule(field),
                   bound_of(field).note)


def limits_markdown() -> str:
    """docs/API-LIMITS.md, generated from this module (a test keeps the file current)."""
    lines = [
        "# API limits",
        "",
        "Generated by `python -m coordinator.api.validation > docs/API-LIMITS.md` from",
        "`coordinator/api/validation.py`; `tests/unit/test_validation.py` fails when it is stale.",
        "",
        "Every request field of every RPC is checked against this table by the signed-call",
        "interceptor before any handler runs (each message of an upload stream too). A field",
        "over its bound is answered `INVALID_ARGUMENT` with the field's name and the bound,",
        "never its value. Zero and empty values are \"unset\" in proto3 and always pass here;",
        "the handlers decide what unset means (the notes) and check rules between fields.",
        "",
        f"Defaults: strings at most {DEFAULT_STRING_BYTES} bytes of UTF-8 without NUL; bytes at",
        f"most {DEFAULT_BYTES} bytes; repeated fields and maps at most {DEFAULT_ITEMS} entries;",
        "doubles finite; enums one of their declared values.",
        "",
        "| field | type | bound | note |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{name}` | {kind} | {bound} | {note} |"
              for name, kind, bound, note in fields_table()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(limits_markdown())

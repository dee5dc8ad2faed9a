"""Hard size limits on the free text the coordinator stores, whatever path wrote it.

Requests are bounded at the edge (coordinator/api/validation.py); this is the backstop under
it, so no future handler can store a multi-megabyte name or JSON blob that every later
listing then has to carry (two such node records once broke ListNodes for every caller).
ORM inserts and updates of the listed columns are clipped here: plain text to its limit in
UTF-8 bytes, JSON columns to `TRUNCATED_JSON` (clipped JSON would not parse). Bulk UPDATE
statements bypass ORM events, so `clip_stored` is also called where the store writes text
with one (job errors).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from coordinator.storage.models import (
    FrameResultRecord,
    JobRecord,
    NodeRecord,
    PeerVerdictRecord,
    ReputationEventRecord,
    SceneRecord,
    TaskFailureRecord,
    TaskRecord,
    VerificationRecord,
)
from frameproof.limits import clip_utf8

TRUNCATED_JSON = '{"truncated": true}'
DETAILS_JSON_BYTES = 100_000
STORED_LIMITS: dict[type, dict[str, int]] = {
    NodeRecord: {"name": 200, "capabilities_json": 8192},
    JobRecord: {"name": 200, "error": 4000},
    TaskRecord: {"error": 4000},
    TaskFailureRecord: {"reason": 4000},
    FrameResultRecord: {"blender_version": 64, "device": 64, "verification": 2000,
                        "receipt_signature": 128},
    VerificationRecord: {"reason": 2000, "mode": 32, "details_json": DETAILS_JSON_BYTES},
    PeerVerdictRecord: {"reason": 2000},
    ReputationEventRecord: {"reason": 2000, "details_json": DETAILS_JSON_BYTES},
    SceneRecord: {"info_json": 64 * 1024},
}


def clip_stored(value: str, limit: int, *, json_column: bool = False) -> str:
    """`value` as stored: itself when it fits, else clipped (JSON: the truncation marker)."""
    if len(value) <= limit // 4 or len(value.encode("utf-8")) <= limit:
        return value
    return TRUNCATED_JSON if json_column else clip_utf8(value, limit)


def _bound(limits: dict[str, int]) -> Any:
    def listener(_mapper: Any, _connection: Any, record: Any) -> None:
        for column, limit in limits.items():
            value = getattr(record, column, None)
            if isinstance(value, str):
                clipped = clip_stored(value, limit, json_column=column.endswith("_json"))
                if clipped is not value:
                    setattr(record, column, clipped)
    return listener


for _model, _limits in STORED_LIMITS.items():
    for _when in ("before_insert", "before_update"):
        event.listen(_model, _when, _bound(_limits))

"""Request checks shared by the servicers: malformed input is refused, never crashes."""

from __future__ import annotations

import re

import grpc

_ID = re.compile(r"^[0-9A-Za-z_-]{1,128}$")


async def require_id(context: grpc.aio.ServicerContext, value: str, field: str) -> str:
    """An identifier field must be present and plain (hex, base58, uuid-like)."""
    if not value:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} is required")
    if not _ID.match(value):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} is malformed")
    return value

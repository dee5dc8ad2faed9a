"""Where the farm's refusals become gRPC status codes (one table), and request checks shared
by the servicers: malformed input is refused, never crashes."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from coordinator.domain.errors import DomainError, Forbidden, InvalidRequest, NotFound, Refused

_ID = re.compile(r"^[0-9A-Za-z_-]{1,128}$")
T = TypeVar("T")

STATUS_OF: dict[type[DomainError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Refused: grpc.StatusCode.FAILED_PRECONDITION,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
}


def status_of(error: DomainError) -> grpc.StatusCode:
    """The status code for a refusal (its nearest listed kind; FAILED_PRECONDITION if none)."""
    for kind in type(error).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return grpc.StatusCode.FAILED_PRECONDITION


def maps_domain_errors(servicer: type[T]) -> type[T]:
    """Class decorator: each unary RPC method of the servicer answers a `DomainError` with its
    status code and message, so a servicer only decodes, calls the domain and encodes."""
    for name, method in list(vars(servicer).items()):
        if name[:1].isupper() and inspect.iscoroutinefunction(method):
            setattr(servicer, name, _mapped(method))
    return servicer


def _mapped(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def call(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except DomainError as error:
            await context.abort(status_of(error), str(error))
    return call


async def require_id(context: grpc.aio.ServicerContext, value: str, field: str) -> str:
    """An identifier field must be present and plain (hex, base58, uuid-like)."""
    if not value:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} is required")
    if not _ID.match(value):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} is malformed")
    return value

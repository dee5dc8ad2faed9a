"""Server side of signed calls: a grpc.aio interceptor that authenticates every RPC.

It wraps each handler so the raw request bytes are kept for the signature
check, then runs the servicer with the caller's identity in a context variable.
Health and reflection stay open, as load balancers and grpcurl expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from sqlalchemy.exc import OperationalError

from coordinator.api.rate_limit import CallRateLimiter
from coordinator.api.validation import problem
from coordinator.blobstore import FULL_ERRNOS
from frameproof.auth import AuthError, Caller, NonceCache, TooManyCalls, verify_call
from frameproof.client import RATE_LIMIT_PREFIX

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
LOCAL_ADMIN = Caller(pubkey="local-admin")

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def current_caller() -> Caller:
    caller = _caller.get()
    if caller is None:
        raise RuntimeError("no authenticated caller in this context")
    return caller


@contextlib.asynccontextmanager
async def storage_failures_answered(context: grpc.aio.ServicerContext,
                                    method: str) -> AsyncIterator[None]:
    """Answer a failing database or full disk with ABORTED and what failed, not UNKNOWN.

    The coordinator stays up and nothing committed is lost; the caller may try again once
    the operator has made room. Not UNAVAILABLE: gRPC's retry policy would send the very same
    signed call again, which is by then a replay. Clients retry ABORTED with a new signature.
    """
    try:
        yield
    except OperationalError as error:
        reason = f"database error: {error.orig}"
    except OSError as error:
        if error.errno not in FULL_ERRNOS:
            raise
        reason = f"storage full: {error.strerror}"
    else:
        return
    log.error("%s failed: %s", method, reason)
    await context.abort(grpc.StatusCode.ABORTED,
                        f"the coordinator could not complete this call ({reason}); "
                        "try again later")


async def refuse_invalid(message: Any, context: grpc.aio.ServicerContext) -> None:
    """INVALID_ARGUMENT when a field is over its bound (coordinator/api/validation.py)."""
    if isinstance(message, Message) and (found := problem(message)) is not None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, found)


class _Raw:
    """A request together with the exact bytes it arrived as."""

    __slots__ = ("message", "raw")

    def __init__(self, raw: bytes, message: Any) -> None:
        self.raw = raw
        self.message = message


class SignedCallInterceptor(grpc.aio.ServerInterceptor):
    """Refuse unsigned, stale, replayed or forged calls with UNAUTHENTICATED.

    A flood beyond what the nonce cache holds, or beyond a key's rate limit, is refused with
    RESOURCE_EXHAUSTED.
    """

    def __init__(self, nonces: NonceCache | None = None, *, trust_all_as: Caller | None = None,
                 limiter: CallRateLimiter | None = None):
        self.nonces = NonceCache() if nonces is None else nonces  # (empty is falsy: __len__)
        self.trust_all_as = trust_all_as  # the local admin socket: the OS already vouched
        self.limiter = limiter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        return self._wrap(handler, details.method)

    async def _authenticate(self, context: grpc.aio.ServicerContext, method: str,
                            raw: bytes | None) -> Caller:
        if self.trust_all_as is not None:
            return self.trust_all_as
        metadata = {key: value for key, value in context.invocation_metadata() or ()
                    if isinstance(value, str)}
        if getattr(self.nonces.log, "blocking", False):
            # A nonce log in a shared database is a round trip: off the event loop.
            return await asyncio.to_thread(verify_call, metadata, method, raw, self.nonces)
        return verify_call(metadata, method, raw, self.nonces)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        deserialize = handler.request_deserializer

        def keep_raw(raw: bytes) -> _Raw:
            # Parse errors are answered after the signature check, never as a crash.
            try:
                return _Raw(raw, deserialize(raw) if deserialize else raw)
            except DecodeError:
                return _Raw(raw, None)

        async def check(context: grpc.aio.ServicerContext, raw: bytes | None) -> None:
            try:
                caller = await self._authenticate(context, method, raw)
            except TooManyCalls as error:
                log.warning("refused %s: %s", method, error)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
            except AuthError as error:
                log.warning("refused %s: %s", method, error)
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
            limiter = self.limiter
            if limiter is not None and (wait := limiter.retry_after(caller.pubkey)) > 0:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{RATE_LIMIT_PREFIX} more than {limiter.rate:g} calls/s from this key "
                    f"(bursts of {limiter.burst:g}); retry in {wait:.2f}s")
            _caller.set(caller)

        async def refuse_malformed(request: _Raw, context: grpc.aio.ServicerContext) -> None:
            if request.message is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"malformed request: not a {method.rsplit('/', 1)[-1]} "
                                    "message")
            await refuse_invalid(request.message, context)

        async def checked(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            # A client stream: every message is bounded, not just the first.
            async for message in requests:
                await refuse_invalid(message, context)
                yield message

        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: _Raw, context: grpc.aio.ServicerContext) -> Any:
                async with storage_failures_answered(context, method):
                    await check(context, request.raw)
                    await refuse_malformed(request, context)
                    return await inner_uu(request.message, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=keep_raw,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(request: _Raw, context: grpc.aio.ServicerContext) -> Any:
                async with storage_failures_answered(context, method):
                    await check(context, request.raw)
                    await refuse_malformed(request, context)
                    async for response in inner_us(request.message, context):
                        yield response

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, request_deserializer=keep_raw,
                response_serializer=handler.response_serializer)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                async with storage_failures_answered(context, method):
                    await check(context, None)
                    return await inner_su(checked(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, request_deserializer=deserialize,
                response_serializer=handler.response_serializer)
        inner_ss = handler.stream_stream

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            async with storage_failures_answered(context, method):
                await check(context, None)
                async for response in inner_ss(checked(requests, context), context):
                    yield response

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=deserialize,
            response_serializer=handler.response_serializer)

"""Channels to the coordinator: signed calls, TLS when asked, gRPC's own retry policy."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Any

import grpc
from solders.keypair import Keypair

from frameproof.auth import sign_call
from frameproof.v1 import farm_pb2_grpc

ENV_COORDINATOR = "FRAMEPROOF_COORDINATOR"
ENV_TLS_CA = "FRAMEPROOF_TLS_CA"
DEFAULT_COORDINATOR = "127.0.0.1:50051"

# Retry only what is safe to retry: UNAVAILABLE means the call never reached the
# server's handler. Streams (uploads, downloads) resume on their own.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "frameproof.v1.JobService"},
                         {"service": "frameproof.v1.NodeService"},
                         {"service": "frameproof.v1.BlobStore"},
                         {"service": "frameproof.v1.VerifierService"},
                         {"service": "frameproof.v1.AdminService"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


RATE_LIMIT_PREFIX = "rate limit:"  # how the coordinator starts a rate-limit refusal


def rate_limited(error: grpc.RpcError) -> bool:
    """The call was refused for its key's rate limit: the same call, signed again later, passes.

    Not in the retry policy above: gRPC would resend the same signature, a replay by then.
    """
    return (error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            and (error.details() or "").startswith(RATE_LIMIT_PREFIX))


def transient(error: grpc.RpcError) -> bool:
    """Worth trying again later with a fresh signature: the coordinator is unreachable, slow,
    busy (ABORTED: e.g. its disk was full) or rate-limiting this key."""
    return rate_limited(error) or error.code() in (
        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED)


def coordinator_address(explicit: str | None) -> str:
    return explicit or os.environ.get(ENV_COORDINATOR) or DEFAULT_COORDINATOR


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class SigningInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
):
    """Adds the caller's signature to every call (see frameproof.auth)."""

    def __init__(self, keypair: Keypair) -> None:
        self.keypair = keypair

    def _signed(self, details: grpc.ClientCallDetails, request: Any) -> _CallDetails:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        raw = request.SerializeToString() if request is not None else None
        metadata = [*(details.metadata or ()), *sign_call(self.keypair, method, raw)]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._signed(details, request), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._signed(details, request), request)

    def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._signed(details, None), requests)


def open_channel(address: str, keypair: Keypair, *, tls_ca: Path | None = None) -> grpc.Channel:
    options = [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    ca = tls_ca or (Path(os.environ[ENV_TLS_CA]) if os.environ.get(ENV_TLS_CA) else None)
    if address.startswith("unix:"):
        channel = grpc.insecure_channel(address, options=options)
    elif ca is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    return grpc.intercept_channel(channel, SigningInterceptor(keypair))


class FarmClient:
    """The three service stubs over one signed channel."""

    def __init__(self, address: str, keypair: Keypair, *, tls_ca: Path | None = None) -> None:
        self.address = address
        self.keypair = keypair
        self.pubkey = str(keypair.pubkey())
        self.channel = open_channel(address, keypair, tls_ca=tls_ca)
        self.jobs = farm_pb2_grpc.JobServiceStub(self.channel)
        self.nodes = farm_pb2_grpc.NodeServiceStub(self.channel)
        self.blobs = farm_pb2_grpc.BlobStoreStub(self.channel)
        self.verifier = farm_pb2_grpc.VerifierServiceStub(self.channel)
        self.admin = farm_pb2_grpc.AdminServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Channels to the coordinator: signed calls, TLS when asked, gRPC's own retry policy."""

from __future__ import annotations

import argparse
import collections
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from solders.keypair import Keypair

from frameproof.auth import sign_call
from frameproof.v1 import farm_pb2_grpc

ENV_COORDINATOR = "FRAMEPROOF_COORDINATOR"
ENV_TLS_CA = "FRAMEPROOF_TLS_CA"
DEFAULT_COORDINATOR = "127.0.0.1:50051"

@dataclass(frozen=True)
class Retries:
    """How long a client keeps trying a coordinator that does not answer: gRPC's retry
    policy for unary calls, and transfer.py's for blob streams (which resume). The default
    rides out a coordinator restart; tests of an unreachable one pass a short schedule
    rather than wait it out."""

    attempts: int = 5  # gRPC wants at least 2
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 2 or not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError(f"bad retry schedule: {self}")


DEFAULT_RETRIES = Retries()


def _service_config(retries: Retries) -> str:
    """Retry only what is safe to retry: UNAVAILABLE means the call never reached the
    server's handler. Streams (uploads, downloads) resume on their own."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": "frameproof.v1.JobService"},
                             {"service": "frameproof.v1.NodeService"},
                             {"service": "frameproof.v1.BlobStore"},
                             {"service": "frameproof.v1.VerifierService"},
                             {"service": "frameproof.v1.AdminService"}],
                    "retryPolicy": {
                        "maxAttempts": retries.attempts,
                        "initialBackoff": f"{retries.initial_backoff_s:g}s",
                        "maxBackoff": f"{retries.max_backoff_s:g}s",
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


def coordinator_addresses(address: str) -> list[str]:
    """`a:1,b:2` (or one address) as a list: every coordinator the client may use."""
    found = [part.strip() for part in address.split(",") if part.strip()]
    if not found:
        raise ValueError("no coordinator address given")
    return found


class AddressList(argparse.Action):
    """`--coordinator a,b` or `--coordinator a --coordinator b`: one comma-joined string.

    A string (not argparse's append) so that config files and variables keep one value,
    `"a:50051,b:50051"`, which the command line replaces rather than extends."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        marker = f"_{self.dest}_given"
        previous = getattr(namespace, self.dest, None) if getattr(namespace, marker, False) \
            else None
        setattr(namespace, self.dest, f"{previous},{values}" if previous else values)
        setattr(namespace, marker, True)


def open_channel(address: str, keypair: Keypair, *, tls_ca: Path | None = None,
                 retries: Retries = DEFAULT_RETRIES) -> grpc.Channel:
    """A signed channel to one coordinator, or a failing-over one to several (`a,b`)."""
    addresses = coordinator_addresses(address)
    if len(addresses) > 1:
        return FailoverChannel([_open_one(each, keypair, tls_ca=tls_ca, retries=retries)
                                for each in addresses], addresses)
    return _open_one(addresses[0], keypair, tls_ca=tls_ca, retries=retries)


def _open_one(address: str, keypair: Keypair, *, tls_ca: Path | None = None,
              retries: Retries = DEFAULT_RETRIES) -> grpc.Channel:
    options = [
        ("grpc.service_config", _service_config(retries)),
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


FAILED_RECENTLY_SECONDS = 10.0  # a coordinator that dropped us is tried last for this long
_LOST = (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
         grpc.ChannelConnectivity.SHUTDOWN)


class CoordinatorLost(grpc.RpcError):
    """A call cut off because its coordinator's connection dropped: UNAVAILABLE, so callers
    retry it (signed afresh) and the retry goes to a live coordinator."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return str(self.args[0]) if self.args else "the coordinator's connection dropped"


class FailoverChannel(grpc.Channel):
    """Several coordinators behind one channel: each call goes to a live one.

    Every coordinator serves every call from the shared database, so any of them will do.
    Calls stick to the coordinator that answered last while its connection is up; when it
    drops (the coordinator died or restarts), new calls go to another one that is connected,
    else to one that has not failed lately. Calls in flight on the lost connection are cut
    off at once and raise UNAVAILABLE (`CoordinatorLost`): left alone, gRPC would hold a
    long poll, a download or a wait-for-ready call until its deadline, waiting for that one
    coordinator to come back. A unary call made directly (not as a future) is then sent to
    the next coordinator, signed afresh; futures and streams are retried by their callers
    (the node's call loop, resumable transfers), and their retry picks a live coordinator.
    """

    def __init__(self, channels: list[grpc.Channel], addresses: list[str]) -> None:
        self.channels = channels
        self.addresses = addresses
        self.current = 0
        self._lock = threading.Lock()
        self._states = [grpc.ChannelConnectivity.IDLE] * len(channels)
        self._failed_at = [0.0] * len(channels)
        self._calls: list[set[Any]] = [set() for _ in channels]
        self._severed: set[int] = set()  # ids of calls we cut off
        self._watchers = []
        for index, channel in enumerate(channels):
            def watch(state: grpc.ChannelConnectivity, index: int = index) -> None:
                self._observe(index, state)

            self._watchers.append(watch)
            channel.subscribe(watch, try_to_connect=True)  # connect to all: failover is warm

    def _observe(self, index: int, state: grpc.ChannelConnectivity) -> None:
        with self._lock:
            was = self._states[index]
            self._states[index] = state
            lost = was is grpc.ChannelConnectivity.READY and state in _LOST
            if lost or state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                self._failed_at[index] = time.monotonic()
            doomed = list(self._calls[index]) if lost else []
            self._severed.update(id(call) for call in doomed)
        for call in doomed:
            call.cancel()

    def pick(self) -> int:
        """The channel for the next call (see the class docstring)."""
        with self._lock:
            count = len(self.channels)
            order = [(self.current + step) % count for step in range(count)]
            ready = [i for i in order if self._states[i] is grpc.ChannelConnectivity.READY]
            if ready:
                chosen = ready[0]
            else:
                horizon = time.monotonic() - FAILED_RECENTLY_SECONDS
                fresh = [i for i in order if self._failed_at[i] < horizon]
                chosen = fresh[0] if fresh else min(order, key=lambda i: self._failed_at[i])
            self.current = chosen
            return chosen

    def failed(self, index: int) -> None:
        """A call through `index` found no coordinator there."""
        with self._lock:
            self._failed_at[index] = time.monotonic()
            if self._states[index] is grpc.ChannelConnectivity.READY:
                self._states[index] = grpc.ChannelConnectivity.TRANSIENT_FAILURE

    def track(self, index: int, call: Any) -> Any:
        """Remember a call in flight on channel `index` until it is done."""
        with self._lock:
            self._calls[index].add(call)

        def done(finished: Any) -> None:
            with self._lock:
                self._calls[index].discard(finished)

        call.add_done_callback(done)
        return call

    def severed(self, call: Any) -> bool:
        """Whether we cut this call off (its coordinator's connection dropped)."""
        with self._lock:
            if id(call) in self._severed:
                self._severed.discard(id(call))
                return True
            return False

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _FailoverUnary(self, [ch.unary_unary(method, *args, **kwargs)
                                     for ch in self.channels])

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _FailoverStream(self, [ch.unary_stream(method, *args, **kwargs)
                                      for ch in self.channels])

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _FailoverUnary(self, [ch.stream_unary(method, *args, **kwargs)
                                     for ch in self.channels], resend=False)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _FailoverStream(self, [ch.stream_stream(method, *args, **kwargs)
                                      for ch in self.channels])

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self.channels[self.pick()].subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        for channel in self.channels:
            channel.unsubscribe(callback)

    def close(self) -> None:
        for channel, watch in zip(self.channels, self._watchers, strict=True):
            channel.unsubscribe(watch)
            channel.close()

    def __enter__(self) -> FailoverChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Severable:
    """A call's future or stream whose cut-off (by `FailoverChannel`) reads as UNAVAILABLE."""

    def __init__(self, owner: FailoverChannel, call: Any, address: str) -> None:
        self._owner = owner
        self._call = call
        self._address = address

    def _translate(self, error: BaseException) -> BaseException:
        cancelled = isinstance(error, grpc.FutureCancelledError) or (
            isinstance(error, grpc.RpcError)
            and error.code() is grpc.StatusCode.CANCELLED)  # type: ignore[attr-defined]
        if cancelled and self._owner.severed(self._call):
            return CoordinatorLost(f"lost the connection to coordinator {self._address}")
        return error

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._call.result(timeout)
        except (grpc.RpcError, grpc.FutureCancelledError) as error:
            translated = self._translate(error)
            if translated is error:
                raise
            raise translated from error

    def __iter__(self) -> _Severable:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as error:
            translated = self._translate(error)
            if translated is error:
                raise
            raise translated from error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)  # cancel, done, code, details, ...


class _FailoverStream:
    """A multi-callable whose responses stream: each call goes to the channel picked for it."""

    def __init__(self, owner: FailoverChannel, callables: list[Any]) -> None:
        self.owner = owner
        self.callables = callables

    def _start(self, invoke: Any) -> _Severable:
        index = self.owner.pick()
        call = self.owner.track(index, invoke(self.callables[index]))
        return _Severable(self.owner, call, self.owner.addresses[index])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._start(lambda call: call(*args, **kwargs))


class _FailoverUnary(_FailoverStream):
    """A multi-callable with one response; made directly, it is sent to the next coordinator
    when one is unreachable (`resend`; not for client streams, whose iterator is spent)."""

    def __init__(self, owner: FailoverChannel, callables: list[Any], *,
                 resend: bool = True) -> None:
        super().__init__(owner, callables)
        self.resend = resend

    def future(self, *args: Any, **kwargs: Any) -> Any:
        return self._start(lambda call: call.future(*args, **kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._each(lambda: self.future(*args, **kwargs).result())

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            future = self.future(*args, **kwargs)
            return future.result(), future

        return self._each(call)

    def _each(self, invoke: Any) -> Any:
        attempts = len(self.callables) if self.resend else 1
        for attempt in range(attempts):
            try:
                return invoke()
            except grpc.RpcError as error:
                if error.code() is not grpc.StatusCode.UNAVAILABLE \
                        or attempt == attempts - 1:  # type: ignore[attr-defined]
                    raise
                self.owner.failed(self.owner.current)
        raise AssertionError("unreachable")


class BlobStub(farm_pb2_grpc.BlobStoreStub):
    """The BlobStore stub, plus what the HTTP fast path for blobs needs (frameproof/transfer.py):
    the key that signs, the coordinator's host and TLS, and its blob endpoint once asked."""

    def __init__(self, channel: grpc.Channel, address: str, keypair: Keypair,
                 tls_ca: Path | None, retries: Retries = DEFAULT_RETRIES) -> None:
        super().__init__(channel)
        self.address = address
        self.keypair = keypair
        self.tls_ca = tls_ca
        self.retries = retries  # transfer.py retries interrupted streams on this schedule
        self.endpoint: Any = None  # the GetBlobEndpointResponse, once asked (transfer.py)
        self.batch_upload = True  # False once the coordinator lacked BatchUploadBlobs


class FarmClient:
    """The service stubs over one signed channel (failing over when given several addresses,
    comma-separated)."""

    def __init__(self, address: str, keypair: Keypair, *, tls_ca: Path | None = None,
                 retries: Retries = DEFAULT_RETRIES) -> None:
        self.address = address
        self.keypair = keypair
        self.pubkey = str(keypair.pubkey())
        self.channel = open_channel(address, keypair, tls_ca=tls_ca, retries=retries)
        self.jobs = farm_pb2_grpc.JobServiceStub(self.channel)
        self.nodes = farm_pb2_grpc.NodeServiceStub(self.channel)
        ca = tls_ca or (Path(os.environ[ENV_TLS_CA]) if os.environ.get(ENV_TLS_CA) else None)
        self.blobs = BlobStub(self.channel, address, keypair, ca, retries)
        self.verifier = farm_pb2_grpc.VerifierServiceStub(self.channel)
        self.admin = farm_pb2_grpc.AdminServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

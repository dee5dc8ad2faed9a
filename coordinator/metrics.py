"""The coordinator's Prometheus metrics: what happens (counted as it happens) and what is
(read from the database at scrape time).

Events: RPC calls and their latency per method (a gRPC server interceptor) and chain errors
(a counting wrapper around the chain). State: queue depth per tier, leases, frames by state,
verification verdicts, charges and burns, chain operations by kind and state. State is read
from the database, so it is right after a restart and with several coordinator processes on one
PostgreSQL; the scrape runs the queries in a worker thread, off the event loop.

Label values are bounded: methods are the registered ones only (an unknown method is never
counted), tiers, states, kinds and verdicts come from the farm's own vocabulary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from coordinator.chain.base import ChainError
from coordinator.domain.states import TaskState, VerificationState
from coordinator.storage.farm_state import read_farm_state

# Events are counted in one process-wide registry: several coordinators in one process
# (tests) share them, as they share the process.
EVENTS = CollectorRegistry(auto_describe=True)
RPC_CALLS = Counter("frameproof_rpc_calls", "gRPC calls answered, by method and status code",
                    ["method", "code"], registry=EVENTS)
RPC_SECONDS = Histogram(
    "frameproof_rpc_duration_seconds", "Time to answer a gRPC call (streams: until closed)",
    ["method"], registry=EVENTS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
CHAIN_ERRORS = Counter("frameproof_chain_errors", "Chain calls that raised ChainError, by "
                       "operation", ["operation"], registry=EVENTS)
LEASES_SHED = Counter("frameproof_leases_shed", "Lease requests answered 'retry later' "
                      "because the storage thread stayed overloaded through their long poll",
                      registry=EVENTS)
NODE_SEEN_SECONDS = 120.0  # a node heard from within this long counts as online


def _short_method(full: str) -> str:
    """/frameproof.v1.JobService/SubmitJob -> JobService/SubmitJob."""
    service, _, method = full.lstrip("/").rpartition("/")
    return f"{service.rsplit('.', 1)[-1]}/{method}"


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Count every answered call and time it, by method and final status code.

    Placed first, it also counts calls the signed-call interceptor refuses.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        return _timed(handler, _short_method(details.method))


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    """The status the call ended with: the one set on the context (abort, set_code), else OK
    for a normal return, CANCELLED for a call the client dropped, UNKNOWN for a crash."""
    if error is None or isinstance(error, grpc.aio.AbortError):
        code = context.code()
        if code is None:
            return "OK"
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "UNKNOWN"


# Label children by their values: labels() costs a lock and a tuple per call, a dict lookup
# does not (bounded: registered methods times status codes).
_CALL_COUNTERS: dict[tuple[str, str], Any] = {}
_CALL_TIMERS: dict[str, Any] = {}


def _record(method: str, context: grpc.aio.ServicerContext, started: float,
            error: BaseException | None) -> None:
    elapsed = time.perf_counter() - started
    key = (method, _code(context, error))
    counter = _CALL_COUNTERS.get(key)
    if counter is None:
        counter = _CALL_COUNTERS.setdefault(key, RPC_CALLS.labels(*key))
    timer = _CALL_TIMERS.get(method)
    if timer is None:
        timer = _CALL_TIMERS.setdefault(method, RPC_SECONDS.labels(method))
    counter.inc()
    timer.observe(elapsed)


def _timed(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """The same handler, its behaviour timed and counted; (de)serializers kept."""
    kinds = {"request_deserializer": handler.request_deserializer,
             "response_serializer": handler.response_serializer}
    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                response = await inner(request, context)
            except BaseException as error:
                _record(method, context, started, error)
                raise
            _record(method, context, started, None)
            return response

        make = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler)
        return make(answer, **kinds)
    streaming = handler.unary_stream or handler.stream_stream

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        try:
            async for response in streaming(request, context):
                yield response
        except BaseException as error:
            _record(method, context, started, error)
            raise
        _record(method, context, started, None)

    make = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler)
    return make(stream, **kinds)


class CountingChain:
    """A chain whose ChainErrors are counted per operation; everything else passes through."""

    def __init__(self, chain: Any) -> None:
        self._chain = chain

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._chain, name)
        if not callable(value) or name.startswith("_"):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except ChainError:
                CHAIN_ERRORS.labels(name).inc()
                raise

        return counted


class FarmStateCollector(Collector):
    """Queue, leases, frames, verdicts, charges and chain operations, read at scrape time."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        state = read_farm_state(self.engine, seen_since=self.clock() - NODE_SEEN_SECONDS)
        queued = GaugeMetricFamily("frameproof_queue_frames", "Frames waiting for a node, "
                                   "by the job's tier", labels=["tier"])
        for tier in sorted({1, 2, 3, *state.queued_frames_by_tier}):
            queued.add_metric([str(tier)], state.queued_frames_by_tier.get(tier, 0))
        yield queued

        frames = GaugeMetricFamily("frameproof_frames", "Frames of all jobs, by state",
                                   labels=["state"])
        for task_state in TaskState:
            frames.add_metric([task_state.value], state.frames_by_state.get(task_state, 0))
        yield frames

        leases = GaugeMetricFamily("frameproof_leases", "Tasks leased to a node now")
        leases.add_metric([], state.leases)
        yield leases

        nodes = GaugeMetricFamily("frameproof_nodes_online", "Nodes heard from in the last "
                                  f"{NODE_SEEN_SECONDS:.0f} s")
        nodes.add_metric([], state.nodes_online)
        yield nodes

        checks = GaugeMetricFamily("frameproof_verifications", "Proof-of-Render checks "
                                   "by state (queued, leased, done, cancelled)",
                                   labels=["state"])
        verdicts = CounterMetricFamily("frameproof_verification_verdicts", "Finished "
                                       "Proof-of-Render checks by verdict",
                                       labels=["verdict"])
        by_check_state = state.verifications_by_state
        shown = (VerificationState.QUEUED, VerificationState.LEASED, VerificationState.DONE,
                 VerificationState.CANCELLED)
        for check_state in sorted({*shown, *by_check_state}):
            checks.add_metric([check_state], by_check_state.get(check_state, 0))
        verdicts.add_metric(["passed"], state.checks_passed)
        verdicts.add_metric(["failed"], state.checks_failed)
        yield checks
        yield verdicts

        charged = CounterMetricFamily("frameproof_frames_charged", "Frames charged to "
                                      "their creators")
        charged.add_metric([], state.frames_charged)
        yield charged
        usd = CounterMetricFamily("frameproof_charged_usd", "US dollars charged for frames")
        usd.add_metric([], state.charged_usd_micro / 1e6)
        yield usd
        burns = CounterMetricFamily("frameproof_tokens_burned", "Token base units burned "
                                    "for charged frames")
        burns.add_metric([], state.tokens_burned)
        yield burns

        ops = GaugeMetricFamily("frameproof_chain_ops", "Chain operations by kind (grant, "
                                "deposit, burn, refund, mint) and state", labels=["kind",
                                                                                  "state"])
        op_errors = GaugeMetricFamily("frameproof_chain_ops_with_error", "Chain operations "
                                      "whose last attempt recorded an error", labels=["kind"])
        errors_by_kind: dict[str, int] = {}
        for op in state.chain_ops:
            ops.add_metric([op.kind, op.state], op.count)
            errors_by_kind[op.kind] = errors_by_kind.get(op.kind, 0) + op.with_error
        for kind, n in sorted(errors_by_kind.items()):
            op_errors.add_metric([kind], n)
        yield ops
        yield op_errors


def coordinator_registry(engine: Engine) -> CollectorRegistry:
    """A registry for one coordinator's /metrics: the process's events plus its farm's state."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in (RPC_CALLS, RPC_SECONDS, CHAIN_ERRORS):
        registry.register(collector)
    registry.register(FarmStateCollector(engine))
    ProcessCollector(registry=registry)  # CPU, memory, open files of the coordinator
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of everything in `registry`."""
    return generate_latest(registry)

"""A node that batches (`--max-tasks` over 1) falls back to one call per lease (one stream
per image) when its coordinator lacks the batched calls (HeartbeatLeases, CompleteTasks,
BatchUploadBlobs, DeliverTasks: an older release), and to separate upload, CompleteTasks and
LeaseTask calls when it lacks only DeliverTasks (the release before it), and signs each
frame's receipt alone when its coordinator does not say it verifies receipt trees.

The coordinator is a real one, reached through a small grpc.aio server in front of it that
forwards every other call untouched (bytes, signature metadata, deadline) and registers
neither batched call, so gRPC itself answers them UNIMPLEMENTED as an older coordinator
would. The node is a real render-node process rendering with Blender."""

from __future__ import annotations

import asyncio
import collections
import re
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from conftest import SAMPLE_SCENE
from farm_helpers import frames, submit_sample, wait_for

from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb

DELIVER = "/frameproof.v1.NodeService/DeliverTasks"
REGISTER = "/frameproof.v1.NodeService/RegisterNode"
BATCHED = ("/frameproof.v1.NodeService/HeartbeatLeases",
           "/frameproof.v1.NodeService/CompleteTasks",
           "/frameproof.v1.BlobStore/BatchUploadBlobs", DELIVER)
RENDERED = re.compile(r"frame (\d+) rendered in")


class OlderCoordinator:
    """A grpc.aio server forwarding every call but the `lacking` ones (the batched ones) to
    `target`; counts the calls it was asked for, by method (the lacking ones included)."""

    def __init__(self, target: str, lacking: tuple[str, ...] = BATCHED, *,
                 features: bool = True) -> None:
        self.target = target
        self.lacking = lacking
        self.features = features  # False: RegisterNode answers without `features`
        self.deliveries: list[pb.DeliverTasksRequest] = []  # as the node sent them
        self.address = ""
        self.calls: collections.Counter[str] = collections.Counter()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> OlderCoordinator:
        self._thread.start()
        assert self._ready.wait(30), "the older coordinator did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        channel = grpc.aio.insecure_channel(self.target)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_Forward(self, channel),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.address = f"127.0.0.1:{port}"
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)
        await channel.close()


class _Forward(grpc.GenericRpcHandler):
    """Every method of the farm's services except the older one's `lacking`, as raw bytes."""

    def __init__(self, older: OlderCoordinator, channel: grpc.aio.Channel) -> None:
        self.older = older
        self.channel = channel
        self.kinds = {f"/{service.full_name}/{method.name}":
                      (method.client_streaming, method.server_streaming)
                      for service in pb.DESCRIPTOR.services_by_name.values()
                      for method in service.methods}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        self.older.calls[method] += 1
        if method in self.older.lacking or method not in self.kinds:
            return None  # gRPC answers UNIMPLEMENTED
        streams_in, streams_out = self.kinds[method]
        if streams_in and not streams_out:
            return grpc.stream_unary_rpc_method_handler(self._stream_unary(method))
        if streams_out and not streams_in:
            return grpc.unary_stream_rpc_method_handler(self._unary_stream(method))
        assert not streams_in, f"{method}: no bidirectional call is forwarded"
        return grpc.unary_unary_rpc_method_handler(self._unary_unary(method))

    def _unary_unary(self, method: str) -> Callable[..., Any]:
        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if method == DELIVER:
                self.older.deliveries.append(pb.DeliverTasksRequest.FromString(request))
            try:
                response = await self.channel.unary_unary(method)(request, **_call(context))
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")
                raise
            if method == REGISTER and not self.older.features:
                registered = pb.RegisterNodeResponse.FromString(response)
                registered.ClearField("features")
                return registered.SerializeToString()
            return response
        return forward

    def _stream_unary(self, method: str) -> Callable[..., Any]:
        async def forward(requests: AsyncIterator[bytes],
                          context: grpc.aio.ServicerContext) -> bytes:
            try:
                return await self.channel.stream_unary(method)(requests, **_call(context))
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")
                raise
        return forward

    def _unary_stream(self, method: str) -> Callable[..., Any]:
        async def forward(request: bytes,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            try:
                async for response in self.channel.unary_stream(method)(request,
                                                                        **_call(context)):
                    yield response
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")
        return forward


def _call(context: grpc.aio.ServicerContext) -> dict[str, Any]:
    """The caller's metadata (its signature) and deadline, for the forwarded call."""
    metadata = tuple((key, value) for key, value in context.invocation_metadata() or ()
                     if not key.startswith((":", "grpc-")) and key != "user-agent")
    return {"metadata": metadata, "timeout": context.time_remaining()}


def node_log(farm: LocalFarm, name: str) -> str:
    path = farm.root / "logs" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def delivered(farm: LocalFarm, job_id: str) -> list[pb.Frame]:
    """The job's frames once every one is recorded (no verifier runs: they stay there)."""
    with farm.client() as client:
        found = frames(client, job_id)
    return found if found and all(f.state == pb.FRAME_STATE_VERIFYING for f in found) else []


def run_batching_node(farm: LocalFarm, older: OlderCoordinator, frame_range: str,
                      **settings: object) -> tuple[list[pb.Frame], str]:
    """Submit a job, run a node asking 3 tasks per LeaseTask through `older` until every
    frame is delivered; (the frames, the node's log)."""
    with farm.client() as client:
        job = submit_sample(client, SAMPLE_SCENE, frame_range, **settings)
    real = farm.address
    farm.address = older.address  # the node (and its bond) reach the coordinator through it
    try:
        farm.start_node("batcher", extra_args=("--max-tasks", "3"))
    finally:
        farm.address = real
    try:
        final = wait_for(lambda: delivered(farm, job.job_id), timeout=240, interval=0.5)
    except AssertionError as error:
        raise AssertionError(f"{error}; the node's log ends with:\n"
                             f"{node_log(farm, 'batcher')[-3000:]}") from None
    return final, node_log(farm, "batcher")


def test_a_node_delivers_lease_by_lease_to_a_coordinator_without_complete_tasks(
        tmp_path: Path):
    # Long leases (heartbeats every 20 s, waiting leases renewed 60 s before expiry): the
    # three tiny frames are rendered and delivered before any renewal is due.
    with LocalFarm(tmp_path / "farm", lease_seconds=120.0) as farm:
        farm.start_coordinator(extra_args=("--proven-after", "0", "--no-verifier"))
        with OlderCoordinator(farm.address) as older:
            final, log = run_batching_node(farm, older, "1-3")

    assert "leased 3 tasks in one call" in log
    assert "the coordinator takes one lease per call; delivering one by one" in log
    assert older.calls[DELIVER] == 1, "asked once, then never again"
    assert older.calls["/frameproof.v1.NodeService/CompleteTasks"] == 1, \
        "asked once, then never again"
    assert older.calls["/frameproof.v1.NodeService/CompleteTask"] == 3
    assert older.calls["/frameproof.v1.BlobStore/BatchUploadBlobs"] == 1, \
        "asked once, then never again"
    assert older.calls["/frameproof.v1.BlobStore/UploadBlob"] == 3, "each image streamed"
    assert [f.frame for f in final] == [1, 2, 3]
    assert all(f.attempts == 0 for f in final), [(f.frame, f.error) for f in final]
    assert sorted(int(n) for n in RENDERED.findall(log)) == [1, 2, 3], "each frame once"


def test_a_node_renews_lease_by_lease_with_a_coordinator_without_heartbeat_leases(
        tmp_path: Path):
    # Leases of 1.5 s and frames of about 2 s: the two leases waiting behind the first one
    # live only through their renewals, which the node sends one by one once the batched
    # renewal is refused. Without them they expire, are leased again and rendered twice.
    with LocalFarm(tmp_path / "farm", lease_seconds=1.5) as farm:
        farm.start_coordinator(extra_args=("--proven-after", "0", "--no-verifier"))
        with OlderCoordinator(farm.address) as older:
            final, log = run_batching_node(farm, older, "1-3", samples=512,
                                           resolution_percentage=50)

    assert "leased 3 tasks in one call" in log
    assert "the coordinator takes one lease per heartbeat" in log
    assert older.calls["/frameproof.v1.NodeService/HeartbeatLeases"] == 1, \
        "asked once, then never again"
    assert older.calls["/frameproof.v1.NodeService/Heartbeat"] > 0
    assert [f.frame for f in final] == [1, 2, 3]
    assert all(f.attempts == 0 for f in final), [(f.frame, f.error) for f in final]
    assert sorted(int(n) for n in RENDERED.findall(log)) == [1, 2, 3], "each frame once"


def test_a_node_delivers_in_separate_calls_to_a_coordinator_without_deliver_tasks(
        tmp_path: Path):
    with LocalFarm(tmp_path / "farm", lease_seconds=120.0) as farm:
        farm.start_coordinator(extra_args=("--proven-after", "0", "--no-verifier"))
        with OlderCoordinator(farm.address, lacking=(DELIVER,)) as older:
            final, log = run_batching_node(farm, older, "1-3")

    assert "the coordinator takes images, results and leases in separate calls" in log
    assert older.calls[DELIVER] == 1, "asked once, then never again"
    assert older.calls["/frameproof.v1.NodeService/CompleteTasks"] == 1
    assert older.calls["/frameproof.v1.NodeService/CompleteTask"] == 0
    assert older.calls["/frameproof.v1.BlobStore/BatchUploadBlobs"] >= 1
    assert [f.frame for f in final] == [1, 2, 3]
    assert all(f.attempts == 0 for f in final), [(f.frame, f.error) for f in final]
    assert sorted(int(n) for n in RENDERED.findall(log)) == [1, 2, 3], "each frame once"


def test_a_node_signs_frame_by_frame_for_a_coordinator_that_predates_receipt_trees(
        tmp_path: Path):
    """A coordinator of the release before receipt trees serves DeliverTasks but refuses a
    receipt with a proof; it does not list "receipt-trees" when the node registers, so the
    node's deliveries carry each frame's own signature. With the feature, the same node
    signs a delivery of three frames as one tree."""
    deliveries = {}
    for features in (False, True):
        with LocalFarm(tmp_path / f"farm-{features}", lease_seconds=120.0) as farm:
            farm.start_coordinator(extra_args=("--proven-after", "0", "--no-verifier"))
            with OlderCoordinator(farm.address, lacking=(), features=features) as older:
                final, log = run_batching_node(farm, older, "1-3")
        assert [f.frame for f in final] == [1, 2, 3]
        assert all(f.attempts == 0 for f in final), [(f.frame, f.error) for f in final]
        together = [[o for result in request.results for o in result.outputs]
                    for request in older.deliveries]
        assert sorted(o.frame for outputs in together for o in outputs) == [1, 2, 3]
        assert any(len(outputs) > 1 for outputs in together), "frames delivered together"
        assert ("the coordinator predates receipt trees" in log) is not features
        deliveries[features] = [outputs for outputs in together if len(outputs) > 1]
    for outputs in deliveries[False]:
        assert not any(o.receipt_proof for o in outputs), "a tree for a coordinator without"
        assert len({o.receipt_signature for o in outputs}) == len(outputs), "one per frame"
    for outputs in deliveries[True]:
        assert all(o.receipt_proof for o in outputs), "trees where the coordinator has them"
        assert len({o.receipt_signature for o in outputs}) == 1, "one signature for the tree"

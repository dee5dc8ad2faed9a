"""The node's main loop: register, lease, fetch, render, upload, report, repeat.

It is deliberately forgiving of the coordinator: calls wait for the coordinator
to come back (it resumes leases after a restart), results are retried until
they are acknowledged, and a lease the coordinator withdrew stops the render.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from solders.keypair import Keypair

from frameproof import render_settings
from frameproof.blender.worker import BlenderError, BlenderWorker, RenderResult, RenderSettings
from frameproof.client import FarmClient, transient
from frameproof.identity import load_or_create_keypair
from frameproof.limits import (
    BATCH_BLOB_BYTES,
    BATCH_UPLOAD_BLOBS,
    BATCH_UPLOAD_BYTES,
    FAIL_REASON_BYTES,
    FRAME_LOG_BYTES,
    LEASES_PER_CALL,
    clip_utf8,
)
from frameproof.manifest import sha256_file
from frameproof.receipts import TREES_FEATURE, sign_outputs, sign_receipt
from frameproof.scene_cache import SceneCache
from frameproof.transfer import TransferError, upload_files
from frameproof.v1 import farm_pb2 as pb
from render_node import metrics
from render_node.sysinfo import benchmark_score, capabilities, total_memory_bytes

log = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0
RECONNECT_PATIENCE = 600.0  # how long a finished result waits for the coordinator
PASSES_SUFFIX = ".passes.exr"  # a frame's passes file, beside its image in the work dir
STOP_CHECK_SECONDS = 0.2  # how soon a node waiting for work notices stop()


@dataclass(frozen=True)
class NodeConfig:
    coordinator: str
    work_dir: Path
    threads: int = 0
    name: str = ""
    keypair_path: Path | None = None
    frame_timeout: float = 3600.0
    memory_limit_bytes: int | None = None
    tls_ca: Path | None = None
    max_tasks: int = 1  # tasks asked for per LeaseTask; 0: as many as fit half a lease


MAX_TASKS_AUTO = 8  # the most tasks an automatic node holds at once
STOPPING_REASON = "node stopping: not started"  # a give-back (node_service.STOPPING_PREFIX)


def tasks_to_ask(configured: int, lease_seconds: float, last_task_seconds: float | None) -> int:
    """How many tasks one LeaseTask asks for: `configured` when set, else as many as the
    last task's pace renders in half a lease (1 until a task was timed).

    Fewer calls per frame is what the coordinator's CPU wants; a node holding more than it
    renders soon would keep frames from idle nodes and need heartbeats for waiting leases.
    """
    if configured > 0:
        return configured
    if not last_task_seconds or last_task_seconds <= 0:
        return 1
    return max(1, min(MAX_TASKS_AUTO, int(lease_seconds / 2 / last_task_seconds)))


@dataclass
class HeldLease:
    """A lease this node holds: waiting its turn or rendering."""

    lease: pb.Lease
    expires: float  # time.monotonic() when the coordinator takes it back unless extended
    started: float | None = None  # time.monotonic() when its render began
    last_beat: float = 0.0
    done_frames: list[int] = field(default_factory=lambda: [0])
    withdrawn: threading.Event = field(default_factory=threading.Event)
    rendered: bool = False  # its frames are done and wait to be delivered with others


@dataclass
class Finished:
    """A rendered lease waiting for the batched delivery: its results and image files."""

    held: HeldLease
    outputs: list[pb.FrameOutput]
    images: dict[str, Path]
    at: float  # time.monotonic() when it was rendered


def heartbeat_due(held: HeldLease, now: float, heartbeat_seconds: float) -> bool:
    """A rendering lease beats every interval (its first after one interval, so a lease
    done sooner never beats); a waiting one only when its expiry comes within three
    intervals, which a lease rendered soon never reaches."""
    if held.started is not None:
        return now - max(held.started, held.last_beat) >= heartbeat_seconds
    return held.expires - now < 3 * heartbeat_seconds


def default_memory_limit() -> int:
    """Three quarters of the machine: a scene that wants more fails, the machine survives."""
    return int(total_memory_bytes() * 0.75)


class LeaseWithdrawn(Exception):
    """The coordinator took the lease back (expired, re-leased or cancelled)."""


class RenderNode:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        config.work_dir.mkdir(parents=True, exist_ok=True)
        keypair_path = config.keypair_path or config.work_dir / "node-keypair.json"
        keypair = load_or_create_keypair(keypair_path)
        self.keypair = keypair
        self.node_id = str(keypair.pubkey())
        self.client = FarmClient(config.coordinator, keypair, tls_ca=config.tls_ca)
        self.scenes = SceneCache(config.work_dir / "cache", self.client.blobs)
        threads = config.threads or os.cpu_count() or 1
        self.blender = BlenderWorker(
            threads=config.threads,
            memory_limit_bytes=config.memory_limit_bytes or default_memory_limit(),
            log_path=config.work_dir / "blender.log",
            # CPU seconds a frame may burn, all threads together: the wall limit's worth.
            cpu_seconds=config.frame_timeout * threads,
        )
        self.stopping = threading.Event()
        self.heartbeat_seconds = 10.0
        self.lease_seconds = 60.0
        self.held: dict[str, HeldLease] = {}  # by lease id, in lease order
        self.held_lock = threading.Lock()
        self.last_task_seconds: float | None = None
        # A node that may hold several leases renews and delivers them together
        # (HeartbeatLeases, CompleteTasks: one call for all, not one per lease); off for
        # `--max-tasks 1` and after a coordinator answers that it lacks those calls.
        self.batching = config.max_tasks != 1
        # ... and delivers a batch's small images, results and next lease request in one
        # DeliverTasks; off after a coordinator answers that it lacks the call.
        self.deliver_tasks = True
        self.receipt_trees = False  # the coordinator said it verifies them (registration)
        self.finished: list[Finished] = []  # rendered, not yet delivered (main loop only)
        self._images: dict[str, dict[str, Path]] = {}  # lease id -> its images, not uploaded

    # ------------------------------------------------------------ main loop

    def run(self) -> None:
        """Render until stop() is called; leases not started by then are given back."""
        beats_done = threading.Event()
        beat = threading.Thread(target=self._heartbeats, args=(beats_done,), daemon=True)
        try:
            self._register()
            beat.start()
            waiting: deque[str] = deque()
            while not self.stopping.is_set():
                if not waiting:  # everything leased is rendered: deliver, lease more
                    leased = self._deliver_finished(lease_more=True)
                    waiting.extend(self._lease_more() if leased is None else leased)
                    continue
                if self.finished and (time.monotonic() - self.finished[0].at
                                      >= self.heartbeat_seconds):
                    self._deliver_finished()  # a long batch does not sit on its results
                held = self.held.get(waiting.popleft())
                if held is None or held.withdrawn.is_set():  # taken back while it waited
                    self._forget(held)
                    continue
                started = time.monotonic()
                self._run_lease(held)
                self.last_task_seconds = time.monotonic() - started
        finally:
            self._deliver_finished()  # the heartbeats keep them alive meanwhile
            beats_done.set()
            if beat.is_alive():
                beat.join()
            self._give_back_waiting()
            self.blender.close()
            self.client.close()

    def _lease_more(self) -> list[str]:
        """One LeaseTask for as many tasks as this node takes now: their lease ids, in order."""
        want = tasks_to_ask(self.config.max_tasks, self.lease_seconds, self.last_task_seconds)
        response = self._call(self.client.nodes.LeaseTask,
                              pb.LeaseTaskRequest(node_id=self.node_id, max_tasks=want))
        if response is None:
            return []
        if not response.HasField("lease"):
            self.stopping.wait(max(0.1, response.retry_after_ms / 1000))
            return []
        return self._hold(response)

    def _hold(self, response: pb.LeaseTaskResponse) -> list[str]:
        """The leases of an answer that has some, held from now: their ids, in order."""
        received = time.monotonic()
        leases = [response.lease, *response.more_leases]
        with self.held_lock:
            for lease in leases:
                self.held[lease.lease_id] = HeldLease(lease, received + self.lease_seconds)
        if len(leases) > 1:
            log.info("leased %d tasks in one call", len(leases))
        return [lease.lease_id for lease in leases]

    def _forget(self, held: HeldLease | None) -> None:
        if held is not None:
            with self.held_lock:
                self.held.pop(held.lease.lease_id, None)

    def _give_back_waiting(self) -> None:
        """Stopping: hand back every lease not started, so another node renders it now
        rather than after its lease expires. One already taken back is fine."""
        with self.held_lock:
            waiting = [h for h in self.held.values() if h.started is None]
            self.held.clear()
        for held in waiting:
            if held.withdrawn.is_set():
                continue
            try:
                self._give_up(held.lease, STOPPING_REASON)
                log.info("lease %s given back (not started)", held.lease.lease_id)
            except grpc.RpcError as error:
                log.warning("lease %s not given back (%s); it expires on the coordinator",
                            held.lease.lease_id, error.code())

    def stop(self) -> None:
        self.stopping.set()

    def _register(self) -> None:
        request = pb.RegisterNodeRequest(
            node_id=self.node_id,
            name=self.config.name,
            capabilities=capabilities(self.blender.blender_version(), self.config.threads,
                                      ["CPU"], benchmark_score(self.config.work_dir)),
        )
        response = self._call(self.client.nodes.RegisterNode, request, patience=float("inf"))
        if response is None:
            return
        self.heartbeat_seconds = response.heartbeat_seconds or self.heartbeat_seconds
        self.lease_seconds = response.lease_seconds or self.lease_seconds
        self.receipt_trees = TREES_FEATURE in response.features
        log.info("registered as %s with %s%s", self.node_id, self.config.coordinator,
                 "" if self.receipt_trees else " (receipts signed frame by frame: the "
                 "coordinator predates receipt trees)")

    # ------------------------------------------------------------ one lease

    def _run_lease(self, held: HeldLease) -> None:
        lease, withdrawn, done_frames = held.lease, held.withdrawn, held.done_frames
        log.info("lease %s: job %s frames %s", lease.lease_id, lease.job_id, list(lease.frames))
        held.started = time.monotonic()
        metrics.RENDERING.set(1)
        waits = False
        try:
            outputs = self._render_lease(lease, withdrawn, done_frames)
            images = self._images.pop(lease.lease_id, None)
            if images is not None:  # not uploaded yet: delivered with the others
                held.rendered = waits = True
                self.finished.append(Finished(held, outputs, images, time.monotonic()))
                return
            self._report_done(lease, outputs)
            metrics.LEASES.labels("delivered").inc()
        except LeaseWithdrawn:
            metrics.LEASES.labels("withdrawn").inc()
            log.warning("lease %s withdrawn by the coordinator; dropped", lease.lease_id)
        except (BlenderError, TransferError, OSError, ValueError, grpc.RpcError) as error:
            metrics.LEASES.labels("failed").inc()
            metrics.FAILURES.labels(metrics.failure_kind(error)).inc()
            reason = error.details() if isinstance(error, grpc.RpcError) else str(error)
            log.error("lease %s failed: %s", lease.lease_id, reason)
            if not withdrawn.is_set():
                self._give_up(lease, reason)
        finally:
            metrics.RENDERING.set(0)
            if not waits:
                withdrawn.set()  # the heartbeats leave it alone from now on
                self._forget(held)

    def _give_up(self, lease: pb.Lease, reason: str) -> None:
        """Tell the coordinator the lease failed; a lease it already took back is fine."""
        try:
            self._call(self.client.nodes.FailTask, pb.FailTaskRequest(
                node_id=self.node_id, lease_id=lease.lease_id,
                reason=clip_utf8(reason, FAIL_REASON_BYTES)))
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.FAILED_PRECONDITION,
                                    grpc.StatusCode.PERMISSION_DENIED):
                raise
            log.warning("lease %s is already gone (%s)", lease.lease_id, error.details())

    def _render_lease(
        self, lease: pb.Lease, withdrawn: threading.Event, done_frames: list[int]
    ) -> list[pb.FrameOutput]:
        blend = self.scenes.fetch(lease.scene_id)
        settings = render_settings.from_proto(lease.settings)
        extension = render_settings.extension(lease.settings)
        out_dir = self.config.work_dir / "output" / lease.job_id
        outputs: list[pb.FrameOutput] = []
        images: dict[str, Path] = {}  # the lease's result blobs: images and passes files
        try:
            for frame in lease.frames:
                if withdrawn.is_set():
                    raise LeaseWithdrawn
                log_start = self._log_size()
                try:
                    result = self._render_frame(
                        blend, frame, out_dir / f"{frame:06d}.{extension}", settings,
                        passes=out_dir / f"{frame:06d}{PASSES_SUFFIX}")
                except BlenderError:
                    if withdrawn.is_set():  # the heartbeat killed Blender on purpose
                        raise LeaseWithdrawn from None
                    raise
                sha = sha256_file(result.output)
                images[sha] = result.output
                output = pb.FrameOutput(
                    frame=frame,
                    image=pb.BlobRef(sha256=sha, size=result.output.stat().st_size),
                    render_seconds=result.seconds,
                    blender_version=result.blender_version,
                    device=result.device,
                    receipt_signature=sign_receipt(self.keypair, lease.job_id, frame, sha,
                                                   lease.settings),
                    log=self._frame_log(log_start),
                )
                if result.passes is not None:  # a denoised frame checked on its noisy pass
                    passes_sha = sha256_file(result.passes)
                    images[passes_sha] = result.passes
                    output.passes.CopyFrom(pb.BlobRef(sha256=passes_sha,
                                                      size=result.passes.stat().st_size))
                outputs.append(output)
                done_frames[0] += 1
                log.info("frame %d rendered in %.2fs", frame, result.seconds)
            self._upload(lease, images)
        except BaseException:
            discard_passes(images.values())  # the lease fails: nobody uploads them
            raise
        return outputs

    def _log_size(self) -> int:
        try:
            return (self.config.work_dir / "blender.log").stat().st_size
        except OSError:
            return 0

    def _frame_log(self, start: int) -> str:
        """What Blender wrote since `start`, its end, scrubbed of this node's paths."""
        try:
            with open(self.config.work_dir / "blender.log", "rb") as log:
                end = log.seek(0, os.SEEK_END)
                log.seek(max(start, end - FRAME_LOG_BYTES))
                text = log.read(FRAME_LOG_BYTES).decode("utf-8", "replace")
        except OSError:
            return ""
        clean = scrub_paths(text, self.config.work_dir).encode()
        return clean[-FRAME_LOG_BYTES:].decode("utf-8", "ignore")

    def _render_frame(self, blend: Path, frame: int, output: Path,
                      settings: RenderSettings, *, passes: Path | None = None) -> RenderResult:
        """Render one frame of a lease to `output`: the one place a frame's pixels come from.

        `passes`: where Blender writes the frame's passes file when the scene is denoised in
        a way the verifier checks on the noisy pass (`RenderResult.passes` says if it did).
        """
        result = self.blender.render_frame(blend, frame, output, settings, passes=passes,
                                           timeout=self.config.frame_timeout)
        metrics.FRAMES.inc()
        metrics.RENDER_SECONDS.observe(result.seconds)
        return result

    def _upload(self, lease: pb.Lease, images: dict[str, Path]) -> None:
        """Upload a lease's images (and passes files) now, or (batching) with the other
        leases' at delivery: one FindMissingBlobs for all of them."""
        if self.batching:
            self._images[lease.lease_id] = dict(images)
        else:
            try:
                upload_files(self.client.blobs, images)
            finally:  # sent, or the lease fails: either way nothing needs them again
                discard_passes(images.values())

    def _deliver_finished(self, lease_more: bool = False) -> list[str] | None:
        """Deliver every rendered lease, each answered on its own: with DeliverTasks, one
        call per LEASES_PER_CALL leases carrying their small images (larger ones uploaded
        first) and, with `lease_more`, asking for the next tasks in the last one; else one
        upload check for all their images, then one CompleteTasks per LEASES_PER_CALL.

        Returns the leases taken in the same call, or None when none were asked for or
        there was no work then (the caller long-polls LeaseTask)."""
        finished, self.finished = self.finished, []
        ready = []
        for done in finished:
            if done.held.withdrawn.is_set():  # the coordinator took it back meanwhile
                metrics.LEASES.labels("withdrawn").inc()
                log.warning("lease %s withdrawn by the coordinator; dropped",
                            done.held.lease.lease_id)
                self._end(done)
            else:
                ready.append(done)
        if not ready:
            return None
        if self.batching and self.deliver_tasks:
            return self._deliver_batches(ready, lease_more)
        self._deliver_separately(ready)
        return None

    def _deliver_separately(self, ready: list[Finished]) -> None:
        """FindMissingBlobs and uploads for all the leases' images, then CompleteTasks."""
        try:
            upload_files(self.client.blobs, {sha: path for done in ready
                                             for sha, path in done.images.items()})
        except (TransferError, OSError, grpc.RpcError):
            ready = [done for done in ready if self._upload_alone(done)]
        for start in range(0, len(ready), LEASES_PER_CALL):
            self._complete_batch(ready[start:start + LEASES_PER_CALL])

    def _deliver_batches(self, ready: list[Finished], lease_more: bool) -> list[str] | None:
        """DeliverTasks per LEASES_PER_CALL leases (see _deliver_finished)."""
        leased = None
        batches = [ready[start:start + LEASES_PER_CALL]
                   for start in range(0, len(ready), LEASES_PER_CALL)]
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            want = (tasks_to_ask(self.config.max_tasks, self.lease_seconds,
                                 self.last_task_seconds) if lease_more and last else 0)
            try:
                inline, larger = inline_images({sha: path for done in batch
                                                for sha, path in done.images.items()})
                if larger:
                    upload_files(self.client.blobs, larger)
            except (TransferError, OSError, grpc.RpcError):
                inline = []
                batch = [done for done in batch if self._upload_alone(done)]
            request = pb.DeliverTasksRequest(
                node_id=self.node_id, images=inline, max_tasks=want,
                results=lease_results(batch, signed_by=self.keypair if self.receipt_trees
                                      else None))
            try:
                response = self._send(self.client.nodes.DeliverTasks, request, batch)
            except grpc.RpcError:  # UNIMPLEMENTED
                log.info("the coordinator takes images, results and leases in separate "
                         "calls; delivering that way")
                self.deliver_tasks = False
                self._deliver_separately([done for rest in batches[index:] for done in rest])
                return None
            if response is None:
                continue
            for image in response.images:
                if image.code:
                    log.warning("image %s refused: %s", image.blob.sha256[:12], image.message)
            self._outcomes(batch, response.results)
            if want and response.next.HasField("lease"):
                leased = self._hold(response.next)
            elif want and response.next.retry_after_ms:  # shedding, or quarantined
                self.stopping.wait(response.next.retry_after_ms / 1000)
                leased = []
        return leased

    def _upload_alone(self, done: Finished) -> bool:
        """After a batched upload failed: this lease's images alone; False: it failed."""
        try:
            upload_files(self.client.blobs, done.images)
            return True
        except (TransferError, OSError, grpc.RpcError) as error:
            self._delivery_failed(done, error)
            return False

    def _complete_batch(self, batch: list[Finished]) -> None:
        request = pb.CompleteTasksRequest(node_id=self.node_id, results=lease_results(batch))
        try:
            response = self._send(self.client.nodes.CompleteTasks, request, batch)
        except grpc.RpcError:  # UNIMPLEMENTED
            log.info("the coordinator takes one lease per call; delivering one by one")
            self.batching = False
            for done in batch:
                self._complete_alone(done)
            return
        if response is not None:
            self._outcomes(batch, response.results)

    def _send(self, method: Any, request: object, batch: list[Finished]) -> Any:
        """A batch's delivery call: its answer, or None when the call failed (each lease
        failed and reported) or the node is stopping (each lease ended). UNIMPLEMENTED is
        raised for the caller to fall back on older calls."""
        try:
            response = self._call(method, request, patience=RECONNECT_PATIENCE)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise
            for done in batch:
                self._delivery_failed(done, error)
            return None
        if response is None:  # stopping while the coordinator was away
            for done in batch:
                self._end(done)
        return response

    def _outcomes(self, batch: list[Finished], results: Iterable[pb.LeaseOutcome]) -> None:
        """Each delivered lease as the coordinator answered it: ended, or failed."""
        if len(batch) > 1:
            log.info("delivered %d leases in one call", len(batch))
        for done, outcome in zip(batch, results, strict=True):
            lease = done.held.lease
            if outcome.accepted:
                metrics.LEASES.labels("delivered").inc()
                log.info("lease %s delivered", lease.lease_id)
                self._end(done, delete=True)
            elif outcome.code == grpc.StatusCode.FAILED_PRECONDITION.name:
                metrics.LEASES.labels("withdrawn").inc()
                log.warning("lease %s withdrawn by the coordinator (%s); dropped",
                            lease.lease_id, outcome.reason)
                self._end(done)
            else:
                self._delivery_failed(done, ValueError(outcome.reason or outcome.code))

    def _complete_alone(self, done: Finished) -> None:
        """CompleteTask for one rendered lease (a coordinator without CompleteTasks)."""
        try:
            self._report_done(done.held.lease, done.outputs)
            metrics.LEASES.labels("delivered").inc()
            self._end(done, delete=True)
        except LeaseWithdrawn:
            metrics.LEASES.labels("withdrawn").inc()
            self._end(done)
        except grpc.RpcError as error:
            self._delivery_failed(done, error)

    def _delivery_failed(self, done: Finished, error: Exception) -> None:
        """As a render that failed: counted, reported with FailTask, forgotten."""
        metrics.LEASES.labels("failed").inc()
        metrics.FAILURES.labels(metrics.failure_kind(error)).inc()
        reason = error.details() if isinstance(error, grpc.RpcError) else str(error)
        log.error("lease %s failed: %s", done.held.lease.lease_id, reason)
        try:
            if not done.held.withdrawn.is_set():
                self._give_up(done.held.lease, reason or "delivery failed")
        except grpc.RpcError as failed:
            log.warning("lease %s: FailTask failed too (%s)", done.held.lease.lease_id,
                        failed.code())
        self._end(done)

    def _end(self, done: Finished, *, delete: bool = False) -> None:
        """The lease is settled either way: no more heartbeats; its images go once delivered,
        its passes files in any case."""
        done.held.withdrawn.set()
        self._forget(done.held)
        discard_passes(done.images.values())
        if delete:
            for path in done.images.values():
                Path(path).unlink(missing_ok=True)

    def _report_done(self, lease: pb.Lease, outputs: list[pb.FrameOutput]) -> None:
        request = pb.CompleteTaskRequest(
            node_id=self.node_id, lease_id=lease.lease_id, outputs=outputs
        )
        try:
            self._call(self.client.nodes.CompleteTask, request, patience=RECONNECT_PATIENCE)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise LeaseWithdrawn from error
            raise
        for output in (self.config.work_dir / "output" / lease.job_id).glob("*"):
            output.unlink(missing_ok=True)
        log.info("lease %s delivered", lease.lease_id)

    def _heartbeats(self, done: threading.Event) -> None:
        """One thread keeps every held lease alive: the rendering one each interval, the
        waiting ones only near their expiry; all that are due in one HeartbeatLeases when
        batching."""
        while not done.wait(max(0.05, self.heartbeat_seconds / 4)):
            now = time.monotonic()
            with self.held_lock:
                due = [h for h in self.held.values() if not h.withdrawn.is_set()
                       and heartbeat_due(h, now, self.heartbeat_seconds)]
            if self.batching and len(due) > 1:
                for start in range(0, len(due), LEASES_PER_CALL):
                    if done.is_set() or not self._beat_many(due[start:start + LEASES_PER_CALL]):
                        break
                else:
                    continue
            for held in due:
                if done.is_set():
                    return
                if not held.withdrawn.is_set() and held.last_beat < now:
                    self._beat(held)

    def _beat_many(self, due: list[HeldLease]) -> bool:
        """One HeartbeatLeases for `due`; False: the coordinator lacks it (beat one by one)."""
        sent = time.monotonic()
        for held in due:
            held.last_beat = sent
        try:
            response = self.client.nodes.HeartbeatLeases(
                pb.HeartbeatLeasesRequest(node_id=self.node_id,
                                          lease_ids=[h.lease.lease_id for h in due]),
                timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                log.info("the coordinator takes one lease per heartbeat")
                self.batching = False
                for held in due:
                    held.last_beat = 0.0
                return False
            log.warning("heartbeat failed (%s); still rendering", error.code())
            return True
        log.debug("renewed %d leases in one call", len(due))
        for held, renewal in zip(due, response.leases, strict=True):
            self._renewed(held, renewal.keep_going, renewal.reason)
        return True

    def _beat(self, held: HeldLease) -> None:
        lease = held.lease
        held.last_beat = time.monotonic()
        try:
            response = self.client.nodes.Heartbeat(
                pb.HeartbeatRequest(node_id=self.node_id, lease_id=lease.lease_id,
                                    frames_done=held.done_frames[0]),
                timeout=CALL_TIMEOUT,
            )
        except grpc.RpcError as error:
            # The coordinator is away; it restores live leases when it returns.
            log.warning("heartbeat failed (%s); still rendering", error.code())
            return
        self._renewed(held, response.keep_going, response.reason)

    def _renewed(self, held: HeldLease, keep_going: bool, reason: str) -> None:
        if keep_going:
            held.expires = held.last_beat + self.lease_seconds
            return
        log.warning("lease %s: coordinator says stop (%s)", held.lease.lease_id, reason)
        rendering = (held.started is not None and not held.rendered
                     and not held.withdrawn.is_set())
        held.withdrawn.set()
        if rendering:
            self.blender.close()  # abandon the frame being rendered

    # ------------------------------------------------------------ calls

    def _call(self, method: Any, request: object, patience: float = 60.0) -> Any:
        """Call the coordinator, waiting out outages up to `patience` seconds.

        Returns None only when the node is stopping.
        """
        deadline = time.monotonic() + patience
        delay = 0.5
        while True:
            # A future, so that stop() need not wait out a long poll of LeaseTask; its answer
            # wakes the node at once (a 0.2 s poll of the future cost ~0.2 s per lease).
            call = method.future(request, timeout=CALL_TIMEOUT, wait_for_ready=True)
            if method is self.client.nodes.LeaseTask:
                answered = threading.Event()
                call.add_done_callback(lambda _call, done=answered: done.set())
                while not answered.wait(STOP_CHECK_SECONDS):
                    if self.stopping.is_set():
                        call.cancel()
                        return None
            try:
                return call.result()
            except grpc.FutureCancelledError:
                return None
            except grpc.RpcError as error:
                if not transient(error) or time.monotonic() > deadline:
                    raise
                log.warning("coordinator busy or unreachable (%s: %s); retrying",
                            error.code().name, error.details())
            if self.stopping.wait(delay):
                return None
            delay = min(delay * 2, 5.0)


def lease_results(batch: list[Finished], signed_by: Keypair | None = None
                  ) -> list[pb.LeaseResult]:
    """The rendered leases as a delivery call carries them. `signed_by`: their frames'
    receipts signed together, one tree for the call (DeliverTasks; each frame was signed
    alone when rendered, for the calls of coordinators from before trees)."""
    results = [pb.LeaseResult(lease_id=done.held.lease.lease_id, outputs=done.outputs)
               for done in batch]
    if signed_by is not None:
        sign_outputs(signed_by, [(done.held.lease, output) for result, done in
                                 zip(results, batch, strict=True) for output in result.outputs])
    return results


def inline_images(images: dict[str, Path]) -> tuple[list[pb.BlobData], dict[str, Path]]:
    """(the images a DeliverTasks call carries, read; the others, to upload first): small
    ones while the call stays within BatchUploadBlobs' bounds."""
    inline: list[pb.BlobData] = []
    larger: dict[str, Path] = {}
    total = 0
    for sha, path in images.items():
        size = path.stat().st_size
        if (size > BATCH_BLOB_BYTES or total + size > BATCH_UPLOAD_BYTES
                or len(inline) >= BATCH_UPLOAD_BLOBS):
            larger[sha] = path
            continue
        data = path.read_bytes()
        inline.append(pb.BlobData(blob=pb.BlobRef(sha256=sha, size=len(data)), data=data))
        total += len(data)
    return inline, larger


def discard_passes(paths: Iterable[Path]) -> None:
    """Delete the passes files among a lease's result blobs: about 28 bytes a pixel each
    (26 MB at 1280x720), needed only until they are uploaded."""
    for path in paths:
        if path.name.endswith(PASSES_SUFFIX):
            path.unlink(missing_ok=True)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(/[^\s'\"/:]+)+/([^\s'\"/:]*)")


def scrub_paths(text: str, work_dir: Path) -> str:
    """A log fit for the creator: the node's folders removed, file names kept."""
    for folder in {str(work_dir.resolve()), str(work_dir)}:
        text = text.replace(folder, "<node>")
    return _ABSOLUTE_PATH.sub(lambda match: "…/" + match.group(2), text)

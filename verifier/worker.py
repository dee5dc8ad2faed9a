"""The verifier's loop: lease a verification, fetch scene and image, check, report.

It speaks the same signed gRPC as nodes, so it runs beside the coordinator (which
starts one by default) or anywhere else with a key the coordinator trusts as a
verifier. The same loop could run on trusted nodes of another operator.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from frameproof.blender.worker import BlenderError, BlenderWorker
from frameproof.client import FarmClient, transient
from frameproof.identity import load_or_create_keypair
from frameproof.limits import TILE_REASON_BYTES, VERDICT_REASON_BYTES, clip_utf8
from frameproof.region import EmptyRegion
from frameproof.render_settings import from_proto, layout, passes_limit
from frameproof.scene_cache import SceneCache
from frameproof.transfer import TransferError, download_blob
from frameproof.v1 import farm_pb2 as pb
from verifier.checker import FrameJob, check_frame
from verifier.compare import MAX_IMAGE_BYTES
from verifier.tiles import Tile

log = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0
HEARTBEAT_MAX_SECONDS = 10.0  # renew at least this often, and at a third of the lease left
STOP_CHECK_SECONDS = 0.2  # how soon a verifier waiting for a check notices stop()


@dataclass(frozen=True)
class VerifierConfig:
    coordinator: str
    work_dir: Path
    keypair_path: Path | None = None
    threads: int = 0
    tls_ca: Path | None = None
    parent_pid: int | None = None  # stop when this process (the coordinator) is gone


class Verifier:
    def __init__(self, config: VerifierConfig) -> None:
        self.config = config
        config.work_dir.mkdir(parents=True, exist_ok=True)
        keypair = load_or_create_keypair(
            config.keypair_path or config.work_dir / "verifier-keypair.json"
        )
        self.verifier_id = str(keypair.pubkey())
        self.client = FarmClient(config.coordinator, keypair, tls_ca=config.tls_ca)
        self.scenes = SceneCache(config.work_dir / "cache", self.client.blobs)
        self.blender = BlenderWorker(
            threads=config.threads, log_path=config.work_dir / "blender.log"
        )
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def _orphaned(self) -> bool:
        """The coordinator that started us died without stopping us (SIGKILL, a crash)."""
        return self.config.parent_pid is not None and os.getppid() != self.config.parent_pid

    def run(self) -> None:
        try:
            while not self.stopping.is_set() and not self._orphaned():
                try:
                    response = self._lease()
                except grpc.RpcError as error:
                    log.warning("coordinator unavailable (%s); retrying", error.code())
                    self.stopping.wait(2.0)
                    continue
                if response is None:  # stopping
                    break
                if not response.HasField("task"):
                    self.stopping.wait(max(0.1, response.retry_after_ms / 1000))
                    continue
                try:
                    self.verify(response.task)
                except Exception as error:  # one check that cannot run must not stop the rest
                    log.exception("verification %s failed; handing it back",
                                  response.task.verification_id)
                    self._release(response.task, f"{type(error).__name__}: {error}")
        finally:
            self.blender.close()
            self.client.close()

    def _lease(self) -> pb.LeaseVerificationResponse | None:
        """One LeaseVerification: a long poll the coordinator answers as soon as a check is
        queued. None when the verifier stops (or its coordinator died) meanwhile."""
        call = self.client.verifier.LeaseVerification.future(
            pb.LeaseVerificationRequest(verifier_id=self.verifier_id,
                                        blender_version=self.blender.blender_version(),
                                        device=self.blender.device),
            timeout=CALL_TIMEOUT)
        answered = threading.Event()
        call.add_done_callback(lambda _call: answered.set())
        while not answered.wait(STOP_CHECK_SECONDS):
            if self.stopping.is_set() or self._orphaned():
                call.cancel()
                return None
        return call.result()

    def _release(self, task: pb.VerificationTask, reason: str) -> None:
        try:
            self.client.verifier.ReleaseVerification(pb.ReleaseVerificationRequest(
                verifier_id=self.verifier_id, verification_id=task.verification_id,
                reason=clip_utf8(reason, VERDICT_REASON_BYTES)), timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:  # the lease lapses instead, which counts the same
            log.warning("could not hand back %s: %s", task.verification_id, error.code())

    def abort_render(self) -> None:
        """Kill the Blender child mid-render (the check was dropped); the next check starts
        a fresh one."""
        pid = self.blender.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def verify(self, task: pb.VerificationTask) -> None:
        scratch = self.config.work_dir / "scratch"
        scratch.mkdir(exist_ok=True)
        image = scratch / f"node-{task.image.sha256}"
        passes = scratch / f"passes-{task.passes.sha256}.exr" if task.passes.sha256 else None
        heartbeat = Heartbeat(self, task)
        heartbeat.start()
        try:
            # bounded like the decoder: a larger frame would be refused unread anyway
            download_blob(self.client.blobs, task.image.sha256, image, max_bytes=MAX_IMAGE_BYTES)
            if passes is not None:
                download_passes(self.client, task, passes)
            blend = self.scenes.fetch(task.scene_id) if task.render_tiles else Path()
            if heartbeat.stop_reason:  # dropped while we downloaded: do not start rendering
                log.info("verification %s dropped: %s", task.verification_id,
                         heartbeat.stop_reason)
                return
            frame = layout(task.settings)
            outcome = check_frame(
                FrameJob(
                    blend=blend,
                    frame=task.frame,
                    settings=from_proto(task.settings),
                    width=frame.width,
                    height=frame.height,
                    area=Tile(frame.area.x, frame.area.y, frame.area.w, frame.area.h),
                    origin=frame.origin,
                    node_blender_version=task.node_blender_version,
                    node_device=task.node_device,
                    render_tiles=task.render_tiles,
                    tile_count=task.tile_count or 3,
                    passes=passes,
                ),
                image,
                self.blender,
                scratch,
            )
        except (TransferError, BlenderError, OSError, EmptyRegion) as error:
            if heartbeat.stop_reason:
                log.info("verification %s stopped: %s", task.verification_id,
                         heartbeat.stop_reason)
                return
            # Our own trouble, not the node's: hand the check back at once (it counts
            # towards the check being held as stuck, never against the node).
            log.error("verification %s could not run: %s", task.verification_id, error)
            self._release(task, f"{type(error).__name__}: {error}")
            return
        finally:
            heartbeat.finish()
            image.unlink(missing_ok=True)
            if passes is not None:
                passes.unlink(missing_ok=True)
        if heartbeat.stop_reason:
            log.info("verification %s dropped: %s", task.verification_id, heartbeat.stop_reason)
            return
        request = pb.SubmitVerificationRequest(
            verifier_id=self.verifier_id,
            verification_id=task.verification_id,
            passed=outcome.passed,
            reason=clip_utf8(outcome.reason, VERDICT_REASON_BYTES),
            pixel_sha256=outcome.pixel_sha256,
            render_seconds=outcome.render_seconds,
            mode=outcome.mode,
            tiles=[
                pb.TileCheck(
                    x=t.x,
                    y=t.y,
                    width=t.w,
                    height=t.h,
                    mode=outcome.mode,
                    outcome=v.outcome.value,
                    scores=v.scores,
                    reason=clip_utf8(v.reason, TILE_REASON_BYTES),
                )
                for t, v in outcome.tiles
            ],
        )
        for attempt in range(10):
            if self._orphaned():
                return
            try:
                self.client.verifier.SubmitVerification(
                    request, timeout=CALL_TIMEOUT, wait_for_ready=True
                )
                break
            except grpc.RpcError as error:
                if not transient(error):
                    log.warning("verdict for %s refused: %s", task.verification_id, error.details())
                    return
                time.sleep(min(2**attempt * 0.2, 5))
        log.info(
            "job %s frame %d: %s (%s) %s",
            task.job_id,
            task.frame,
            "passed" if outcome.passed else "FAILED",
            outcome.mode,
            outcome.reason,
        )


def download_passes(client: FarmClient, task: pb.VerificationTask, dest: Path) -> Path:
    """The node's passes file into ``dest``, hash checked like the image and never more
    bytes than the bound for the job's frame (the coordinator refuses a larger one at
    completion; the verifier does not rest its disk on that)."""
    limit = passes_limit(task.settings)
    if task.passes.size > limit:
        raise TransferError(f"passes {task.passes.sha256[:12]} of {task.passes.size} bytes "
                            f"is over the {limit}-byte bound of the job's frame")
    return download_blob(client.blobs, task.passes.sha256, dest, max_bytes=limit)


class Heartbeat:
    """Renews a check's lease while the verifier works on it (`ExtendVerification`), so a
    check that takes minutes is never re-leased under the verifier's feet; when the
    coordinator says stop (its job was cancelled, or the check is gone) the render is killed."""

    def __init__(self, verifier: Verifier, task: pb.VerificationTask) -> None:
        self.verifier = verifier
        self.task = task
        self.expires = task.expires_unix_ms / 1000 if task.expires_unix_ms else 0.0
        self.stop_reason = ""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="verification-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self._done.set()
        self._thread.join(timeout=CALL_TIMEOUT + 5)

    def interval(self) -> float:
        left = self.expires - time.time() if self.expires else HEARTBEAT_MAX_SECONDS
        return max(1.0, min(HEARTBEAT_MAX_SECONDS, left / 3))

    def _run(self) -> None:
        client = self.verifier.client
        while not self._done.wait(self.interval()):
            try:
                answer = client.verifier.ExtendVerification(pb.ExtendVerificationRequest(
                    verifier_id=self.verifier.verifier_id,
                    verification_id=self.task.verification_id), timeout=CALL_TIMEOUT)
            except grpc.RpcError as error:  # try again sooner; the lease has headroom
                log.warning("lease renewal of %s failed (%s)", self.task.verification_id,
                            error.code())
                continue
            if answer.keep_going:
                self.expires = answer.expires_unix_ms / 1000
                continue
            self.stop_reason = answer.reason or "the coordinator said stop"
            self.verifier.abort_render()
            return

"""A Blender child started ahead of need, for the coordinator's own work on a scene.

Between a creator's upload and the escrow the coordinator opens the scene twice: the intake's
inspection and the probe (coordinator/probe.py). Each started a fresh Python and imported
bpy first: 0.5-1 s apiece on an idle 2-core machine, more on a loaded one, on the critical
path of every new scene. Here one spare child waits with bpy imported and no scene opened;
a request (one caller, one scene) takes it for its inspection and its probe, and closes it
when done. A child that opened one scene is never given another, so one creator's scene
cannot leave anything behind for the next creator's; only the process start-up is shared.
The next spare starts when a request is done, not while its probe renders (it would take
CPU from the renders being timed).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from frameproof.blender.worker import BlenderError, BlenderWorker

log = logging.getLogger(__name__)


class WarmBlender:
    """At most one spare child: started, bpy imported, no scene opened yet."""

    def __init__(self, *, memory_limit_bytes: int, log_path: Path, spare: bool = True) -> None:
        self.memory_limit_bytes = memory_limit_bytes
        self.log_path = log_path  # the spare's output until it is given a scene
        self.spare = spare  # False: every request starts its own child, as before
        self._lock = threading.Lock()
        self._ready: BlenderWorker | None = None
        self._starting: threading.Thread | None = None
        self._closed = False

    def prepare(self) -> None:
        """Start a spare in the background, unless one is ready or starting."""
        with self._lock:
            if not self.spare or self._closed or self._ready is not None:
                return
            worker = self._new()
            thread = threading.Thread(target=self._start, args=(worker,), daemon=True,
                                      name="warm-blender")
            self._ready, self._starting = worker, thread
            thread.start()

    def take(self) -> BlenderWorker:
        """A child that has opened no scene: the spare (waiting for the rest of its start-up
        if it is still starting) or, without one, a new child that starts at its first
        command. Blocks: call it from a worker thread."""
        with self._lock:
            worker, self._ready = self._ready, None
            thread, self._starting = self._starting, None
        if thread is not None:
            thread.join()
        return worker if worker is not None else self._new()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.take().close()

    def _new(self) -> BlenderWorker:
        return BlenderWorker(memory_limit_bytes=self.memory_limit_bytes, log_path=self.log_path)

    def _start(self, worker: BlenderWorker) -> None:
        try:
            worker.start()
        except (BlenderError, OSError) as error:  # whoever takes it starts it again
            log.warning("the spare Blender child did not start: %s", error)
            worker.close()


class SceneSession:
    """One request's Blender child for one scene: taken on first need (the intake's
    inspection, then the probe), closed by `close`; it refuses any other scene."""

    def __init__(self, warm: WarmBlender, scene_id: str) -> None:
        self.warm = warm
        self.scene_id = scene_id
        self._worker: BlenderWorker | None = None

    def worker(self, scene_id: str, *, log_path: Path | None,
               cpu_seconds: float) -> BlenderWorker:
        """The session's child, its output now going to `log_path` (None: where it went)
        and each command limited to `cpu_seconds`. Blocks: call it from a worker thread."""
        if scene_id != self.scene_id:
            raise ValueError(f"this Blender child is for scene {self.scene_id[:12]}, "
                             f"not {scene_id[:12]}")
        if self._worker is None:
            self._worker = self.warm.take()
        self._worker.cpu_seconds = cpu_seconds
        if log_path is not None:
            self._worker.log_to(log_path)
        return self._worker

    @property
    def used(self) -> bool:
        return self._worker is not None

    def close(self) -> None:
        """Close the child (if one was taken) and start the next spare."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()
            self.warm.prepare()

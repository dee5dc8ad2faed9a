"""Parent side of the Blender child process; importable without ``bpy``.

Untrusted scenes are opened only in a child (:mod:`frameproof.blender.child`) that stays alive
across frames. This module starts it lazily, talks JSON lines over two private pipes, enforces
timeouts, turns crashes into exceptions and finalises outputs atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from frameproof.region import RenderRegion

STARTUP_TIMEOUT = 120.0  # importing bpy takes ~0.5 s; allow for a loaded machine
LOG_SWITCH_TIMEOUT = 30.0  # a child answers "log" at once; allow for a loaded machine
EXR_MAGIC = b"\x76\x2f\x31\x01"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RenderSettings:
    """Job overrides; zero/empty means "keep the scene's own value"."""

    engine: str = ""
    samples: int = 0
    resolution_x: int = 0
    resolution_y: int = 0
    resolution_percentage: int = 0
    output_format: str = "PNG"  # "PNG" or "EXR"
    seed: int | None = None  # Cycles seed override; None renders the scene's own seed
    region: RenderRegion | None = None  # the scene's Render Region; None: whole frames


@dataclass(frozen=True)
class SceneInspection:
    """Facts about a .blend, read without running any of its scripts."""

    engine: str
    frame_start: int
    frame_end: int
    resolution_x: int
    resolution_y: int
    resolution_percentage: int
    samples: int
    camera: str | None
    file_blender_version: str
    libraries: list[str]
    missing: list[str]
    output_media_type: str
    scripts_blocked: bool = False  # the file contained scripts that were not run
    # Saved settings the farm keeps (Cycles only; defaults for records made before them).
    seed: int = 0
    animated_seed: bool = False
    adaptive_sampling: bool = False
    adaptive_threshold: float = 0.0
    adaptive_min_samples: int = 0
    denoise: bool = False
    denoiser: str = ""
    time_limit: float = 0.0  # seconds; not reproducible: the farm renders the full samples
    dither: float = 0.0
    freestyle: bool = False
    freestyle_scripts: bool = False  # Python-scripting mode: turned off by the farm
    stamp_burned: bool = False
    render_region: bool = False  # the scene saves a Render Region (rendered as saved)
    # [min_x, max_x, min_y, max_y] and Crop to Render Region; None in records inspected
    # before regions were rendered (those jobs render whole frames)
    region: list[float] | None = None
    region_crop: bool = False
    output_path: str = ""  # Output Properties' path, e.g. //render/shot_#### ("": none read)


@dataclass(frozen=True)
class RenderResult:
    output: Path
    seconds: float
    width: int
    height: int
    blender_version: str
    device: str
    # for tile renders: "tile" (exact), "noisy" (denoised, checked on its noisy pass),
    # "padded" (other denoised scenes, close), "close" (volume) or "whole"
    strategy: str = ""
    # the render's passes as a multilayer EXR, when asked for and the scene's frames are
    # checked on their noisy pass (``child.noisy_pass_verifiable``); None otherwise
    passes: Path | None = None


@dataclass(frozen=True)
class TilePlan:
    """How the verifier reproduces a tile of a job (see ``child.tile_strategy``)."""

    strategy: str  # "tile" (exact), "noisy" (denoised: its noisy pass is exact), "padded"
    # (other denoised scenes), "close" (volume): with a margin; "whole"
    seed: int  # the Cycles seed the job renders with (the scene's unless overridden)


class BlenderError(Exception):
    """The scene or command failed; the message is for humans."""


class BlenderCrashed(BlenderError):
    """The child died (segfault, OOM kill, ...)."""


class BlenderTimeout(BlenderError):
    """The child did not answer in time and was killed."""


class BlenderWorker:
    """A persistent Blender child: the .blend stays loaded between frames of the same job.

    Not meant for concurrent use; calls are serialised by a lock.
    """

    def __init__(
        self,
        *,
        threads: int = 0,
        memory_limit_bytes: int | None = None,
        log_path: Path | None = None,
        device: str = "CPU",
        cpu_seconds: float | None = None,
    ) -> None:
        self.threads = threads
        self.memory_limit_bytes = memory_limit_bytes
        self.cpu_seconds = cpu_seconds  # CPU-time budget of each command (all threads)
        self.log_path = Path(log_path) if log_path is not None else None
        self.device = device
        self._proc: subprocess.Popen[bytes] | None = None
        self._cmd: Any = None  # binary file object writing to the child's command pipe
        self._reply_fd: int | None = None
        self._buffer = b""
        self._version: str | None = None
        self._log_start = 0  # where this child's output starts in the log
        self._lock = threading.RLock()

    # -- public API -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def blender_version(self) -> str:
        """Version of the bpy in the child (starts it if needed)."""
        with self._lock:
            self._ensure_started()
            assert self._version is not None
            return self._version

    def start(self) -> None:
        """Start the child now (importing bpy) rather than at the first command."""
        with self._lock:
            self._ensure_started()

    def log_to(self, path: Path) -> None:
        """Send Blender's output to ``path`` (appended) from now on, this child's and any
        child started after it: a child started ahead of need gets its scene's log."""
        path = Path(path)
        with self._lock:
            self.log_path = path
            if self._proc is None or self._proc.poll() is not None:
                return  # the next start opens it
            try:
                self._log_start = path.stat().st_size
            except OSError:
                self._log_start = 0
            self._request({"cmd": "log", "path": str(path.resolve())}, LOG_SWITCH_TIMEOUT)

    def inspect(self, blend: Path, *, timeout: float = 120.0) -> SceneInspection:
        """Open ``blend`` in the child and report its facts and missing dependencies."""
        reply = self._call({"cmd": "inspect", "blend": str(Path(blend).resolve()),
                            "cpu_seconds": self.cpu_seconds}, timeout)
        return SceneInspection(**reply["scene"])

    def render_frame(
        self,
        blend: Path,
        frame: int,
        output: Path,
        settings: RenderSettings,
        *,
        border: tuple[float, float, float, float] | None = None,
        tile: tuple[int, int, int, int] | None = None,
        size: tuple[int, int] | None = None,
        passes: Path | None = None,
        noisy_pass: bool = False,
        timeout: float = 600.0,
    ) -> RenderResult:
        """Render one frame to ``output`` (written atomically, PNG metadata stripped).

        ``noisy_pass`` (the verifier's references of a ``noisy`` scene): render with the
        denoiser off, so ``output`` shows the noisy pass through the scene's view transform and
        the passes file holds it as ``Combined``.

        ``passes``: where to write the render's passes (a float32 multilayer EXR) when the
        scene is denoised in a way the verifier checks on the noisy pass; the result says
        whether it was written. Asked for by nodes on every frame and by the verifier's tiles.

        ``border`` renders a region cropped to it; ``tile`` (x, y, w, h in pixels, top-left
        origin) renders what reproduces that tile of the full frame (the tile, the tile with
        a margin for denoised scenes, or the whole frame: ``RenderResult.strategy``) into a
        file of the full frame's size, to be cropped by the caller. ``size`` (width, height)
        renders the whole frame at that size instead of the scene's (the coordinator's
        probe); the scene stays loaded at its own.
        """
        if size is not None and not (len(size) == 2 and min(size) >= 1):
            raise ValueError(f"size must be (width, height) of at least one pixel, got {size}")
        output = Path(output).resolve()
        output.parent.mkdir(parents=True, exist_ok=True)
        fmt = settings.output_format.upper()
        suffix = {"PNG": ".png", "EXR": ".exr"}.get(fmt)
        if suffix is None:
            raise BlenderError(f"unsupported output format {settings.output_format!r}")
        tmp = output.parent / f".{output.name}.{uuid.uuid4().hex[:12]}.partial{suffix}"
        passes_tmp = None
        if passes is not None:
            passes = Path(passes).resolve()
            passes.parent.mkdir(parents=True, exist_ok=True)
            passes_tmp = passes.parent / f".{passes.name}.{uuid.uuid4().hex[:12]}.partial.exr"
        msg = {
            "cmd": "render",
            "blend": str(Path(blend).resolve()),
            "frame": int(frame),
            "output": str(tmp),
            "settings": asdict(settings),
            "threads": self.threads,
            "border": list(border) if border is not None else None,
            "tile": list(tile) if tile is not None else None,
            "size": [int(v) for v in size] if size is not None else None,
            "passes": str(passes_tmp) if passes_tmp is not None else None,
            "noisy_pass": noisy_pass,
            "device": self.device,
            "cpu_seconds": self.cpu_seconds,
        }
        written = None
        try:
            with self._lock:
                reply = self._call(msg, timeout)
                version = self._version or ""
            width, height = _finalise(tmp, fmt, reply)
            if reply.get("passes") and passes is not None and passes_tmp is not None:
                _finalise(passes_tmp, "EXR", reply)
                os.replace(passes_tmp, passes)
                written = passes
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)
            if passes_tmp is not None:
                passes_tmp.unlink(missing_ok=True)
        return RenderResult(
            output=output,
            seconds=float(reply["seconds"]),
            width=width,
            height=height,
            blender_version=version,
            device=self.device,
            strategy=str(reply.get("strategy") or ""),
            passes=written,
        )

    def denoise_passes(
        self,
        blend: Path,
        frame: int,
        passes: Path,
        output: Path,
        settings: RenderSettings,
        *,
        noisy_output: Path | None = None,
        timeout: float = 600.0,
    ) -> RenderResult:
        """The frame the scene's own denoiser makes of a passes file (the verifier's re-run).

        Written to ``output`` in the job's format, like a render; only the compositor runs.
        ``noisy_output``: also write the file's noisy pass as the scene's view shows it (PNG),
        what the statistical tests judge.
        """
        output = Path(output).resolve()
        fmt = settings.output_format.upper()
        tmp = output.parent / f".{output.name}.{uuid.uuid4().hex[:12]}.partial.{fmt.lower()}"
        msg = {
            "cmd": "denoise",
            "blend": str(Path(blend).resolve()),
            "frame": int(frame),
            "passes": str(Path(passes).resolve()),
            "output": str(tmp),
            "settings": asdict(settings),
            "device": self.device,
            "cpu_seconds": self.cpu_seconds,
        }
        noisy_tmp = None
        if noisy_output is not None:
            noisy_output = Path(noisy_output).resolve()
            noisy_tmp = noisy_output.parent / f".{noisy_output.name}.{uuid.uuid4().hex[:12]}.png"
            msg["noisy_output"] = str(noisy_tmp)
        try:
            with self._lock:
                reply = self._call(msg, timeout)
                version = self._version or ""
            width, height = _finalise(tmp, fmt, reply)
            if noisy_output is not None and noisy_tmp is not None:
                _finalise(noisy_tmp, "PNG", reply)
                os.replace(noisy_tmp, noisy_output)
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)
            if noisy_tmp is not None:
                noisy_tmp.unlink(missing_ok=True)
        return RenderResult(output=output, seconds=float(reply["seconds"]), width=width,
                            height=height, blender_version=version, device=self.device)

    def tile_plan(self, blend: Path, settings: RenderSettings, *,
                  timeout: float = 120.0) -> TilePlan:
        """How a tile of this job is reproduced, and the seed it renders with.

        Loads the scene with the job's settings, so the next render of it starts warm.
        """
        reply = self._call({"cmd": "strategy", "blend": str(Path(blend).resolve()),
                            "settings": asdict(settings), "device": self.device,
                            "cpu_seconds": self.cpu_seconds}, timeout)
        return TilePlan(str(reply["strategy"]), int(reply["seed"]))

    def close(self) -> None:
        """Ask the child to quit, then make sure it is gone."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            try:
                self._send({"cmd": "quit"})
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, BlenderError):
                pass
            self._reset(kill=True)

    def __enter__(self) -> BlenderWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._proc is not None:
            self._reset(kill=True)

    # -- child management -------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._reset(kill=True)
        cmd_r, cmd_w = os.pipe()
        reply_r, reply_w = os.pipe()
        argv = [
            sys.executable,
            "-m",
            "frameproof.blender.child",
            "--cmd-fd",
            str(cmd_r),
            "--reply-fd",
            str(reply_w),
        ]
        if self.memory_limit_bytes:
            argv += ["--memory-limit-bytes", str(int(self.memory_limit_bytes))]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
        )
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self._log_start = log.tell() if log else 0
        try:
            self._proc = subprocess.Popen(
                argv,
                pass_fds=(cmd_r, reply_w),
                stdin=subprocess.DEVNULL,
                stdout=log if log else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # own process group: a timeout kills all of it
            )
        except BaseException:
            for fd in (cmd_r, cmd_w, reply_r, reply_w):
                os.close(fd)
            raise
        finally:
            if log:
                log.close()
            if self._proc is not None:
                os.close(cmd_r)
                os.close(reply_w)
        self._cmd = os.fdopen(cmd_w, "wb", buffering=0)
        self._reply_fd = reply_r
        self._buffer = b""
        reply = self._request({"cmd": "ping"}, STARTUP_TIMEOUT)
        self._version = str(reply["blender_version"])

    def _reset(self, *, kill: bool) -> None:
        """Forget the child (killing its process group if asked) so the next call starts anew."""
        proc, self._proc = self._proc, None
        if self._cmd is not None:
            with contextlib.suppress(OSError):
                self._cmd.close()
            self._cmd = None
        if self._reply_fd is not None:
            os.close(self._reply_fd)
            self._reply_fd = None
        self._buffer = b""
        self._version = None
        if proc is None:
            return
        if kill and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _call(self, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Start the child if needed, then send one command (start-up not counted in timeout)."""
        with self._lock:
            self._ensure_started()
            return self._request(msg, timeout)

    def _request(self, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._send(msg)
        reply = self._receive(timeout, what=msg["cmd"])
        if not reply.get("ok"):
            raise BlenderError(str(reply.get("error") or "Blender reported an unknown error"))
        return reply

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            self._cmd.write(json.dumps(msg).encode() + b"\n")
        except (BrokenPipeError, OSError, AttributeError):
            raise self._crashed() from None

    def _receive(self, timeout: float, *, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        poller = select.poll()
        assert self._reply_fd is not None
        poller.register(self._reply_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                pid = self.pid
                self._reset(kill=True)
                raise BlenderTimeout(
                    f"Blender (pid {pid}) did not answer {what!r} within {timeout:g} s; killed"
                )
            chunk = os.read(self._reply_fd, 65536)
            if not chunk:
                raise self._crashed()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            self._reset(kill=True)
            raise BlenderCrashed(f"Blender child sent a malformed reply: {line[:200]!r}") from None

    def _out_of_memory(self) -> bool:
        """Blender logs "Malloc returns null" when an allocation fails (e.g. at RLIMIT_AS)."""
        if not self.log_path or not self.memory_limit_bytes:
            return False
        try:
            with open(self.log_path, "rb") as log:  # only what this child wrote
                log.seek(max(self._log_start, log.seek(0, os.SEEK_END) - 65536))
                return b"Malloc returns null" in log.read()
        except OSError:
            return False

    def _crashed(self) -> BlenderCrashed:
        """Build the exception for a dead child (reaping it first) and reset."""
        proc = self._proc
        pid = proc.pid if proc else None
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        self._reset(kill=True)
        if code is None:
            how = "stopped answering (pipe closed)"
        elif code == -signal.SIGXCPU:
            how = f"exceeded its CPU-time limit of {self.cpu_seconds:.0f} s"
        elif code < 0:
            how = f"was killed by signal {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        if self._out_of_memory():
            limit = self.memory_limit_bytes or 0
            how += f": it ran out of memory (limit {limit / 2**30:.1f} GiB)"
        where = f"; see {self.log_path}" if self.log_path else ""
        return BlenderCrashed(f"Blender child (pid {pid}) {how}{where}")


def _finalise(tmp: Path, fmt: str, reply: dict[str, Any]) -> tuple[int, int]:
    """Check the file Blender wrote; for PNG re-encode it to drop Blender's metadata."""
    if not tmp.is_file() or tmp.stat().st_size == 0:
        raise BlenderError(f"Blender wrote no output file ({tmp.name})")
    if fmt == "EXR":
        with tmp.open("rb") as f:
            if f.read(4) != EXR_MAGIC:
                raise BlenderError("Blender's EXR output is not an OpenEXR file")
        return int(reply["width"]), int(reply["height"])
    import cv2  # lazy: keeps this module light for the coordinator and the child

    pixels = cv2.imread(str(tmp), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise BlenderError("Blender's PNG output does not decode")
    if not cv2.imwrite(str(tmp), pixels):
        raise BlenderError("could not re-encode the rendered PNG")
    height, width = pixels.shape[:2]
    return int(width), int(height)


def inspect_scene(
    blend: Path,
    *,
    timeout: float = 120.0,
    memory_limit_bytes: int | None = None,
    cpu_seconds: float | None = None,
    log_path: Path | None = None,
) -> SceneInspection:
    """One-shot inspection in a fresh child (used by the coordinator's intake)."""
    with BlenderWorker(memory_limit_bytes=memory_limit_bytes, cpu_seconds=cpu_seconds,
                       log_path=log_path) as worker:
        return worker.inspect(blend, timeout=timeout)

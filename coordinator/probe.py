"""The probe: the coordinator times the scene itself before a job's escrow is asked for.

Up to three of the job's frames (first, middle, last) are rendered at the job's effective
settings in a Blender child on the coordinator's machine (scripts off, the intake's memory and
CPU limits). Small frames are rendered whole; big ones are rendered whole at two reduced sizes
(the small one twice), which separates the frame's fixed cost (scene sync, BVH, writing) from
its per-pixel cost, and the full size is extrapolated (`scaled_frame_seconds`). A reduced frame
sees the whole picture, background and subject in their proportions, where the centred tiles
before it saw the subject only (on the hd sample they said 1.46-1.54x the whole frame's time,
the reduced sizes 0.93-1.09x; docs/BENCHMARKS.md, "probe sizes").

Seconds on this machine become reference seconds through the coordinator's own benchmark
score (`frameproof.benchmark`, measured once and cached under the data dir): the network
measures, nobody claims. Probes are cached by (scene, effective settings, probed frames) so
SubmitJob reuses EstimateJob's probe and quote. See docs/PRICING.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from coordinator.domain.pricing import (
    Quote,
    finite_positive,
    pixel_sample_estimate,
    quote_from_probe,
    scaled_frame_seconds,
)
from coordinator.storage.models import PriceProbeRecord
from coordinator.storage.pricing_store import PricingStore
from coordinator.warm_blender import SceneSession
from frameproof import benchmark
from frameproof.blender.worker import BlenderError, BlenderTimeout, BlenderWorker, RenderSettings
from frameproof.render_settings import frame_size, from_proto, layout
from frameproof.v1 import farm_pb2 as pb

log = logging.getLogger(__name__)

MAX_PROBE_FRAMES = 3
# Frames up to this many pixel-samples are probed whole (320x180 at 64 samples); bigger ones
# at reduced sizes whose large one holds about LARGE_PIXEL_SAMPLES.
FULL_FRAME_PIXEL_SAMPLES = 320 * 180 * 64
LARGE_PIXEL_SAMPLES = FULL_FRAME_PIXEL_SAMPLES // 4
LARGE_AREA_MAX = 1 / 4  # the large size's share of the frame's pixels at most
MIN_LARGE_PIXELS = 64 * 64  # the large size's pixels at least (the small one: 32x32)
MAX_LARGE_PIXEL_SAMPLES = 16 * LARGE_PIXEL_SAMPLES
PROBE_DEADLINE = 120.0  # seconds of wall time for a whole probe; past it, the estimate falls back
PROBE_MEMORY_BYTES = 4 * 2**30  # as for intake
PROBE_CPU_SECONDS = 600.0  # CPU seconds per probe render, all threads together
MACHINE_BENCHMARK_FILE = "machine-benchmark.json"

Size = tuple[int, int]


@dataclass(frozen=True)
class ProbeSizes:
    """The sizes a big frame is probed at: its own and two reduced ones in its aspect."""

    frame: Size
    small: Size
    large: Size

    def share(self, size: Size) -> float:
        """The share of the frame's pixels a reduced size renders."""
        return size[0] * size[1] / (self.frame[0] * self.frame[1])


def probe_frames(frames: list[int], scaled: bool = False) -> list[int]:
    """First, middle and last of the job's frames (fewer for short jobs), in order.

    A scaled probe (big frames) pays a frame's fixed cost three times: a job of few big
    frames has at most half of them probed, so the estimate does not cost a good part of the
    job (a 2-frame 1280x720 job: its first frame; docs/BENCHMARKS.md, "small and hd jobs")."""
    if not frames:
        raise ValueError("a job has at least one frame")
    ordered = sorted(frames)
    picks = sorted({ordered[0], ordered[len(ordered) // 2], ordered[-1]})[:MAX_PROBE_FRAMES]
    return picks[:max(1, len(ordered) // 2)] if scaled else picks


def settings_digest(settings: pb.RenderSettings) -> str:
    """The effective settings as a stable digest (every field, defaults included)."""
    fields: dict[str, object] = {f.name: getattr(settings, f.name)
                                 for f in settings.DESCRIPTOR.fields if f.message_type is None}
    if settings.HasField("region"):  # absent: the digest of settings from before regions
        fields["region"] = settings.region.SerializeToString(deterministic=True).hex()
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def probe_key(scene_id: str, settings: pb.RenderSettings, frames: list[int]) -> str:
    text = json.dumps([scene_id, settings_digest(settings), sorted(frames)])
    return hashlib.sha256(text.encode()).hexdigest()


class ProbeTooBig(ValueError):
    """Even the smallest sizes would take too long: the estimate falls back (and says why)."""


def probe_sizes(width: int, height: int, samples: int) -> ProbeSizes | None:
    """The reduced sizes a big frame is probed at; None: probe it whole.

    The large size holds about LARGE_PIXEL_SAMPLES (at most a quarter of the frame's pixels,
    at least MIN_LARGE_PIXELS), the small one a quarter of it, both in the frame's aspect;
    a frame whose large size would still exceed MAX_LARGE_PIXEL_SAMPLES (absurd sample
    counts) raises ProbeTooBig.
    """
    if width < 1 or height < 1:
        raise ValueError(f"a frame has at least one pixel, got {width}x{height}")
    pixels = width * height
    pixel_samples = pixels * max(1, samples)
    if pixel_samples <= FULL_FRAME_PIXEL_SAMPLES:
        return None
    area = min(LARGE_AREA_MAX, max(MIN_LARGE_PIXELS / pixels, LARGE_PIXEL_SAMPLES / pixel_samples))
    if area * pixel_samples > MAX_LARGE_PIXEL_SAMPLES:
        raise ProbeTooBig(f"{pixels} pixels x {samples} samples is too much to probe in "
                          f"{PROBE_DEADLINE:.0f} s")
    return reduced_sizes(width, height, area)


def reduced_sizes(width: int, height: int, area: float) -> ProbeSizes:
    """The frame's sizes whose large one holds about `area` of its pixels, the small one a
    quarter of that, both in the frame's aspect."""
    if not 0 < area <= 1:
        raise ValueError(f"the large size's share must be in (0, 1], got {area}")
    scale = math.sqrt(area)
    large = (max(2, round(width * scale)), max(2, round(height * scale)))
    return ProbeSizes((width, height), (large[0] // 2, large[1] // 2), large)


def time_frames(blend: Path, settings: RenderSettings, frames: list[int],
                sizes: ProbeSizes | None, *, log_path: Path | None = None,
                deadline: float = PROBE_DEADLINE,
                worker: BlenderWorker | None = None) -> list[float]:
    """This machine's seconds for each frame (extrapolated from reduced sizes when `sizes`
    is set).

    All renders together get `deadline` seconds of wall time (BlenderTimeout past it).
    `worker`: the child to render in (its owner closes it); None: a fresh one.
    """
    seconds: list[float] = []
    end = time.monotonic() + deadline
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="fp-probe-"))
        child = worker if worker is not None else stack.enter_context(BlenderWorker(
            memory_limit_bytes=PROBE_MEMORY_BYTES, cpu_seconds=PROBE_CPU_SECONDS,
            log_path=log_path))

        def render(frame: int, size: Size | None) -> float:
            left = end - time.monotonic()
            if left <= 0:
                raise BlenderTimeout(f"the probe took longer than {deadline:.0f} s")
            return child.render_frame(blend, frame, Path(tmp) / "probe.png", settings,
                                      size=size, timeout=left).seconds

        for frame in frames:
            if sizes is None:
                seconds.append(render(frame, None))
                continue
            first = render(frame, sizes.small)
            big = render(frame, sizes.large)
            again = render(frame, sizes.small)
            seconds.append(scaled_frame_seconds(
                max(0.0, first - again), (sizes.share(sizes.small), again),
                (sizes.share(sizes.large), big)))
    return seconds
class MachineScore:
    """The coordinator's own benchmark score: measured on first need, then read from disk."""

    def __init__(self, data_dir: Path, fixed: float | None = None) -> None:
        self.path = data_dir / MACHINE_BENCHMARK_FILE
        self.fixed = fixed
        self._lock = threading.Lock()

    def get(self) -> float:
        if self.fixed is not None:
            return self.fixed
        with self._lock:
            try:
                score = float(json.loads(self.path.read_text())["score"])
                if math.isfinite(score) and score > 0:
                    return score
            except (OSError, ValueError, KeyError, TypeError):
                pass
            log.info("measuring this machine's benchmark score (once; cached in %s)", self.path)
            result = benchmark.run_benchmark()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(result)))
            tmp.replace(self.path)
            return result.score


class Prober:
    """Probes scenes (one at a time: a probe uses the whole machine) and caches the result."""

    def __init__(self, store: PricingStore, machine: MachineScore, *,
                 logs_dir: Path | None = None) -> None:
        self.store = store
        self.machine = machine
        self.logs_dir = logs_dir
        self._running = asyncio.Lock()

    async def probe(self, scene_id: str, blend: Path, settings: pb.RenderSettings,
                    job_frames: list[int], *,
                    session: SceneSession | None = None) -> PriceProbeRecord:
        """The cached probe for these settings and frames, probing now if there is none
        (in the request's Blender child for the scene when `session` is given)."""
        frames = probe_frames(job_frames, scaled=_scaled(settings))
        key = probe_key(scene_id, settings, frames)
        known = self.store.probe(key)
        if known is not None:
            return known
        async with self._running:  # waiting callers of the same key find it cached
            known = self.store.probe(key)
            if known is not None:
                return known
            record = await asyncio.to_thread(self._measure, key, scene_id, blend, settings,
                                             frames, session)
            self.store.save_probe(record)
            return record

    def _measure(self, key: str, scene_id: str, blend: Path, settings: pb.RenderSettings,
                 frames: list[int], session: SceneSession | None) -> PriceProbeRecord:
        width, height = frame_size(settings)
        started = time.monotonic()
        note = ""
        seconds: list[float] = []
        score = 0.0
        sizes = None
        try:
            sizes = probe_sizes(max(1, width), max(1, height), settings.samples)
            score = self.machine.get()
            log_path = self.logs_dir / f"{scene_id}.probe.log" if self.logs_dir else None
            worker = None
            if session is not None:
                worker = session.worker(scene_id, log_path=log_path,
                                        cpu_seconds=PROBE_CPU_SECONDS)
            seconds = time_frames(blend, from_proto(settings), frames, sizes, log_path=log_path,
                                  worker=worker)
            quote = quote_from_probe(seconds, score, scaled=sizes is not None)
        except (BlenderError, ValueError, OSError, subprocess.SubprocessError) as error:
            note = f"the probe render failed ({error}); estimated from pixels x samples instead"
            log.warning("probe of scene %s: %s", scene_id[:12], note)
            quote = self._fallback(settings)
        log.info("probe of scene %s frames %s: %s ms/frame (%s..%s, %s) in %.1f s",
                 scene_id[:12], frames, quote.ms_per_frame, quote.low_ms_per_frame,
                 quote.high_ms_per_frame, quote.method, time.monotonic() - started)
        return PriceProbeRecord(
            probe_key=key, scene_id=scene_id, frames_json=json.dumps(frames),
            seconds_json=json.dumps([s for s in seconds if finite_positive(s)]),
            machine_score=score, method=quote.method, ms_per_frame=quote.ms_per_frame,
            low_ms_per_frame=quote.low_ms_per_frame, high_ms_per_frame=quote.high_ms_per_frame,
            note=note, created_at=time.time())

    @staticmethod
    def _fallback(settings: pb.RenderSettings) -> Quote:
        area = layout(settings).area  # the pixels rendered: the whole frame or its region
        return pixel_sample_estimate(width=max(1, area.w), height=max(1, area.h),
                                     samples=max(1, settings.samples))


def _scaled(settings: pb.RenderSettings) -> bool:
    """Whether these settings' frames are probed at reduced sizes (or are too big to probe)."""
    width, height = frame_size(settings)
    try:
        return probe_sizes(max(1, width), max(1, height), settings.samples) is not None
    except ProbeTooBig:
        return True


def quote_of(record: PriceProbeRecord) -> Quote:
    return Quote(record.ms_per_frame, record.low_ms_per_frame, record.high_ms_per_frame,
                 record.method)

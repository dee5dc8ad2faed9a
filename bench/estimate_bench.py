"""Estimate accuracy: what a job was finally charged against what the estimate said.

    .venv/bin/python bench/estimate_bench.py [--frames 1-4] [--scenes plain,skin,...]
    .venv/bin/python bench/estimate_bench.py --sizes   # the probe's extrapolation vs whole frames

Builds seven tiny scenes whose cost per pixel-sample differs by far more than 4x
(bench/scenes/estimate_scenes.py, a fog volume among them), starts a real LocalFarm
(coordinator + two nodes, the coordinator measuring its own benchmark score), and for each
scene runs `frameproof estimate` then `frameproof submit` with the default budget, waits for
the job and its refund, and reads the receipts. Written to docs/BENCHMARKS.md ("estimate accuracy"):

- charged / estimate: the goal is 0.67-1.5x on every scene;
- rendered / estimate: the nodes' own render seconds (honest nodes here) times the
  coordinator's score over the estimate: how well the probe predicts the real work;
- old / charged: the previous estimate (pixels x samples / benchmark throughput) against the
  charge, to show what the probe fixes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from coordinator.cli import MACHINE_SCORE_ENV  # noqa: E402
from coordinator.domain.pricing import (  # noqa: E402
    PricingConfig,
    estimate,
    pixel_sample_estimate,
    scaled_frame_seconds,
)
from coordinator.probe import (  # noqa: E402
    LARGE_AREA_MAX,
    MIN_LARGE_PIXELS,
    probe_sizes,
    reduced_sizes,
    time_frames,
)
from frameproof.blender.worker import BlenderWorker, RenderSettings  # noqa: E402
from frameproof.client import FarmClient  # noqa: E402
from frameproof.creator import Creator, JobOptions  # noqa: E402
from frameproof.localfarm import LocalFarm  # noqa: E402
from frameproof.v1 import farm_pb2 as pb  # noqa: E402

SCENES = ("plain", "fog", "skin", "glass", "dense", "textures", "growing")
TIER = 3
COMMAND = ".venv/bin/python bench/estimate_bench.py"


def wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def run_scene(client: FarmClient, blend: Path, frames: str, score: float) -> dict:
    creator = Creator(client)
    scene_id = creator.upload_scene(blend).scene_id
    started = time.monotonic()
    est = client.jobs.EstimateJob(pb.EstimateRequest(scene_id=scene_id, frames=frames,
                                                     tier=TIER), timeout=600)
    probe_seconds = time.monotonic() - started
    job = creator.submit(scene_id, JobOptions(frames=frames, tier=TIER, name=blend.stem)).job

    def ended() -> pb.Job | None:
        current = client.jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), timeout=30)
        return current if current.state in (pb.JOB_STATE_DONE, pb.JOB_STATE_FAILED,
                                             pb.JOB_STATE_CANCELLED) else None

    final = wait(ended, 1800, f"job {job.job_id}")

    def landed() -> pb.Receipts | None:
        receipts = client.jobs.GetReceipts(pb.ReceiptsRequest(job_id=job.job_id), timeout=30)
        return receipts if receipts.refund_state == "landed" else None

    receipts = wait(landed, 300, f"the refund of job {job.job_id}")
    rendered = client.jobs.ListFrames(pb.ListFramesRequest(job_id=job.job_id), timeout=30)
    seconds = [f.render_seconds for f in rendered.frames]
    settings = final.settings
    old = estimate(PricingConfig(), pixel_sample_estimate(
        width=settings.resolution_x, height=settings.resolution_y, samples=settings.samples,
        resolution_percentage=settings.resolution_percentage), frames=est.frames, tier=TIER)
    pixel_samples = (settings.resolution_x * settings.resolution_y
                     * settings.resolution_percentage ** 2 // 10_000 * settings.samples)
    return {
        "scene": blend.stem,
        "state": pb.JobState.Name(final.state).removeprefix("JOB_STATE_").lower(),
        "frames": est.frames,
        "samples": settings.samples,
        "probe_ms": est.reference_seconds_per_frame * 1000,
        "probe_wall_s": probe_seconds,
        "us_per_pixel_sample": est.reference_seconds_per_frame * 1e6 / pixel_samples,
        "estimate": est.cost_usd,
        "low": est.cost_low_usd,
        "high": est.cost_high_usd,
        "charged": receipts.total_cost_usd,
        "rendered_ref_s": sum(seconds) * score,
        "estimate_ref_s": est.reference_seconds_per_frame * est.frames,
        "old": float(old.cost_usd),
        "median_node_s": statistics.median(seconds) if seconds else 0.0,
    }


def table(rows: list[dict], score: float, frames: str) -> str:
    lines = [
        f"{len(rows)} 160x90 Cycles scenes, frames {frames}, tier {TIER}, default budget (the "
        f"top of the estimate's range); coordinator + two nodes (one thread each) of a "
        f"LocalFarm on this machine; the coordinator's own benchmark score was {score:.3f}.",
        "",
        "| scene | samples | probe ref ms/frame | ref µs per pixel-sample | estimate $ | "
        "range $ | charged $ | charged ÷ estimate | rendered ÷ estimate | old ÷ charged | "
        "job |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scene']} | {r['samples']} | {r['probe_ms']:.0f} | "
            f"{r['us_per_pixel_sample']:.2f} | {r['estimate']:.6f} | {r['low']:.6f}.."
            f"{r['high']:.6f} | {r['charged']:.6f} | **{r['charged'] / r['estimate']:.2f}** | "
            f"{r['rendered_ref_s'] / r['estimate_ref_s']:.2f} | {r['old'] / r['charged']:.2f} | "
            f"{r['state']} |")
    costs = [r["us_per_pixel_sample"] for r in rows]
    ratios = [r["charged"] / r["estimate"] for r in rows]
    lines += [
        "",
        f"Cost per pixel-sample spans {max(costs) / min(costs):.1f}x across the scenes; "
        f"charged ÷ estimate spans {min(ratios):.2f}..{max(ratios):.2f} "
        f"({'all within' if all(0.67 <= x <= 1.5 for x in ratios) else 'NOT all within'} "
        "the 0.67-1.5x goal).",
        "",
        "Charged ÷ estimate is close to 1 by design: each frame is priced from the job's quote "
        "(the probe), scaled by the frame's time relative to its node's median on the job "
        "(clamped to 0.5-1.5x). Rendered ÷ estimate is the independent check of the probe: "
        "the nodes' reported render seconds (honest nodes here, one thread each, so up to 2x "
        "slower than the probe's two threads) times the coordinator's score, over the "
        "estimate's reference seconds. Old ÷ charged is what the pixels x samples estimate "
        "(the model before the probe) would have said. See docs/PRICING.md. Load average "
        f"of this machine at the end of the run: {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (the probe and the nodes compete with whatever else runs).",
    ]
    return "\n".join(lines)


def centred_tiles_seconds(worker: BlenderWorker, blend: Path, settings: RenderSettings,
                          frame: int, out: Path) -> float:
    """The probe before the reduced sizes, for comparison: a 1/16 and a 1/4 centred border render
    (the small one twice), extrapolated the same way."""

    def render(area: float) -> float:
        side = area ** 0.5
        border = (0.5 - side / 2, 0.5 + side / 2, 0.5 - side / 2, 0.5 + side / 2)
        return worker.render_frame(blend, frame, out, settings, border=border,
                                   timeout=600).seconds

    first, big, again = render(1 / 16), render(1 / 4), render(1 / 16)
    return scaled_frame_seconds(max(0.0, first - again), (1 / 16, again), (1 / 4, big))


def sizes_against_frames(scenes: list[tuple[str, Path, int]], frames: list[int]) -> str:
    """The probe's extrapolation from reduced sizes, and the centred tiles it replaced,
    against whole frames, side by side on this machine, with what each probe cost."""
    lines = [
        f"Seconds per frame on this machine for frames {frames} of each scene: whole frames "
        "against the probe's extrapolation from the frame at two reduced sizes (the small "
        "one twice; `coordinator.probe.time_frames`) and against the centred tiles it "
        "replaced (a 1/16 and a 1/4 border render, the small one twice), interleaved per "
        "frame, each method in its own Blender child. Sizes: the hd sample's are the ones "
        "the probe picks for it (`probe_sizes`); the 160x90 estimate scenes are below the "
        "size the probe reduces, so they get its smallest reduction (the large size a "
        "quarter of the frame, as the tiles). Probe s: the wall time of the method's "
        "renders of one frame in a started child, scene load included.",
        "",
        "| scene | size | whole s | reduced sizes | reduced, extrapolated s | ÷ whole | "
        "probe s | tiles, extrapolated s | ÷ whole | probe s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, list[float]] = {"scaled": [], "tiles": []}
    for name, blend, percentage in scenes:
        settings = RenderSettings(resolution_percentage=percentage)
        with BlenderWorker() as probe:
            size = probe.inspect(blend)
        width = size.resolution_x * percentage // 100
        height = size.resolution_y * percentage // 100
        sizes = probe_sizes(width, height, size.samples) or reduced_sizes(
            width, height, min(LARGE_AREA_MAX, MIN_LARGE_PIXELS / (width * height)))
        whole: list[float] = []
        scaled: list[float] = []
        tiles: list[float] = []
        costs: dict[str, list[float]] = {"scaled": [], "tiles": []}
        with (BlenderWorker() as w_whole, BlenderWorker() as w_scaled,
              BlenderWorker() as w_tiles, tempfile.TemporaryDirectory() as tmp):
            for frame in frames:
                whole += time_frames(blend, settings, [frame], None, worker=w_whole)
                started = time.monotonic()
                scaled += time_frames(blend, settings, [frame], sizes, worker=w_scaled)
                costs["scaled"].append(time.monotonic() - started)
                started = time.monotonic()
                tiles.append(centred_tiles_seconds(w_tiles, blend, settings, frame,
                                                   Path(tmp) / "tile.png"))
                costs["tiles"].append(time.monotonic() - started)
        ratios["scaled"].append(sum(scaled) / sum(whole))
        ratios["tiles"].append(sum(tiles) / sum(whole))

        def cells(values: list[float]) -> str:
            return ", ".join(f"{x:.2f}" for x in values)

        lines.append(
            f"| {name} | {width}x{height}, {size.samples} samples | {cells(whole)} | "
            f"{sizes.small[0]}x{sizes.small[1]}, {sizes.large[0]}x{sizes.large[1]} | "
            f"{cells(scaled)} | {ratios['scaled'][-1]:.2f} | {cells(costs['scaled'])} | "
            f"{cells(tiles)} | {ratios['tiles'][-1]:.2f} | {cells(costs['tiles'])} |")
        print(lines[-1], flush=True)
    for method, label in (("scaled", "reduced sizes"), ("tiles", "centred tiles")):
        values = ratios[method]
        lines.append("")
        lines.append(f"{label}: ÷ whole from {min(values):.2f} to {max(values):.2f}, median "
                     f"{statistics.median(values):.2f}.")
    lines.append("")
    lines.append(f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default="1-4")
    parser.add_argument("--scenes", default=",".join(SCENES))
    parser.add_argument("--no-write", action="store_true", help="print, do not write the doc")
    parser.add_argument("--sizes", action="store_true", help="instead: compare the probe's "
                        "extrapolation (and the centred tiles before it) with whole frames")
    args = parser.parse_args()
    names = [n for n in args.scenes.split(",") if n]
    with tempfile.TemporaryDirectory(prefix="fp-estimate-bench-") as tmp:
        work = Path(tmp)
        scenes = work / "scenes"
        subprocess.run([sys.executable, str(ROOT / "bench" / "scenes" / "estimate_scenes.py"),
                        str(scenes)], check=True, capture_output=True, timeout=600)
        if args.sizes:
            chosen = [(n, scenes / f"{n}.blend", 100) for n in names]
            chosen.append(("hd sample", ROOT / "samples" / "spinning_cube.blend", 400))
            body = sizes_against_frames(chosen, [1, 4])
            if not args.no_write:
                write_section("probe sizes", f"{COMMAND} --sizes", body)
            return 0
        os.environ.pop(MACHINE_SCORE_ENV, None)  # the coordinator measures its own score
        rows = []
        with LocalFarm(work / "farm", lease_seconds=30.0) as farm:
            farm.start_coordinator()
            farm.start_node("node-a")
            farm.start_node("node-b")
            with farm.client() as client:
                for name in names:
                    score_file = farm.data_dir / "machine-benchmark.json"
                    row = run_scene(client, scenes / f"{name}.blend", args.frames,
                                    _score(score_file, client, scenes / f"{name}.blend"))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            score = _score(farm.data_dir / "machine-benchmark.json", None, None)
    body = table(rows, score, args.frames)
    print(body)
    if not args.no_write:
        write_section("estimate accuracy", COMMAND, body)
    return 0


def _score(path: Path, client: FarmClient | None, blend: Path | None) -> float:
    """The coordinator's measured score (measured at its first estimate)."""
    if not path.exists() and client is not None and blend is not None:
        scene_id = Creator(client).upload_scene(blend).scene_id
        client.jobs.EstimateJob(pb.EstimateRequest(scene_id=scene_id, frames="1", tier=TIER),
                                timeout=600)
    return float(json.loads(path.read_text())["score"])


if __name__ == "__main__":
    raise SystemExit(main())

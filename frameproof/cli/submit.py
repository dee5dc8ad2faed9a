"""`frameproof submit`: pack a scene with its dependencies, upload what is new, start a job.

A thin layer over frameproof.creator: flags in, progress bars and lines out."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from frameproof.cli.common import err, fail, job_json, out, print_json
from frameproof.client import FarmClient
from frameproof.creator import FORMATS, Creator, JobOptions, UploadedScene
from frameproof.v1 import farm_pb2 as pb
from frameproof.wallet import tokens


def add_arguments(parser: argparse.ArgumentParser, *, prints: str = "the job") -> None:
    """submit's options; `estimate` takes exactly these too, so it prices the same job."""
    parser.add_argument("scene", type=Path, help="the .blend file to render")
    parser.add_argument("--frames", default="", help="e.g. 1-250 or 1,5,10-20 "
                        "(default: the scene's own range)")
    parser.add_argument("--chunk", type=int, default=1, help="frames per task (default 1)")
    parser.add_argument("--name", default="", help="a name for the job")
    parser.add_argument("--engine", default="", help="CYCLES, BLENDER_EEVEE or "
                        "BLENDER_WORKBENCH (default: the scene's)")
    parser.add_argument("--samples", type=int, default=0,
                        help="render samples, at least 1 (default: the scene's)")
    parser.add_argument("--resolution", default="", help="WIDTHxHEIGHT (default: the scene's)")
    parser.add_argument("--resolution-percentage", type=int, default=0)
    parser.add_argument("--format", choices=sorted(FORMATS), default="png")
    parser.add_argument("--seed", type=int, default=None,
                        help="Cycles seed (default: the scene's own, as saved)")
    parser.add_argument("--tier", type=int, choices=(1, 2, 3), default=3,
                        help="1: trusted nodes only, 2: priority, 3: economy (default)")
    parser.add_argument("--max-cost", type=float, default=0.0,
                        help="most USD this job may cost; escrowed at submit (default: the "
                             "top of the estimate's range)")
    parser.add_argument("--json", action="store_true", help=f"print {prints} as JSON")


def job_options(args: argparse.Namespace) -> JobOptions:
    """The job the flags describe (resolution parsed here; the library checks the rest)."""
    width = height = 0
    if getattr(args, "resolution", ""):
        match = re.fullmatch(r"(\d+)x(\d+)", args.resolution)
        if not match:
            fail("--resolution must look like 1920x1080", 2)
        width, height = int(match[1]), int(match[2])
    return JobOptions(
        frames=args.frames, chunk=getattr(args, "chunk", 1), tier=args.tier,
        max_cost_usd=getattr(args, "max_cost", 0.0), name=getattr(args, "name", ""),
        engine=getattr(args, "engine", ""), samples=args.samples, resolution_x=width,
        resolution_y=height, resolution_percentage=args.resolution_percentage,
        output_format=args.format, seed=getattr(args, "seed", None))


def run(args: argparse.Namespace, client: FarmClient) -> int:
    options = job_options(args)
    options.validate()  # before packing: a bad range costs no upload
    creator = Creator(client)
    uploaded = upload_scene(creator, args.scene)
    options = replace(options, name=options.name or args.scene.stem)
    submission = creator.submit(uploaded.scene_id, options, on_estimate=_show_estimate(options),
                                phases=uploaded.phases)
    job = submission.job
    if args.json:
        print_json({**job_json(job), "uploaded_bytes": uploaded.sent_bytes,
                    "estimate": estimate_json(submission.estimate, options.tier)})
    else:
        err.print(f"job {job.job_id}: {job.frames.total} frames ({job.frames_spec}), "
                  f"{job.settings.engine}, {job.settings.samples} samples")
        out.print(job.job_id)
    return 0


def estimate_json(estimate: pb.Estimate, tier: int) -> dict[str, object]:
    """The estimate as plain JSON (`frameproof estimate --json`, and in `submit --json`)."""
    return {
        "frames": estimate.frames,
        "tier": tier,
        "reference_seconds_per_frame": round(estimate.reference_seconds_per_frame, 3),
        "reference_seconds_per_frame_low": round(estimate.reference_seconds_low_per_frame, 3),
        "reference_seconds_per_frame_high": round(estimate.reference_seconds_high_per_frame, 3),
        "cost_usd": estimate.cost_usd,
        "cost_low_usd": estimate.cost_low_usd,
        "cost_high_usd": estimate.cost_high_usd,
        "max_cost_usd": estimate.max_cost_usd,
        "escrow_tokens": tokens(estimate.tokens, estimate.decimals),
        "token_price_usd": estimate.token_price_usd,
        "method": estimate.method,
        "notices": list(estimate.notices),
        "probe_frames": list(estimate.probe_frames),
        "note": estimate.note,
    }


def _show_estimate(options: JobOptions) -> Callable[[pb.Estimate, float], None]:
    def show(estimate: pb.Estimate, max_cost: float) -> None:
        err.print(f"estimate: {estimate.frames} frames, ${estimate.cost_usd:.6f} at tier "
                  f"{options.tier} (range ${estimate.cost_low_usd:.6f}.."
                  f"${estimate.cost_high_usd:.6f}, {estimate.method}); escrowing up to "
                  f"${max_cost:.6f}")
        print_notices(estimate)

    return show


def print_notices(estimate: pb.Estimate) -> None:
    """One line per setting the farm cannot render as saved (e.g. a wall-clock time limit)."""
    for notice in estimate.notices:
        err.print(f"note: {notice}", markup=False, highlight=False)


def upload_scene(creator: Creator, scene: Path) -> UploadedScene:
    """Pack and upload with a progress bar on stderr, then say what was sent."""
    columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(),
               TransferSpeedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("uploading scene", total=None)

        def show(sent: int, total: int) -> None:
            progress.update(task, completed=sent, total=total)

        uploaded = creator.upload_scene(scene, on_progress=show)
    err.print(f"scene {uploaded.scene_id[:12]}: {uploaded.files} files, "
              f"{uploaded.sent_bytes} bytes uploaded")
    return uploaded

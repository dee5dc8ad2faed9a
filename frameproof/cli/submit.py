"""`frameproof submit`: pack a scene with its dependencies, upload what is new, start a job."""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from frameproof.cli.common import err, fail, job_json, out, print_json
from frameproof.client import FarmClient
from frameproof.packing import PackingError, pack_scene
from frameproof.transfer import upload_files
from frameproof.v1 import farm_pb2 as pb
from frameproof.wallet import DepositError, sign_deposit, tokens

FORMATS = {"png": pb.OUTPUT_FORMAT_PNG, "exr": pb.OUTPUT_FORMAT_EXR}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, help="the .blend file to render")
    parser.add_argument("--frames", default="", help="e.g. 1-250 or 1,5,10-20 "
                        "(default: the scene's own range)")
    parser.add_argument("--chunk", type=int, default=1, help="frames per task (default 1)")
    parser.add_argument("--name", default="", help="a name for the job")
    parser.add_argument("--engine", default="", help="CYCLES, BLENDER_EEVEE or "
                        "BLENDER_WORKBENCH (default: the scene's)")
    parser.add_argument("--samples", type=int, default=0, help="default: the scene's")
    parser.add_argument("--resolution", default="", help="WIDTHxHEIGHT (default: the scene's)")
    parser.add_argument("--resolution-percentage", type=int, default=0)
    parser.add_argument("--format", choices=sorted(FORMATS), default="png")
    parser.add_argument("--tier", type=int, choices=(1, 2, 3), default=3,
                        help="1: trusted nodes only, 2: priority, 3: economy (default)")
    parser.add_argument("--max-cost", type=float, default=0.0,
                        help="most USD this job may cost; escrowed at submit (default: the "
                             "top of the estimate's range)")
    parser.add_argument("--json", action="store_true", help="print the job as JSON")


def build_namespace(scene: Path, **overrides: object) -> argparse.Namespace:
    """The arguments `frameproof submit SCENE` would have, for callers in Python."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(scene)])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def run(args: argparse.Namespace, client: FarmClient) -> int:
    job, uploaded, estimate = submit_with_estimate(args, client)
    if args.json:
        print_json({**job_json(job), "uploaded_bytes": uploaded,
                    "estimate": estimate_json(estimate, args.tier)})
    else:
        err.print(f"job {job.job_id}: {job.frames.total} frames ({job.frames_spec}), "
                  f"{job.settings.engine}, {job.settings.samples} samples")
        out.print(job.job_id)
    return 0


def submit_scene(args: argparse.Namespace, client: FarmClient) -> tuple[pb.Job, int]:
    """Pack, upload what the coordinator lacks, and submit; return the job and bytes sent."""
    job, sent, _ = submit_with_estimate(args, client)
    return job, sent


def submit_with_estimate(args: argparse.Namespace,
                         client: FarmClient) -> tuple[pb.Job, int, pb.Estimate]:
    """submit_scene, also returning the estimate the job was escrowed from."""
    settings = _settings(args)
    scene_id, sent = upload_scene(args.scene, client)
    estimate = client.jobs.EstimateJob(pb.EstimateRequest(
        scene_id=scene_id, frames=args.frames, settings=settings,
        tier=args.tier), timeout=300)
    max_cost = args.max_cost or estimate.max_cost_usd
    err.print(f"estimate: {estimate.frames} frames, ${estimate.cost_usd:.6f} at tier "
              f"{args.tier} (range ${estimate.cost_low_usd:.6f}..${estimate.cost_high_usd:.6f}, "
              f"{estimate.method}); escrowing up to ${max_cost:.6f}")
    deposit = client.jobs.PrepareDeposit(pb.PrepareDepositRequest(amount_usd=max_cost),
                                         timeout=60)
    try:
        signed = sign_deposit(deposit.message, client.keypair)
    except DepositError as error:
        fail(str(error))
    response = client.jobs.SubmitJob(
        pb.SubmitJobRequest(
            scene_id=scene_id,
            frames=args.frames,
            chunk_size=args.chunk,
            settings=settings,
            name=args.name or args.scene.stem,
            tier=args.tier,
            max_cost_usd=max_cost,
            signed_deposit=signed,
        ),
        timeout=300,
    )
    return response.job, sent, estimate


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
        "probe_frames": list(estimate.probe_frames),
        "note": estimate.note,
    }


def upload_scene(scene: Path, client: FarmClient) -> tuple[str, int]:
    """Pack the scene and upload what the coordinator lacks; return (scene id, bytes sent)."""
    with tempfile.TemporaryDirectory(prefix="frameproof-pack-") as work:
        try:
            packed = pack_scene(scene, Path(work))
        except PackingError as error:
            fail(f"cannot pack {scene}: {error}")
        if packed.missing:
            fail(f"{scene}: missing dependencies: {', '.join(packed.missing[:10])}")
        manifest_file = Path(work) / "scene-manifest.json"
        manifest_file.write_bytes(packed.manifest.to_bytes())
        files = {**packed.files, packed.manifest.scene_id: manifest_file}
        sent = _upload(client, files)
    err.print(f"scene {packed.manifest.scene_id[:12]}: {len(files)} files, "
              f"{sent} bytes uploaded")
    return packed.manifest.scene_id, sent


def _settings(args: argparse.Namespace) -> pb.RenderSettings:
    if args.chunk < 1:
        fail("--chunk must be at least 1", 2)
    if args.max_cost < 0:
        fail("--max-cost must be positive", 2)
    width = height = 0
    if args.resolution:
        match = re.fullmatch(r"(\d+)x(\d+)", args.resolution)
        if not match:
            fail("--resolution must look like 1920x1080", 2)
        width, height = int(match[1]), int(match[2])
    return pb.RenderSettings(
        engine=args.engine.upper(),
        samples=args.samples,
        resolution_x=width,
        resolution_y=height,
        resolution_percentage=args.resolution_percentage,
        output_format=FORMATS[args.format],
    )


def _upload(client: FarmClient, files: dict[str, Path]) -> int:
    columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(),
               TransferSpeedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("uploading scene", total=None)

        def show(sent: int, total: int) -> None:
            progress.update(task, completed=sent, total=total)

        return upload_files(client.blobs, files, on_progress=show)

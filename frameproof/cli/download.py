"""`frameproof download | preview`: fetch a job's frames (resumable, skips what is already
there), or an MP4 of its approved frames."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from frameproof.cli.common import err, fail, out
from frameproof.client import FarmClient
from frameproof.creator import Creator, Download
from frameproof.preview import MAX_FPS, EncoderMissing, find_encoder


def download_frames(client: FarmClient, job_id: str, out_dir: Path) -> Download:
    """Download every rendered frame with a progress bar (files, count still missing, the
    scene's output path their names follow)."""
    columns = (TextColumn("downloading"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        bar = progress.add_task("frames", total=None)

        def show(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        return Creator(client).download(job_id, out_dir, on_progress=show)


def naming_line(result: Download, out_dir: Path) -> str:
    """Say where the files went and why they have those names."""
    if not result.files:
        return ""
    first = result.files[0].relative_to(out_dir) if result.files[0].is_relative_to(out_dir) \
        else result.files[0]
    if result.fallback_names:
        why = (f"the scene's output path {result.output_path!r} names no file"
               if result.output_path else "the scene names no output path")
        return f"named {first} ...: {why}"
    return f"named after the scene's output path {result.output_path}: {first} ..."


def add_preview_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job id, or a unique prefix of it (like git)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.mp4",
                        help="where to write the MP4 (default: JOB_ID.mp4 here)")
    parser.add_argument("--fps", type=float, default=24.0,
                        help="frames per second (default 24)")
    parser.add_argument("--frames-dir", type=Path, default=None, metavar="DIR",
                        help="download the frames into DIR and keep them (files already there "
                             "are not fetched again; default: a temporary folder)")


def run_preview(args: argparse.Namespace, client: FarmClient) -> int:
    if not (math.isfinite(args.fps) and 0 < args.fps <= MAX_FPS):
        fail(f"--fps must be more than 0 and at most {MAX_FPS}", 2)
    if args.out is not None and args.out.suffix.lower() != ".mp4":
        fail(f"--out {args.out}: the preview is an .mp4 file", 2)
    try:
        find_encoder()  # before asking the coordinator for anything
    except EncoderMissing as error:
        fail(str(error), 2)
    columns = (TextColumn("downloading"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        bar = progress.add_task("frames", total=None)

        def show(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        creator = Creator(client)
        job_id = creator.job(args.job).job_id  # the full id, also for the default name
        preview = creator.preview(job_id, args.out or Path(f"{job_id}.mp4"), fps=args.fps,
                                  frames_dir=args.frames_dir, on_progress=show)
    out.print(f"{preview.path}: {preview.frames} approved frames at {args.fps:g} fps"
              + (f"; {preview.not_ready} not approved (yet)" if preview.not_ready else ""),
              markup=False, highlight=False, soft_wrap=True)
    return 0


def run(args: argparse.Namespace, client: FarmClient) -> int:
    result = download_frames(client, args.job, args.out)
    out.print(f"{len(result.files)} frames in {args.out}"
              + (f"; {result.not_ready} not rendered (yet)" if result.not_ready else ""))
    if result.files:
        err.print(naming_line(result, args.out), markup=False, highlight=False, soft_wrap=True)
    return 0

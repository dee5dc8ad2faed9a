"""`frameproof download`: fetch a job's frames; resumable, skips what is already there."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from frameproof.cli.common import err, out
from frameproof.client import FarmClient
from frameproof.creator import Creator, Download


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


def run(args: argparse.Namespace, client: FarmClient) -> int:
    result = download_frames(client, args.job, args.out)
    out.print(f"{len(result.files)} frames in {args.out}"
              + (f"; {result.not_ready} not rendered (yet)" if result.not_ready else ""))
    if result.files:
        err.print(naming_line(result, args.out), markup=False, highlight=False, soft_wrap=True)
    return 0

"""`frameproof download`: fetch a job's frames; resumable, skips what is already there."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from frameproof.cli.common import err, out
from frameproof.client import FarmClient
from frameproof.creator import Creator


def download_frames(client: FarmClient, job_id: str, out_dir: Path) -> tuple[list[Path], int]:
    """Download every rendered frame with a progress bar; return the files and the count
    still missing."""
    columns = (TextColumn("downloading"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        bar = progress.add_task("frames", total=None)

        def show(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        result = Creator(client).download(job_id, out_dir, on_progress=show)
    return result.files, result.not_ready


def run(args: argparse.Namespace, client: FarmClient) -> int:
    files, missing = download_frames(client, args.job, args.out)
    out.print(f"{len(files)} frames in {args.out}"
              + (f"; {missing} not rendered (yet)" if missing else ""))
    return 0

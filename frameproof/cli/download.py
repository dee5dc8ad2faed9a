"""`frameproof download`: fetch a job's frames; resumable, skips what is already there."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from frameproof.cli.common import err, out
from frameproof.client import FarmClient
from frameproof.transfer import download_blob
from frameproof.v1 import farm_pb2 as pb


def frame_file_name(frame: pb.Frame) -> str:
    return f"frame_{frame.frame:06d}.{frame.extension or 'png'}"


def download_frames(client: FarmClient, job_id: str, out_dir: Path) -> tuple[list[Path], int]:
    """Download every rendered frame; return the files and the count still missing."""
    frames = client.jobs.ListFrames(pb.ListFramesRequest(job_id=job_id), timeout=30).frames
    ready = [frame for frame in frames if frame.state == pb.FRAME_STATE_DONE]
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    columns = (TextColumn("downloading"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        bar = progress.add_task("frames", total=len(ready))
        for frame in ready:
            files.append(download_blob(client.blobs, frame.image.sha256,
                                       out_dir / frame_file_name(frame)))
            progress.advance(bar)
    return files, len(frames) - len(ready)


def run(args: argparse.Namespace, client: FarmClient) -> int:
    files, missing = download_frames(client, args.job, args.out)
    out.print(f"{len(files)} frames in {args.out}"
              + (f"; {missing} not rendered (yet)" if missing else ""))
    return 0

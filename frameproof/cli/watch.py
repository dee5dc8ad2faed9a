"""`frameproof watch`: a live progress bar fed by the coordinator's job stream."""

from __future__ import annotations

import argparse

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from frameproof.cli.common import STATE_NAMES, err, out
from frameproof.cli.queue import verification_detail
from frameproof.cli.topup import budget_warning
from frameproof.client import FarmClient
from frameproof.creator import Creator
from frameproof.v1 import farm_pb2 as pb


def watch_job(client: FarmClient, job_id: str, *, quiet: bool = False) -> pb.Job:
    """Follow the job until it ends; reconnect if the coordinator goes away meanwhile."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=quiet) as progress:
        bar = progress.add_task(f"job {job_id}", total=None, detail="")
        warned: set[str] = set()

        def show(job: pb.Job) -> None:
            frames = job.frames
            progress.update(
                bar, total=frames.total, completed=frames.done + frames.failed,
                detail=f"{STATE_NAMES.get(job.state, '?')}, {frames.rendering} "
                       f"rendering, {frames.failed} failed{verification_detail(job)}",
            )
            warning = budget_warning(job)
            kind = warning.split(":", 1)[0] if warning else ""
            if warning and kind not in warned:  # once each: 80%, and each pause
                warned.add(kind)
                progress.console.print(warning, markup=False, highlight=False)
            if job.state != pb.JOB_STATE_PAUSED:
                warned.discard("paused")

        def away() -> None:
            progress.update(bar, detail="coordinator away, reconnecting")

        return Creator(client).watch(job_id, on_update=show, on_away=away)


def run(args: argparse.Namespace, client: FarmClient) -> int:
    job = watch_job(client, args.job)
    state = STATE_NAMES.get(job.state, "?")
    out.print(f"job {job.job_id} {state}: {job.frames.done}/{job.frames.total} frames done"
              + (f", {job.frames.failed} failed" if job.frames.failed else ""))
    return 0 if job.state == pb.JOB_STATE_DONE else 1

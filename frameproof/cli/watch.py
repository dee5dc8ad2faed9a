"""`frameproof watch`: a live progress bar fed by the coordinator's job stream."""

from __future__ import annotations

import argparse
import time

import grpc
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from frameproof.cli.common import ENDED, STATE_NAMES, err, out
from frameproof.cli.queue import verification_detail
from frameproof.client import FarmClient
from frameproof.v1 import farm_pb2 as pb


def watch_job(client: FarmClient, job_id: str, *, quiet: bool = False) -> pb.Job:
    """Follow the job until it ends; reconnect if the coordinator goes away meanwhile."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=quiet) as progress:
        bar = progress.add_task(f"job {job_id}", total=None, detail="")
        while True:
            try:
                for job in client.jobs.WatchJob(pb.GetJobRequest(job_id=job_id),
                                                wait_for_ready=True):
                    frames = job.frames
                    progress.update(
                        bar, total=frames.total, completed=frames.done + frames.failed,
                        detail=f"{STATE_NAMES.get(job.state, '?')}, {frames.rendering} "
                               f"rendering, {frames.failed} failed{verification_detail(job)}",
                    )
                    if job.state in ENDED:
                        return job
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE,
                                        grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                progress.update(bar, detail="coordinator away, reconnecting")
                time.sleep(1.0)


def run(args: argparse.Namespace, client: FarmClient) -> int:
    job = watch_job(client, args.job)
    state = STATE_NAMES.get(job.state, "?")
    out.print(f"job {job.job_id} {state}: {job.frames.done}/{job.frames.total} frames done"
              + (f", {job.frames.failed} failed" if job.frames.failed else ""))
    return 0 if job.state == pb.JOB_STATE_DONE else 1

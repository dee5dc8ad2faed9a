"""`frameproof watch`: a live progress bar fed by the coordinator's job stream.

When the job ends, `--on-done CMD` runs CMD through the shell with the job in its
environment, and `--notify` shows a desktop notification (notify-send on Linux, osascript on
macOS; a terminal bell where there is neither). Neither runs after Ctrl-C: the job did not end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job id, or a unique prefix of it (like git)")
    parser.add_argument("--on-done", metavar="CMD", default="",
                        help="when the job ends, run CMD in the shell with FRAMEPROOF_JOB_ID, "
                             "FRAMEPROOF_JOB_NAME, FRAMEPROOF_JOB_STATE (done, failed, "
                             "cancelled), FRAMEPROOF_FRAMES_DONE, FRAMEPROOF_FRAMES_FAILED and "
                             "FRAMEPROOF_FRAMES_TOTAL set")
    parser.add_argument("--notify", action="store_true",
                        help="a desktop notification when the job ends (notify-send or "
                             "osascript; a terminal bell without either)")


def run(args: argparse.Namespace, client: FarmClient) -> int:
    job = watch_job(client, args.job)
    summary = ended_line(job)
    out.print(summary)
    if getattr(args, "notify", False):
        notify(f"Frameproof: {job.name or job.job_id} {STATE_NAMES.get(job.state, '?')}",
               summary)
    if getattr(args, "on_done", ""):
        run_hook(args.on_done, job)
    return 0 if job.state == pb.JOB_STATE_DONE else 1


def ended_line(job: pb.Job) -> str:
    state = STATE_NAMES.get(job.state, "?")
    return (f"job {job.job_id} {state}: {job.frames.done}/{job.frames.total} frames done"
            + (f", {job.frames.failed} failed" if job.frames.failed else ""))


def hook_environment(job: pb.Job) -> dict[str, str]:
    """What `--on-done` sees of the job that ended (the names are documented in --help)."""
    return {
        "FRAMEPROOF_JOB_ID": job.job_id,
        "FRAMEPROOF_JOB_NAME": job.name,
        "FRAMEPROOF_JOB_STATE": STATE_NAMES.get(job.state, "unknown"),
        "FRAMEPROOF_FRAMES_DONE": str(job.frames.done),
        "FRAMEPROOF_FRAMES_FAILED": str(job.frames.failed),
        "FRAMEPROOF_FRAMES_TOTAL": str(job.frames.total),
    }


def run_hook(command: str, job: pb.Job) -> None:
    """Run the creator's command; its failure is said in one line and changes no status
    (watch's exit status is the job's)."""
    try:
        result = subprocess.run(command, shell=True, check=False,
                                env={**os.environ, **hook_environment(job)})
    except OSError as error:
        err.print(f"frameproof: --on-done could not start: {error.strerror or error}",
                  markup=False, highlight=False)
        return
    if result.returncode != 0:
        err.print(f"frameproof: --on-done exited with status {result.returncode}",
                  markup=False, highlight=False)


def notify(title: str, body: str) -> None:
    """A desktop notification where the machine has a notifier, else a terminal bell."""
    if shutil.which("notify-send"):
        command = ["notify-send", "--app-name=frameproof", title, body]
    elif sys.platform == "darwin" and shutil.which("osascript"):
        command = ["osascript", "-e", f"display notification {_quoted(body)} with title "
                   f"{_quoted(title)}"]
    else:
        sys.stderr.write("\a")  # the terminal's bell (rich would strip it)
        sys.stderr.flush()
        err.print("no desktop notifier found (notify-send: libnotify-bin on Debian); rang "
                  "the terminal bell", markup=False, highlight=False)
        return
    try:
        subprocess.run(command, check=False, timeout=10, capture_output=True)
    except (OSError, subprocess.TimeoutExpired) as error:
        err.print(f"frameproof: the desktop notification failed ({error})", markup=False,
                  highlight=False)


def _quoted(text: str) -> str:
    """An AppleScript string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


"""`frameproof jobs | status | cancel | frames`: look at and steer jobs."""

from __future__ import annotations

import argparse
import time

from rich.markup import escape
from rich.table import Table

from frameproof.cli.common import (
    FRAME_STATE_NAMES,
    STATE_NAMES,
    err,
    fail,
    job_json,
    out,
    print_json,
)
from frameproof.cli.queue import verification_line
from frameproof.cli.topup import budget_warning
from frameproof.client import FarmClient
from frameproof.creator import Creator
from frameproof.region import EmptyRegion
from frameproof.render_settings import layout
from frameproof.v1 import farm_pb2 as pb

MAX_LIMIT = 1000  # the coordinator's cap on one listing


def add_job_argument(parser: argparse.ArgumentParser, json_flag: bool = True) -> None:
    parser.add_argument("job", help="job id, or a unique prefix of it (like git)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_jobs(args: argparse.Namespace, client: FarmClient) -> int:
    if not 1 <= args.limit <= MAX_LIMIT:
        fail(f"--limit must be between 1 and {MAX_LIMIT}", 2)
    listing = client.jobs.ListJobs(pb.ListJobsRequest(limit=args.limit), timeout=30)
    jobs = listing.jobs
    if args.json:
        print_json([job_json(job) for job in jobs])
        return 0
    # Readable at 80 columns: the id is never cut (it is what people copy), the name is.
    table = Table(box=None, pad_edge=False)
    table.add_column("job", no_wrap=True, min_width=16)
    table.add_column("name", overflow="ellipsis", no_wrap=True, max_width=20)
    table.add_column("state", no_wrap=True)
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("failed", justify="right", no_wrap=True)
    table.add_column("submitted", no_wrap=True)
    for job in jobs:
        table.add_row(job.job_id, escape(job.name), STATE_NAMES.get(job.state, "?"),
                      f"{job.frames.done}/{job.frames.total}", str(job.frames.failed),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created_unix_ms / 1000)))
    out.print(table)
    if listing.total > len(jobs):
        err.print(f"the newest {len(jobs)} of {listing.total} jobs (--limit N for more)")
    return 0


def run_status(args: argparse.Namespace, client: FarmClient) -> int:
    creator = Creator(client)
    job = creator.job(args.job)
    timeline = creator.timeline(job.job_id)
    if args.json:
        queue = job.verification
        print_json({**job_json(job), "verification": {
            "waiting": queue.waiting, "in_progress": queue.in_progress,
            "position": queue.position, "stuck": queue.stuck,
            "stuck_reason": queue.stuck_reason, "verifiers_busy": queue.verifiers_busy},
            "timeline": timeline_json(timeline)})
        return 0
    counts = job.frames
    out.print(f"job {job.job_id} ({job.name}): [bold]{STATE_NAMES.get(job.state, '?')}[/]")
    out.print(f"frames {job.frames_spec}: {counts.done}/{counts.total} done, "
              f"{counts.rendering} rendering, {counts.verifying} verifying, "
              f"{counts.queued} queued, {counts.failed} failed")
    if job.paused_by_creator:
        out.print(f"paused by you: no new frames start (frameproof resume {job.job_id})",
                  markup=False, highlight=False)
    if line := verification_line(job):
        out.print(line, markup=False)
    out.print(f"{job.settings.engine}, {job.settings.samples} samples, "
              f"{job.settings.resolution_x}x{job.settings.resolution_y} "
              f"at {job.settings.resolution_percentage}%{region_words(job.settings)}")
    if job.escrowed_usd > 0:
        out.print(f"budget: ${job.charged_usd:.6f} of ${job.escrowed_usd:.6f} charged")
    if line := timeline_line(timeline):
        out.print(line, markup=False, highlight=False)
    warning = budget_warning(job)
    if warning:
        err.print(warning, markup=False, highlight=False)
    return 0


def timeline_json(timeline: pb.JobTimeline) -> dict[str, object]:
    """Phases as seconds after the first one began (and absolute Unix times)."""
    start = timeline.submitted_at

    def after(at: float) -> float | None:
        return round(at - start, 3) if at else None

    return {
        "submitted_at": start,
        "first_approved_after_s": after(timeline.first_approved_at),
        "done_after_s": after(timeline.done_at),
        "phases": [{"phase": p.phase, "from_s": after(p.started_at), "to_s": after(p.ended_at),
                    "busy_s": round(p.seconds, 3), "started_at": p.started_at,
                    "ended_at": p.ended_at or None} for p in timeline.phases],
    }


def timeline_line(timeline: pb.JobTimeline) -> str:
    """One line: busy seconds per phase, then when the first frame was approved."""
    if not timeline.phases:
        return ""
    parts = [f"{p.phase.replace('_', ' ')} {p.seconds:.2f}s" for p in timeline.phases
             if p.phase != "approval"]
    line = "time: " + ", ".join(parts)
    if timeline.first_approved_at:
        line += (f"; first frame approved {timeline.first_approved_at - timeline.submitted_at:.1f}"
                 "s after submit")
    if timeline.done_at:
        line += f", all {timeline.done_at - timeline.submitted_at:.1f}s"
    return line


def run_cancel(args: argparse.Namespace, client: FarmClient) -> int:
    job = client.jobs.CancelJob(pb.CancelJobRequest(job_id=args.job), timeout=30)
    kept = job.frames.done
    line = f"job {job.job_id} {STATE_NAMES.get(job.state, '?')}: {kept} approved frames kept"
    if job.frames.verifying:
        line += (f"; {job.frames.verifying} rendered but not yet verified are dropped "
                 "(never charged)")
    out.print(line, markup=False, highlight=False)
    return 0


def run_frames(args: argparse.Namespace, client: FarmClient) -> int:
    frames = client.jobs.ListFrames(pb.ListFramesRequest(job_id=args.job), timeout=30).frames
    rows = [
        {
            "frame": frame.frame,
            "state": FRAME_STATE_NAMES.get(frame.state, "?"),
            "node_id": frame.node_id,
            "render_seconds": round(frame.render_seconds, 3),
            "sha256": frame.image.sha256,
            "attempts": frame.attempts,
            "error": frame.error,
            "verification": frame.verification,
            "blender_version": frame.blender_version,
            "device": frame.device,
            "receipt_signature": frame.receipt_signature,
            "receipt_proof": frame.receipt_proof,
        }
        for frame in frames
    ]
    if args.json:
        print_json(rows)
        return 0
    # One line per frame at 80 columns: the note (error, else verification) is cut, not
    # wrapped; `--json` has everything. "tries": renders started, the current one included.
    table = Table(box=None, pad_edge=False)
    for name in ("frame", "state", "node", "seconds", "tries"):
        table.add_column(name, no_wrap=True,
                         justify="right" if name in ("frame", "seconds", "tries") else "left")
    table.add_column("note", overflow="ellipsis", no_wrap=True)
    for row in rows:
        tries = row["attempts"] + (row["state"] in ("rendering", "verifying", "done"))
        table.add_row(str(row["frame"]), row["state"], row["node_id"][:8],
                      f"{row['render_seconds']:.2f}", str(tries),
                      escape((row["error"] or row["verification"])[:200]))
    out.print(table)
    return 0


def region_words(settings: pb.RenderSettings) -> str:
    """", the scene's Render Region: 125x47 pixels, cropped" (or "in place"), or ""."""
    if not settings.HasField("region"):
        return ""
    try:
        area = layout(settings).area
    except EmptyRegion:
        return ", the scene's Render Region (no pixel at this size)"
    how = "cropped" if settings.region.crop else "in place"
    return f", the scene's Render Region: {area.w}x{area.h} pixels, {how}"

"""`frameproof pause | resume | priority | requeue`: steer a job after submitting it."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from frameproof.cli.checks import MAX_COST_USD
from frameproof.cli.common import STATE_NAMES, err, fail, job_json, out, print_json
from frameproof.client import FarmClient
from frameproof.creator import Creator
from frameproof.frames import FrameSpecError, format_frames, parse_frames
from frameproof.v1 import farm_pb2 as pb

MAX_PRIORITY = 100


def _job(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job id, or a unique prefix of it (like git)")
    parser.add_argument("--json", action="store_true", help="print the job as JSON")


def add_arguments(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _job(commands.add_parser(
        "pause", help="stop leasing the job's frames; frames in flight finish and are kept",
        description="Pause a job: no new frames are handed to nodes; frames being rendered "
        "or verified finish and are kept. A budget pause is separate: `resume` lifts only "
        "yours (`frameproof topup` lifts the budget's)."))
    _job(commands.add_parser("resume", help="lease the job's frames again after `pause`"))
    priority = commands.add_parser(
        "priority", help="order among your own jobs (higher first)",
        description="Set which of your own jobs gets your turns first. It never moves a job "
        "ahead of other creators' work: the farm still serves creators first come, first "
        "served; this picks which of your jobs takes each of your turns.")
    _job(priority)
    priority.add_argument("level", type=int, metavar="N",
                          help=f"-{MAX_PRIORITY}..{MAX_PRIORITY}; default of every job 0")
    requeue = commands.add_parser(
        "requeue", help="render chosen done or failed frames again (charged again)",
        description="Render chosen done or failed frames again, e.g. after fixing a flaky "
        "node's failure; you pay for the new renders (the first render was verified and "
        "paid). While the job runs they are charged from its escrow at its quoted price, and "
        "the old image stays until the new one is approved. Once the job has settled (its "
        "escrow closed and refunded) they render as a new job on the same scene and "
        "settings, escrowed like `submit` (--max-cost, or the top of its own estimate).")
    _job(requeue)
    requeue.add_argument("--frames", required=True, help="which frames, e.g. 5-7 or 1,3")
    requeue.add_argument("--max-cost", type=float, default=0.0, metavar="USD",
                         help="a settled job's new job only: most USD it may cost, escrowed "
                              "(default: the top of its estimate's range)")
    frame_log = commands.add_parser(
        "log", help="Blender's output for one frame, from the node that rendered it",
        description="Blender's output while rendering one frame (the end of it, at most 16 "
        "KiB), as the node that rendered it uploaded it with its result, its own folders "
        "removed. Only the job's creator may read it.")
    frame_log.add_argument("job", help="job id, or a unique prefix of it (like git)")
    frame_log.add_argument("frame", type=int, help="frame number")
    frame_log.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_pause(args: argparse.Namespace, client: FarmClient) -> int:
    job = client.jobs.PauseJob(pb.JobControlRequest(job_id=args.job), timeout=30)
    return _report(args, job, "paused: no new frames start; "
                   f"{job.frames.rendering} rendering and {job.frames.verifying} verifying "
                   f"finish and are kept (frameproof resume {job.job_id})")


def run_resume(args: argparse.Namespace, client: FarmClient) -> int:
    job = client.jobs.ResumeJob(pb.JobControlRequest(job_id=args.job), timeout=30)
    note = "resumed"
    if job.state == getattr(pb, "JOB_STATE_PAUSED", -1):
        note = "resumed by you, but still paused by its budget (frameproof topup)"
    return _report(args, job, note)


def run_priority(args: argparse.Namespace, client: FarmClient) -> int:
    if not -MAX_PRIORITY <= args.level <= MAX_PRIORITY:
        fail(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}", 2)
    job = client.jobs.SetJobPriority(
        pb.SetJobPriorityRequest(job_id=args.job, priority=args.level), timeout=30)
    return _report(args, job, f"priority {job.priority} among your jobs")


def run_requeue(args: argparse.Namespace, client: FarmClient) -> int:
    try:
        parse_frames(args.frames)
    except FrameSpecError as error:
        fail(f"--frames: {error}", 2)
    if not (math.isfinite(args.max_cost) and 0 <= args.max_cost <= MAX_COST_USD):
        fail(f"--max-cost must be a positive number of USD, at most {MAX_COST_USD:,.0f}", 2)
    result = Creator(client).requeue(args.job, args.frames, max_cost_usd=args.max_cost,
                                     on_estimate=_show_follow_up(args))
    if not result.new_job:
        return _report(args, result.job, f"frames {format_frames(result.frames)} queued "
                       "again (charged again at the job's price)")
    if args.json:
        print_json({**job_json(result.job), "requeue_of": result.follow_up_of})
        return 0
    out.print(f"job {result.follow_up_of} has settled: frames {format_frames(result.frames)} "
              f"render as new job {result.job.job_id} (frameproof watch {result.job.job_id})",
              markup=False, highlight=False)
    out.print(result.job.job_id)
    return 0


def _show_follow_up(args: argparse.Namespace) -> Callable[[pb.Estimate, float], None]:
    def show(estimate: pb.Estimate, max_cost: float) -> None:
        if not args.json:
            err.print(f"the job's escrow is closed; a new job for these frames: estimate "
                      f"${estimate.cost_usd:.6f}, escrowing up to ${max_cost:.6f} (you sign)",
                      markup=False, highlight=False, soft_wrap=True)

    return show


def run_log(args: argparse.Namespace, client: FarmClient) -> int:
    if args.frame < 0:
        fail("frame must be 0 or more", 2)
    log = client.jobs.GetFrameLog(pb.FrameLogRequest(job_id=args.job, frame=args.frame),
                                  timeout=30)
    if args.json:
        print_json({"job_id": log.job_id, "frame": log.frame, "node_id": log.node_id,
                    "text": log.text})
        return 0
    err.print(f"frame {log.frame} of job {log.job_id}, rendered by node {log.node_id}",
              markup=False, highlight=False, soft_wrap=True)
    sys.stdout.write(log.text if log.text.endswith("\n") or not log.text else log.text + "\n")
    return 0


def _report(args: argparse.Namespace, job: pb.Job, what: str) -> int:
    if args.json:
        print_json({**job_json(job), "paused_by_creator": job.paused_by_creator,
                    "priority": job.priority})
        return 0
    out.print(f"job {job.job_id} ({STATE_NAMES.get(job.state, '?')}): {what}",
              markup=False, highlight=False)
    return 0

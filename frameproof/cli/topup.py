"""`frameproof topup`: add escrow to a job; a paused job resumes by itself. Budget warnings."""

from __future__ import annotations

import argparse

from frameproof.cli.common import err, fail, job_json, out, print_json
from frameproof.client import FarmClient
from frameproof.creator import MAX_TOPUP_USD, Creator
from frameproof.v1 import farm_pb2 as pb

WARN_FRACTION = 0.8  # status and watch warn once this share of the escrow is charged


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job id")
    parser.add_argument("--usd", type=float, required=True,
                        help="USD to add to the job's escrow (deposited from your wallet)")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, client: FarmClient) -> int:
    if not 0 < args.usd <= MAX_TOPUP_USD:
        fail(f"--usd must be more than 0 and at most {MAX_TOPUP_USD:.0f}", 2)
    response = Creator(client).top_up(args.job, args.usd)
    job = response.job
    if args.json:
        print_json({**job_json(job), "topup_usd": args.usd, "topup_tokens": response.tokens,
                    "deposit_signature": response.deposit_signature})
        return 0
    out.print(f"job {job.job_id}: escrow ${job.escrowed_usd:.6f} (+${args.usd:.6f}), "
              f"${job.charged_usd:.6f} charged")
    if job.state == pb.JOB_STATE_PAUSED:
        err.print("the job resumes within a few seconds, once its waiting frames are charged")
    return 0


def budget_warning(job: pb.Job) -> str | None:
    """One line when the job has used 80% of its escrow (or is paused for lack of it)."""
    if job.state == pb.JOB_STATE_PAUSED and job.paused_reason:
        return job.paused_reason
    if job.escrowed_usd <= 0 or job.state in (pb.JOB_STATE_DONE, pb.JOB_STATE_CANCELLED,
                                              pb.JOB_STATE_FAILED):
        return None
    used = job.charged_usd / job.escrowed_usd
    if used < WARN_FRACTION:
        return None
    return (f"warning: job {job.job_id} has used {used:.0%} of its budget "
            f"(${job.charged_usd:.6f} of ${job.escrowed_usd:.6f}); add to it with "
            f"`frameproof topup {job.job_id} --usd AMOUNT`")

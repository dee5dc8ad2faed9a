"""`frameproof`: submit Blender scenes to the farm, follow them, download the frames."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from solders.keypair import Keypair

from frameproof import config
from frameproof.cli import control, download, interrupt, jobs, money, nodes, submit, topup, watch
from frameproof.cli.argv import OneLineParser, globals_first
from frameproof.cli.checks import check_job_options
from frameproof.cli.common import CliError, describe_creator_error, err, explain_rpc_error
from frameproof.cli.interrupt import INTERRUPTED
from frameproof.client import AddressList, FarmClient, coordinator_address
from frameproof.creator import CoordinatorUnavailable, CreatorError, InvalidRequest
from frameproof.identity import creator_keypair_path, load_or_create_keypair
from frameproof.transfer import TransferError
from frameproof.v1 import farm_pb2 as pb

EXIT_CODES = """exit status:
  0    done (watch: the job finished with every frame done)
  1    the farm refused or failed the request, or the job ended failed/cancelled (watch)
       (cancel: also a job already done, which stays done)
  2    bad input, found before anything was sent (options, frames, files, keypair;
       preview: no encoder installed)
  3    the coordinator cannot be reached
  130  interrupted (Ctrl-C); a submitted job keeps running on the farm

Global options (--coordinator, --keypair, --tls-ca, --config) go before or after the
command. A JOB is a job id or a unique prefix of one of your jobs (like git)."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="frameproof", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, metavar="FILE", help="defaults for these "
                        "options (docs/CONFIG.md; default $FRAMEPROOF_CONFIG or "
                        "~/.config/frameproof/config.toml, if present)")
    parser.add_argument("--coordinator", action=AddressList,
                        help="HOST:PORT (default $FRAMEPROOF_COORDINATOR or 127.0.0.1:50051); "
                        "several: a,b or the flag repeated, and calls fail over to a live one")
    parser.add_argument("--keypair", type=Path, help="your Solana keypair (default "
                        "$FRAMEPROOF_KEYPAIR or ~/.config/solana/id.json; created if absent)")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate of a TLS coordinator "
                        "(default $FRAMEPROOF_TLS_CA)")
    commands = parser.add_subparsers(dest="command", required=True)

    submit.add_arguments(commands.add_parser("submit", help="pack, upload and start a job"))
    listing = commands.add_parser("jobs", help="list your newest jobs")
    listing.add_argument("--limit", type=int, default=20, metavar="N",
                         help="how many of the newest jobs to list (1-1000, default 20)")
    listing.add_argument("--json", action="store_true")
    jobs.add_job_argument(commands.add_parser("status", help="one job's progress"))
    watch.add_arguments(commands.add_parser("watch", help="follow a job live; notify or run "
                                            "a command when it ends"))
    jobs.add_job_argument(commands.add_parser("cancel", help="cancel a job"), False)
    topup.add_arguments(commands.add_parser("topup", help="add escrow to a job; a paused "
                                            "job resumes"))
    jobs.add_job_argument(commands.add_parser("frames", help="each frame's state and node"))
    nodes.add_arguments(commands.add_parser("nodes", help="nodes with reputation, tier, "
                                            "verified and failed frames"))
    fetch = commands.add_parser("download", help="download a job's frames")
    jobs.add_job_argument(fetch, False)
    fetch.add_argument("--out", type=Path, required=True, help="folder for the frames")
    download.add_preview_arguments(commands.add_parser(
        "preview", help="an MP4 of a job's approved frames (needs frameproof[preview])"))
    money.add_estimate_arguments(commands.add_parser("estimate", help="what a job would cost"))
    money.add_wallet_arguments(commands.add_parser("wallet", help="your token balance and "
                                                   "escrow; `wallet airdrop N` on test chains"))
    money.add_receipts_arguments(commands.add_parser("receipts", help="what a job was charged"))
    control.add_arguments(commands)
    _fill_help(commands)
    demo = commands.add_parser("demo", help="run a whole farm on this machine")
    demo.add_argument("--out", type=Path, default=Path("demo-output"),
                      help="folder for the frames and a contact sheet (default demo-output)")
    demo.add_argument("--frames", default="1-12", help="frames of the sample scene (default 1-12)")
    demo.add_argument("--nodes", type=int, default=2, help="render nodes to start (default 2)")
    return parser


# The same option means the same thing in every command: one text, for those declared bare.
STANDARD_HELP = {
    "--json": "print JSON instead of text",
    "--frames": "e.g. 1-250 or 1,5,10-20 (default: the scene's own range)",
    "--tier": "1: trusted nodes only, 2: priority, 3: economy (default)",
    "--samples": "render samples, at least 1 (default: the scene's)",
    "--resolution-percentage": "1..1000 (default: the scene's)",
    "--format": "image format (default png)",
    "scene": "the .blend file",
    "job": "job id, or a unique prefix of it (like git)",
    "action": "show (default) or airdrop (test chains)",
}


def _fill_help(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for sub in commands.choices.values():
        for action in sub._actions:
            key = action.option_strings[0] if action.option_strings else action.dest
            if not action.help and key in STANDARD_HELP:
                action.help = STANDARD_HELP[key]


HANDLERS = {
    "submit": submit.run,
    "jobs": jobs.run_jobs,
    "status": jobs.run_status,
    "watch": watch.run,
    "cancel": jobs.run_cancel,
    "topup": topup.run,
    "frames": jobs.run_frames,
    "download": download.run,
    "preview": download.run_preview,
    "nodes": nodes.run,
    "estimate": money.run_estimate,
    "wallet": money.run_wallet,
    "receipts": money.run_receipts,
    "pause": control.run_pause,
    "resume": control.run_resume,
    "priority": control.run_priority,
    "requeue": control.run_requeue,
    "log": control.run_log,
}
UNREACHABLE = 3


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends in one line on stderr and a documented status."""
    parser = build_parser()
    argv = globals_first(parser, sys.argv[1:] if argv is None else argv)
    args = config.parse_args(parser, argv, config.creator_role(parser),
                             default_path=config.default_creator_config())
    interrupt.interrupted_message(_interrupted(args))
    if args.command == "demo":
        from frameproof.cli import demo  # imports the coordinator: only when asked

        return demo.run(args)
    address = coordinator_address(args.coordinator)
    try:
        if args.command in ("submit", "estimate"):
            check_job_options(args, argv)
        keypair = _creator_keypair(args.keypair)
        with FarmClient(address, keypair, tls_ca=args.tls_ca) as client:
            if args.command in ("submit", "estimate"):
                _reachable(client, address)  # before packing: fail fast, not after retries
            return HANDLERS[args.command](args, client)
    except CliError as error:
        return _say(str(error), error.status)
    except grpc.RpcError as error:
        status = UNREACHABLE if error.code() == grpc.StatusCode.UNAVAILABLE else 1
        return _say(explain_rpc_error(error, address), status)
    except CreatorError as error:
        status = (2 if isinstance(error, InvalidRequest) else
                  UNREACHABLE if isinstance(error, CoordinatorUnavailable) else 1)
        return _say(describe_creator_error(error), status)
    except TransferError as error:
        return _say(f"transfer failed: {error}", 1)
    except KeyboardInterrupt:
        status = _say(_interrupted(args), INTERRUPTED)
        interrupt.said_interrupted()
        return status
    except OSError as error:
        return _say(f"{error.filename or ''}{': ' if error.filename else ''}"
                    f"{error.strerror or error}", 1)
    except Exception as error:
        if os.environ.get("FRAMEPROOF_DEBUG"):
            raise
        return _say(f"unexpected error ({type(error).__name__}: {error}); "
                    "FRAMEPROOF_DEBUG=1 shows the traceback", 1)


def _say(message: str, status: int) -> int:
    err.print(f"frameproof: {message}", markup=False, highlight=False, soft_wrap=True)
    return status


def _reachable(client: FarmClient, address: str) -> None:
    """One quick call: an unreachable coordinator is reported before the scene is packed."""
    try:
        client.jobs.GetWallet(pb.WalletRequest(), timeout=5)
    except grpc.RpcError as error:
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise CliError(explain_rpc_error(error, address), UNREACHABLE) from error
        raise


def _interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C left behind, so nobody wonders whether the job still runs."""
    job = getattr(args, "job", None)
    if args.command in ("watch", "status", "frames", "download", "preview", "log") and job:
        return (f"interrupted; the job keeps running on the farm: frameproof watch {job}"
                + (" (download again to resume)" if args.command == "download" else ""))
    if args.command == "submit":
        return ("interrupted; if a job id was printed the job runs on the farm "
                "(frameproof jobs), otherwise nothing was submitted")
    return "interrupted"


def _creator_keypair(explicit: Path | None) -> Keypair:
    path = creator_keypair_path(explicit)
    if not path.exists():
        err.print(f"creating a new Solana keypair for you at {path}", soft_wrap=True)
    try:
        return load_or_create_keypair(path)
    except ValueError as error:
        raise CliError(str(error), 2) from error


if __name__ == "__main__":
    sys.exit(main())

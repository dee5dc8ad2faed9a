"""`frameproof`: submit Blender scenes to the farm, follow them, download the frames."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from solders.keypair import Keypair

from frameproof import config
from frameproof.cli import download, jobs, money, nodes, submit, topup, watch
from frameproof.cli.common import CliError, describe_creator_error, err, explain_rpc_error
from frameproof.client import FarmClient, coordinator_address
from frameproof.creator import CreatorError, InvalidRequest
from frameproof.identity import creator_keypair_path, load_or_create_keypair


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frameproof", description=__doc__)
    parser.add_argument("--config", type=Path, metavar="FILE", help="defaults for these "
                        "options (docs/CONFIG.md; default $FRAMEPROOF_CONFIG or "
                        "~/.config/frameproof/config.toml, if present)")
    parser.add_argument("--coordinator", help="HOST:PORT (default $FRAMEPROOF_COORDINATOR "
                        "or 127.0.0.1:50051)")
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
    jobs.add_job_argument(commands.add_parser("watch", help="follow a job live"), False)
    jobs.add_job_argument(commands.add_parser("cancel", help="cancel a job"), False)
    topup.add_arguments(commands.add_parser("topup", help="add escrow to a job; a paused "
                                            "job resumes"))
    jobs.add_job_argument(commands.add_parser("frames", help="each frame's state and node"))
    nodes.add_arguments(commands.add_parser("nodes", help="nodes with reputation, tier, "
                                            "verified and failed frames"))
    fetch = commands.add_parser("download", help="download a job's frames")
    jobs.add_job_argument(fetch, False)
    fetch.add_argument("--out", type=Path, required=True, help="folder for the frames")
    money.add_estimate_arguments(commands.add_parser("estimate", help="what a job would cost"))
    money.add_wallet_arguments(commands.add_parser("wallet", help="your token balance and "
                                                   "escrow; `wallet airdrop N` on test chains"))
    money.add_receipts_arguments(commands.add_parser("receipts", help="what a job was charged"))
    demo = commands.add_parser("demo", help="run a whole farm on this machine")
    demo.add_argument("--out", type=Path, default=Path("demo-output"))
    demo.add_argument("--frames", default="1-12")
    demo.add_argument("--nodes", type=int, default=2)
    return parser


HANDLERS = {
    "submit": submit.run,
    "jobs": jobs.run_jobs,
    "status": jobs.run_status,
    "watch": watch.run,
    "cancel": jobs.run_cancel,
    "topup": topup.run,
    "frames": jobs.run_frames,
    "download": download.run,
    "nodes": nodes.run,
    "estimate": money.run_estimate,
    "wallet": money.run_wallet,
    "receipts": money.run_receipts,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = config.parse_args(parser, argv, config.creator_role(parser),
                             default_path=config.default_creator_config())
    if args.command == "demo":
        from frameproof.cli import demo  # imports the coordinator: only when asked

        return demo.run(args)
    address = coordinator_address(args.coordinator)
    try:
        keypair = _creator_keypair(args.keypair)
        with FarmClient(address, keypair, tls_ca=args.tls_ca) as client:
            return HANDLERS[args.command](args, client)
    except CliError as error:
        err.print(f"frameproof: {error}", markup=False, highlight=False)
        return error.status
    except grpc.RpcError as error:
        err.print(f"frameproof: {explain_rpc_error(error, address)}", markup=False,
                  highlight=False)
        return 1
    except CreatorError as error:
        err.print(f"frameproof: {describe_creator_error(error)}", markup=False,
                  highlight=False)
        return 2 if isinstance(error, InvalidRequest) else 1
    except KeyboardInterrupt:
        return 130


def _creator_keypair(explicit: Path | None) -> Keypair:
    path = creator_keypair_path(explicit)
    if not path.exists():
        err.print(f"creating a new Solana keypair for you at {path}")
    try:
        return load_or_create_keypair(path)
    except ValueError as error:
        raise CliError(str(error), 2) from error


if __name__ == "__main__":
    sys.exit(main())

"""`render-node status`: an operator's own standing with the coordinator, and why it moved.

Reputation decides which jobs a node gets and how often its frames are re-rendered; an
operator whose node is quarantined or stuck on probation needs the history of verdicts
(reason, job, frame, score before → after) to find out what went wrong.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.text import Text
from solders.keypair import Keypair

from frameproof.cli.common import explain_rpc_error, print_json
from frameproof.cli.nodes import event_json, standing_json
from frameproof.client import AddressList, FarmClient, coordinator_address
from frameproof.identity import load_or_create_keypair
from frameproof.v1 import farm_pb2 as pb

KEYPAIR_NAME = "node-keypair.json"  # where `render-node run` keeps the node's identity
CALL_TIMEOUT = 30.0
EVENT_COLOURS = {"failed": "red", "quarantine": "red", "verified": "green", "release": "green"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", action=AddressList,
                        help="HOST:PORT (default $FRAMEPROOF_COORDINATOR); several: a,b")
    parser.add_argument("--work-dir", type=Path, required=True,
                        help="the node's work dir (its identity lives there)")
    parser.add_argument("--keypair", type=Path,
                        help=f"the node's Solana keypair (default WORK_DIR/{KEYPAIR_NAME})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--history", type=int, default=20, metavar="N",
                        help="how many recent reputation events to show (default 20)")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate of a TLS coordinator")


def load_node_keypair(args: argparse.Namespace) -> Keypair | None:
    """The node's existing keypair; None when there is none (status must not mint an identity)."""
    path: Path = args.keypair or args.work_dir / KEYPAIR_NAME
    if not path.exists():
        return None
    return load_or_create_keypair(path)  # exists: only loads


def run(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    path = args.keypair or args.work_dir / KEYPAIR_NAME
    try:
        keypair = load_node_keypair(args)
    except (OSError, ValueError) as error:
        err.print(f"render-node: {error}", markup=False)
        return 2
    if keypair is None:
        err.print(f"render-node: no node keypair at {path}; run `render-node run --work-dir "
                  f"{args.work_dir}` first (or pass --keypair)", markup=False)
        return 2
    if args.history < 0:
        err.print("render-node: --history must be 0 or more", markup=False)
        return 2
    node_id = str(keypair.pubkey())
    address = coordinator_address(args.coordinator)
    request = pb.GetNodeStandingRequest(node_id=node_id, history_limit=max(1, args.history))
    try:
        with FarmClient(address, keypair, tls_ca=args.tls_ca) as client:
            response = client.nodes.GetNodeStanding(request, timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            err.print(f"render-node: node {node_id} has not registered with {address} yet",
                      markup=False)
        else:
            err.print(f"render-node: {explain_rpc_error(error, address)}", markup=False)
        return 1
    history = list(response.history)[: args.history]
    if args.json:
        print_json(status_json(response.standing, history))
    else:
        print_status(response.standing, history, Console())
    return 0


def status_json(standing: pb.NodeStanding, history: list[pb.ReputationEvent]) -> dict[str, Any]:
    """The same fields as `frameproof nodes --json`, plus the history: one schema for scripts."""
    return {**standing_json(standing), "history": [event_json(event) for event in history]}


def print_status(standing: pb.NodeStanding, history: list[pb.ReputationEvent],
                 console: Console) -> None:
    """Standing first (what the node gets now), then each event with the verifier's reason."""
    tier = "[bold red]QUARANTINED[/]" if standing.quarantined else standing.tier
    console.print(f"node [bold]{standing.node_id}[/] ({escape(standing.name)})")
    console.print(f"reputation {standing.reputation:.3f}, {tier}; "
                  f"{standing.frames_verified} frames verified, "
                  f"{standing.frames_failed} failed, {standing.consecutive_verified} in a row")
    console.print(f"next frame checked with probability {standing.check_probability:.0%}; "
                  f"leases {standing.leases_completed} completed, "
                  f"{standing.leases_abandoned} abandoned")
    measured = (f"{standing.measured_speed:.2f} reference s per s" if standing.measured_speed > 0
                else "not measured yet")
    console.print(f"speed measured by the coordinator: {measured} (self-reported benchmark "
                  f"score {standing.benchmark_score:.2f}: a hint, never a price)")
    if standing.quarantined:
        console.print("[red]quarantined: this coordinator gives the node no more work; the "
                      "failed verifications below say why[/]")
    if not history:
        console.print("no reputation events yet")
        return
    console.print(f"\nlatest {len(history)} reputation event(s), newest first:")
    for event in history:
        when = time.strftime("%m-%d %H:%M:%S", time.localtime(event.at_unix_ms / 1000))
        colour = EVENT_COLOURS.get(event.kind, "default")
        where = f"job {event.job_id[:12]} frame {event.frame}" if event.job_id else ""
        console.print(f"{when}  [{colour}]{event.kind:<9}[/] {where:<25} "
                      f"{event.reputation_before:.3f} → {event.reputation_after:.3f} "
                      f"({event.tier_after})")
        console.print(Padding(Text(event.reason), (0, 0, 0, 4), expand=False))
        verdict = _verifier_reason(event)
        if verdict:
            console.print(Padding(Text(f"verifier: {verdict}"), (0, 0, 0, 4), expand=False))


def _verifier_reason(event: pb.ReputationEvent) -> str:
    """The verifier's words for a failed frame (the model's reason says only what moved)."""
    details = event_json(event)["details"]
    reason = details.get("reason", "") if isinstance(details, dict) else ""
    return reason if event.kind == "failed" and isinstance(reason, str) else ""


if __name__ == "__main__":
    standalone = argparse.ArgumentParser(prog="render-node status", description=__doc__)
    add_arguments(standalone)
    sys.exit(run(standalone.parse_args()))

"""`frameproof nodes`: who renders for the farm, and how far Proof-of-Render trusts them.

Creators pick a tier per job; this shows which nodes qualify and why (reputation, verified and
failed frames, quarantine), so a stalled Tier 1 job or a suspicious node can be explained.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.markup import escape
from rich.table import Table

from frameproof.cli.common import out, print_json
from frameproof.client import FarmClient
from frameproof.v1 import farm_pb2 as pb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of standings instead of a table")


def standing_json(standing: pb.NodeStanding) -> dict[str, Any]:
    """One node's standing as plain JSON (shared with `render-node status`)."""
    return {
        "node_id": standing.node_id,
        "name": standing.name,
        "reputation": standing.reputation,
        "tier": standing.tier,
        "frames_verified": standing.frames_verified,
        "frames_failed": standing.frames_failed,
        "frames_approved": standing.frames_approved,
        "quarantined": standing.quarantined,
        "check_probability": standing.check_probability,
        "consecutive_verified": standing.consecutive_verified,
        "leases_completed": standing.leases_completed,
        "leases_abandoned": standing.leases_abandoned,
        "benchmark_score": standing.benchmark_score,  # self-reported: a hint only
        "measured_speed": standing.measured_speed or None,  # the coordinator's measure
        "devices": list(standing.devices),
        "last_seen_unix_ms": standing.last_seen_unix_ms,
    }


def event_json(event: pb.ReputationEvent) -> dict[str, Any]:
    """One reputation change as plain JSON; its details are decoded when they are JSON."""
    try:
        details = json.loads(event.details_json) if event.details_json else {}
    except ValueError:
        details = {"raw": event.details_json}
    return {
        "at_unix_ms": event.at_unix_ms,
        "kind": event.kind,
        "reputation_before": event.reputation_before,
        "reputation_after": event.reputation_after,
        "tier_after": event.tier_after,
        "reason": event.reason,
        "job_id": event.job_id,
        "frame": event.frame,
        "details": details,
    }


def tier_label(standing: pb.NodeStanding) -> str:
    """The tier, coloured so a quarantined node stands out in a long table."""
    if standing.quarantined:
        return "[bold red]quarantined[/]"
    if standing.tier == "probation":
        return "[yellow]probation[/]"
    return standing.tier


def speed_label(standing: pb.NodeStanding) -> str:
    """The network-measured speed (reference seconds per second), or a dash until measured."""
    return f"{standing.measured_speed:.2f}" if standing.measured_speed > 0 else "-"


def ago(unix_ms: int, now: float | None = None) -> str:
    """How long ago, in the largest unit that fits: a node unseen for hours is likely gone."""
    if unix_ms <= 0:
        return "never"
    seconds = max(0.0, (now if now is not None else time.time()) - unix_ms / 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def run(args: argparse.Namespace, client: FarmClient) -> int:
    nodes = client.nodes.ListNodes(pb.ListNodesRequest(), timeout=30).nodes
    if args.json:
        print_json([standing_json(node) for node in nodes])
        return 0
    if not nodes:
        out.print("no node has registered with this coordinator yet")
        return 0
    # Ten narrow columns fit an 80-column terminal; the rest is in --json.
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("node", no_wrap=True)
    table.add_column("name", overflow="ellipsis", no_wrap=True, max_width=12)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("tier", no_wrap=True)
    table.add_column("passed", justify="right", no_wrap=True)
    table.add_column("failed", justify="right", no_wrap=True)
    table.add_column("leases", justify="right", no_wrap=True)
    table.add_column("lost", justify="right", no_wrap=True)
    table.add_column("speed", justify="right", no_wrap=True)
    table.add_column("seen", justify="right", no_wrap=True)
    for node in nodes:
        table.add_row(node.node_id[:8], escape(node.name), f"{node.reputation:.3f}",
                      tier_label(node), str(node.frames_verified), str(node.frames_failed),
                      str(node.leases_completed), str(node.leases_abandoned),
                      speed_label(node), ago(node.last_seen_unix_ms))
    out.print(table)
    return 0

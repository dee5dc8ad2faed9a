"""`frameproof estimate | wallet | receipts`: what a job costs and what was paid."""

from __future__ import annotations

import argparse

from rich.table import Table

from frameproof.cli.common import err, fail, money, out, print_json
from frameproof.cli.submit import (
    add_arguments,
    estimate_json,
    job_options,
    print_notices,
    upload_scene,
)
from frameproof.client import FarmClient
from frameproof.creator import Creator
from frameproof.v1 import farm_pb2 as pb
from frameproof.wallet import tokens


def add_estimate_arguments(parser: argparse.ArgumentParser) -> None:
    """Exactly submit's options: the same command line with `estimate` prices that job."""
    add_arguments(parser, prints="the estimate")


def run_estimate(args: argparse.Namespace, client: FarmClient) -> int:
    """Estimating needs the coordinator's inspection: the scene is uploaded (only what is new)."""
    options = job_options(args)
    options.validate()  # before packing: a bad range costs no upload
    creator = Creator(client)
    estimate = creator.estimate(upload_scene(creator, args.scene).scene_id, options)
    result = estimate_json(estimate, args.tier)
    if args.json:
        print_json(result)
    else:
        out.print(f"{estimate.frames} frames at tier {args.tier}: about "
                  f"${estimate.cost_usd:.6f}, range ${estimate.cost_low_usd:.6f}.."
                  f"${estimate.cost_high_usd:.6f} (≈{estimate.reference_seconds_per_frame:.2f} s "
                  "per frame on the reference machine)")
        out.print(probe_line(estimate))
        if options.max_cost_usd:
            out.print(f"submit escrows up to ${options.max_cost_usd:.6f} (your --max-cost)")
        else:
            out.print(f"submit escrows up to ${estimate.max_cost_usd:.6f} "
                      f"({result['escrow_tokens']} tokens; change with --max-cost)")
        print_notices(estimate)
    return 0


def probe_line(estimate: pb.Estimate) -> str:
    """How the estimate was measured, in one line."""
    frames = ", ".join(str(f) for f in estimate.probe_frames)
    if estimate.method == "fallback":
        return f"not measured: {estimate.note}"
    how = {"full": "whole frames", "tiles": "centred tiles, extrapolated"}.get(
        estimate.method, "at reduced sizes, extrapolated")
    return f"measured by the coordinator rendering frame(s) {frames} ({how})"


def add_wallet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("show", "airdrop"), default="show")
    parser.add_argument("amount", nargs="?", type=float, help="tokens to airdrop")
    parser.add_argument("--json", action="store_true")


def run_wallet(args: argparse.Namespace, client: FarmClient) -> int:
    creator = Creator(client)
    if args.action == "airdrop":
        if not args.amount or args.amount <= 0:
            fail("say how many tokens: frameproof wallet airdrop 10", 2)
        wallet = creator.airdrop(args.amount)
    else:
        wallet = creator.wallet()
    if args.json:
        print_json({"pubkey": wallet.pubkey, "balance": wallet.balance, "escrow": wallet.escrow,
                    "decimals": wallet.decimals, "token_price_usd": wallet.token_price_usd})
    else:
        out.print(f"wallet {wallet.pubkey}")
        price = wallet.token_price_usd
        out.print(f"balance {money(wallet.balance, wallet.decimals, price)}, "
                  f"{money(wallet.escrow, wallet.decimals, price)} in escrow for unfinished "
                  "jobs", soft_wrap=True)
    return 0


def add_receipts_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job")
    parser.add_argument("--json", action="store_true")


def run_receipts(args: argparse.Namespace, client: FarmClient) -> int:
    receipts = Creator(client).receipts(args.job)
    if args.json:
        print_json({
            "job_id": receipts.job_id,
            "frames": [{"frame": f.frame, "node_id": f.node_id, "cost_usd": f.cost_usd,
                        "tokens_burned": f.tokens_burned, "signature": f.signature}
                       for f in receipts.frames],
            "total_cost_usd": receipts.total_cost_usd,
            "total_tokens_burned": receipts.total_tokens_burned,
            "escrowed": receipts.escrowed,
            "refund": receipts.refunded,
            "deposit_signature": receipts.deposit_signature,
            "refund_signature": receipts.refund_signature,
            "refund_state": receipts.refund_state,
            "state": receipts.state,
            "decimals": receipts.decimals,
        })
        return 0
    table = Table("frame", "node", "cost (USD)", "(tokens)", "signature")
    for frame in receipts.frames:
        table.add_row(str(frame.frame), frame.node_id[:8], f"${frame.cost_usd:.6f}",
                      f"({tokens(frame.tokens_burned, receipts.decimals)})",
                      frame.signature[:16])
    out.print(table)
    price, decimals = receipts.token_price_usd, receipts.decimals
    out.print(f"total {money(receipts.total_tokens_burned, decimals, price)} burned of "
              f"{money(receipts.escrowed, decimals, price)} escrowed; refund "
              f"{money(receipts.refunded, decimals, price)}", markup=False, highlight=False,
              soft_wrap=True)
    if receipts.state != "settled":
        err.print("the job is not settled yet: the refund comes when it ends")
    elif receipts.refund_state in ("new", "sent"):
        err.print(f"the refund is pending on chain (transaction {receipts.refund_signature})")
    elif receipts.refund_state == "failed":
        err.print("the refund transaction failed; the coordinator's operator must look into it")
    return 0

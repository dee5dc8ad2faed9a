"""`render-node`: run a render node, or show what it would advertise."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import socket
import sys
import time
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from frameproof import config
from frameproof.blender.worker import BlenderError, BlenderWorker
from frameproof.cli.argv import OneLineParser, options_after_command
from frameproof.client import AddressList, FarmClient, coordinator_address
from frameproof.identity import load_or_create_keypair
from frameproof.v1 import farm_pb2 as pb
from frameproof.wallet import money
from render_node import bonding, status
from render_node.daemon import NodeConfig, RenderNode
from render_node.sysinfo import benchmark_score, capabilities, has_benchmark, save_benchmark

WORK_DIR_HELP = "the node's work dir (its keypair, cache and saved score)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `render-node --coordinator X run` works like `render-node run --coordinator X`.
    argv = options_after_command(parser, sys.argv[1:] if argv is None else argv)
    role = None
    if config.command_of(argv) == "run":
        role = config.node_role(config.subcommand_parsers(parser)["run"])
    args = config.parse_args(parser, argv, role)
    if args.command == "status":
        return status.run(args)
    if args.command == "info":
        return _info(args.threads, args.work_dir)
    if args.command == "benchmark":
        return _benchmark(args.work_dir, args.threads)
    if args.command == "earnings":
        return _earnings(args)
    if args.command in ("bond", "unbond", "airdrop"):
        return _bonds(args)
    return _run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="render-node", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="lease and render frames until stopped")
    run.add_argument("--config", type=Path, metavar="FILE", help="a TOML file of these "
                     "settings (docs/CONFIG.md); variables and flags override it")
    run.add_argument("--coordinator", action=AddressList,
                     help="HOST:PORT (default $FRAMEPROOF_COORDINATOR); several: a,b or "
                     "the flag repeated, and the node fails over to a live one")
    run.add_argument("--work-dir", type=Path, required=True,
                     help="identity, scene cache, outputs and logs live here")
    run.add_argument("--threads", type=int, default=0, help="render threads (0: all cores)")
    run.add_argument("--name", help="how the farm shows this node (default: the hostname)")
    run.add_argument("--keypair", type=Path,
                     help="Solana keypair JSON (default WORK_DIR/node-keypair.json)")
    run.add_argument("--frame-timeout", type=float, default=3600.0,
                     help="seconds before a frame's render is abandoned")
    run.add_argument("--memory-limit-gb", type=float,
                     help="address-space limit for the Blender child")
    run.add_argument("--tls-ca", type=Path, help="CA certificate of a TLS coordinator")
    run.add_argument("--max-tasks", type=int, default=1, metavar="N",
                     help="tasks to lease per call, rendered in order (default 1; 0: as many "
                          "as the last task's pace renders in half a lease, at most 8: fewer "
                          "calls per frame for the coordinator, but frames held here wait "
                          "while other nodes may be idle; other than 1, held leases are "
                          "renewed and delivered together, one call for all)")
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    run.add_argument("--metrics", metavar="HOST:PORT", help="serve /metrics (Prometheus) here: "
                     "frames, render seconds, failures (default: off)")
    run.add_argument("--benchmark-score", type=float, metavar="S",
                     help="on first start, save S as this machine's score instead of measuring "
                     "it (default: measure once, ~30 s; `render-node benchmark` measures again)")

    info = commands.add_parser("info", help="print what this node would advertise")
    info.add_argument("--threads", type=int, default=0, help="render threads (0: all cores)")
    info.add_argument("--work-dir", type=Path, help="the node's work dir: show the score it "
                      "saved (default: none, the reference score 1.0)")

    bench = commands.add_parser("benchmark", help="render the reference scene and save this "
                                "node's score in its work dir (1.0 = the reference machine)")
    bench.add_argument("--work-dir", type=Path, required=True, help=WORK_DIR_HELP)
    bench.add_argument("--threads", type=int, default=0, help="render threads (0: all cores)")

    earnings = commands.add_parser("earnings", help="tokens minted to this node, per epoch")
    earnings.add_argument("--coordinator", action=AddressList,
                        help="HOST:PORT (default $FRAMEPROOF_COORDINATOR); several: a,b")
    earnings.add_argument("--work-dir", type=Path, required=True, help=WORK_DIR_HELP)
    earnings.add_argument("--keypair", type=Path,
                          help="Solana keypair JSON (default WORK_DIR/node-keypair.json)")
    earnings.add_argument("--tls-ca", type=Path, help="CA certificate of a TLS coordinator")
    earnings.add_argument("--json", action="store_true", help="print JSON instead of text")

    status.add_arguments(commands.add_parser("status", help="this node's standing and "
                                             "reputation history"))

    bond = commands.add_parser("bond", help="stake tokens from this node's wallet: a bond of "
                               "at least the coordinator's minimum (and a verified record) "
                               "lifts a new identity's limits; proven cheating slashes it")
    _wallet_arguments(bond)
    bond.add_argument("--tokens", help="tokens to add to the bond (omit: show the bond)")
    unbond = commands.add_parser("unbond", help="take the bond back: it stops counting now "
                                 "and returns after the cooldown, in good standing")
    _wallet_arguments(unbond)
    drop = commands.add_parser("airdrop", help="embedded chain and test clusters: test tokens "
                               "(and fee SOL) for this node's key, e.g. to bond")
    _wallet_arguments(drop)
    drop.add_argument("tokens", help="how many tokens")
    return parser


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not has_benchmark(args.work_dir):
        # A node never advertises the reference score by default: it measures itself once.
        if args.benchmark_score is not None:
            if not 0 < args.benchmark_score < 1e6:
                print("render-node: --benchmark-score must be positive", file=sys.stderr)
                return 2
            save_benchmark(args.work_dir, args.benchmark_score, 0.0)
        else:
            print("render-node: first start: measuring this machine once (render-node "
                  "benchmark)", file=sys.stderr, flush=True)
            if _benchmark(args.work_dir, args.threads):
                return 1
    memory = int(args.memory_limit_gb * 2**30) if args.memory_limit_gb else None
    node = RenderNode(NodeConfig(
        coordinator=coordinator_address(args.coordinator),
        work_dir=args.work_dir,
        threads=args.threads,
        name=args.name or socket.gethostname(),
        keypair_path=args.keypair,
        frame_timeout=args.frame_timeout,
        memory_limit_bytes=memory,
        tls_ca=args.tls_ca,
        max_tasks=max(0, args.max_tasks),
    ))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: node.stop())
    gc.freeze()  # what is loaded lives as long as the process (see coordinator.server.serve)
    if args.metrics:
        from render_node import metrics

        try:
            port = metrics.serve(args.metrics)
        except (OSError, ValueError) as error:
            print(f"render-node: cannot serve metrics on {args.metrics}: {error}",
                  file=sys.stderr)
            return 2
        host = args.metrics.rpartition(":")[0]
        print(f"metrics on http://{host}:{port}/metrics", flush=True)
    print(f"node {node.node_id} working for {node.config.coordinator}", flush=True)
    node.run()
    return 0


def _benchmark(work_dir: Path, threads: int) -> int:
    from frameproof.benchmark import run_benchmark

    try:
        result = run_benchmark(threads=threads)
    except (BlenderError, OSError, RuntimeError) as error:
        print(f"render-node: the benchmark failed: {error}", file=sys.stderr)
        return 1
    save_benchmark(work_dir, result.score, result.seconds)
    print(json.dumps({"score": round(result.score, 4), "seconds": round(result.seconds, 3),
                      "reference_seconds": result.reference_seconds,
                      "blender_version": result.blender_version, "device": result.device},
                     indent=2))
    return 0


def _earnings(args: argparse.Namespace) -> int:
    keypair_path = args.keypair or args.work_dir / "node-keypair.json"
    if not keypair_path.exists():
        print(f"render-node: no node keypair at {keypair_path}", file=sys.stderr)
        return 2
    keypair = load_or_create_keypair(keypair_path)
    node_id = str(keypair.pubkey())
    with FarmClient(coordinator_address(args.coordinator), keypair, tls_ca=args.tls_ca) as client:
        try:
            earnings = client.nodes.GetEarnings(pb.EarningsRequest(node_id=node_id), timeout=60)
        except grpc.RpcError as error:
            print(f"render-node: {error.details()}", file=sys.stderr)
            return 1
    epochs = [{"epoch": e.epoch, "credits": e.credits, "minted": e.minted,
               "signature": e.signature, "closed_unix_ms": e.closed_unix_ms}
              for e in earnings.epochs]
    if args.json:
        print(json.dumps({"node_id": node_id, "epochs": epochs,
                          "total_minted": earnings.total_minted,
                          "open_credits": earnings.open_credits,
                          "decimals": earnings.decimals}, indent=2))
        return 0
    def paid(base_units: int) -> str:
        return money(base_units, earnings.decimals, earnings.token_price_usd)

    print(f"node {node_id}: {paid(earnings.total_minted)} minted; "
          f"{earnings.open_credits:.6f} reference-hours of work in the open epoch")
    for epoch in epochs:
        print(f"  epoch {epoch['epoch']}: {epoch['credits']:.6f} reference-hours, "
              f"{paid(epoch['minted'])}  {epoch['signature']}")
    return 0


def _wallet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", action=AddressList,
                        help="HOST:PORT (default $FRAMEPROOF_COORDINATOR); several: a,b")
    parser.add_argument("--work-dir", type=Path, required=True, help=WORK_DIR_HELP)
    parser.add_argument("--keypair", type=Path,
                        help="Solana keypair JSON (default WORK_DIR/node-keypair.json)")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate of a TLS coordinator")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _bonds(args: argparse.Namespace) -> int:
    """bond / unbond / airdrop: one signed call or two, then the bond as it stands."""
    keypair = load_or_create_keypair(args.keypair or args.work_dir / "node-keypair.json")
    with FarmClient(coordinator_address(args.coordinator), keypair, tls_ca=args.tls_ca) as client:
        try:
            if args.command == "airdrop":
                wallet = bonding.airdrop(client, args.tokens)
                print(f"node {wallet.pubkey}: "
                      f"{money(wallet.balance, wallet.decimals, wallet.token_price_usd)}")
                return 0
            if args.command == "unbond":
                bond = bonding.unbond(client)
            elif args.tokens is not None:
                bond = bonding.post_bond(client, args.tokens)
            else:
                bond = bonding.bond_status(client)
        except ValueError as error:
            print(f"render-node: {error}", file=sys.stderr)
            return 2
        except grpc.RpcError as error:
            print(f"render-node: {error.details()}", file=sys.stderr)
            return 1
    _print_bond(bond, args.json)
    return 0


def _print_bond(bond: pb.Bond, as_json: bool) -> None:
    if as_json:
        shown = MessageToDict(bond, preserving_proto_field_name=True,
                              always_print_fields_with_no_presence=True)
        shown.pop("token_price_usd", None)  # for the text's USD; the JSON stays as it was
        print(json.dumps(shown, indent=2))
        return

    def paid(base_units: int) -> str:
        return money(base_units, bond.decimals, bond.token_price_usd)

    print(f"node {bond.node_id}: bond {paid(bond.held)} ({bond.state}; "
          f"minimum {paid(bond.minimum)})")
    if bond.state == "unbonding":
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC",
                             time.gmtime(bond.release_after_unix_ms / 1000))
        print(f"  returns after {when} if the node is then in good standing (no lease, no "
              "frame being verified)")
    if bond.slashed or bond.returned:
        print(f"  slashed {paid(bond.slashed)}, returned {paid(bond.returned)}")
    if bond.last_signature:
        print(f"  last transfer {bond.last_signature} ({bond.last_state})")
    if bond.bounded:
        print(f"  work is bounded: {bond.max_leases} lease(s) in flight, "
              f"{bond.max_frames_per_job} frames per job ({bond.limits})")
    else:
        print("  work is not bounded")


def _info(threads: int, work_dir: Path | None) -> int:
    try:
        with BlenderWorker(threads=threads) as worker:
            version = worker.blender_version()
    except BlenderError as error:
        print(f"render-node: Blender does not start: {error}", file=sys.stderr)
        return 1
    score = benchmark_score(work_dir) if work_dir is not None else 1.0
    advertised = capabilities(version, threads, ["CPU"], score)
    print(json.dumps(MessageToDict(advertised, preserving_proto_field_name=True), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`render-node`: run a render node, or show what it would advertise."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from frameproof.blender.worker import BlenderError, BlenderWorker
from frameproof.client import coordinator_address
from render_node.daemon import NodeConfig, RenderNode
from render_node.sysinfo import capabilities


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="render-node", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="lease and render frames until stopped")
    run.add_argument("--coordinator", help="HOST:PORT (default $FRAMEPROOF_COORDINATOR)")
    run.add_argument("--work-dir", type=Path, required=True,
                     help="identity, scene cache, outputs and logs live here")
    run.add_argument("--threads", type=int, default=0, help="render threads (0: all cores)")
    run.add_argument("--name", default=socket.gethostname())
    run.add_argument("--keypair", type=Path,
                     help="Solana keypair JSON (default WORK_DIR/node-keypair.json)")
    run.add_argument("--frame-timeout", type=float, default=3600.0,
                     help="seconds before a frame's render is abandoned")
    run.add_argument("--memory-limit-gb", type=float,
                     help="address-space limit for the Blender child")
    run.add_argument("--tls-ca", type=Path, help="CA certificate of a TLS coordinator")
    run.add_argument("--log-level", default="INFO")

    info = commands.add_parser("info", help="print what this node would advertise")
    info.add_argument("--threads", type=int, default=0)

    args = parser.parse_args(argv)
    if args.command == "info":
        return _info(args.threads)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    memory = int(args.memory_limit_gb * 2**30) if args.memory_limit_gb else None
    node = RenderNode(NodeConfig(
        coordinator=coordinator_address(args.coordinator),
        work_dir=args.work_dir,
        threads=args.threads,
        name=args.name,
        keypair_path=args.keypair,
        frame_timeout=args.frame_timeout,
        memory_limit_bytes=memory,
        tls_ca=args.tls_ca,
    ))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: node.stop())
    print(f"node {node.node_id} working for {node.config.coordinator}", flush=True)
    node.run()
    return 0


def _info(threads: int) -> int:
    try:
        with BlenderWorker(threads=threads) as worker:
            version = worker.blender_version()
    except BlenderError as error:
        print(f"render-node: Blender does not start: {error}", file=sys.stderr)
        return 1
    advertised = capabilities(version, threads, ["CPU"])
    print(json.dumps(MessageToDict(advertised, preserving_proto_field_name=True), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

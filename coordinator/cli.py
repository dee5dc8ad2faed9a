"""`render-coordinator`: run the farm's coordinator."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from coordinator.server import CoordinatorConfig, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="render-coordinator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the gRPC API until SIGTERM")
    run.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT (port 0: any)")
    run.add_argument("--data-dir", type=Path, default=Path(".farm"),
                     help="database, blobs and scenes live here (default .farm)")
    run.add_argument("--db", help="SQLAlchemy URL, e.g. postgresql://user@host/db "
                                  "(default: SQLite in the data dir)")
    run.add_argument("--lease-seconds", type=float, default=60.0,
                     help="a node that stops heartbeating loses its task after this long")
    run.add_argument("--heartbeat-seconds", type=float, default=10.0)
    run.add_argument("--max-attempts", type=int, default=3,
                     help="failed leases before a frame is given up")
    run.add_argument("--tls-cert", type=Path, help="PEM certificate: serve TLS instead of "
                     "plaintext (with --tls-key)")
    run.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    run.add_argument("--admin-pubkey", action="append", default=[],
                     help="a public key with admin rights (repeatable); the data dir's own "
                          "admin-keypair.json and the local admin.sock always have them")
    run.add_argument("--no-verifier", action="store_true",
                     help="do not start a verifier beside the coordinator")
    run.add_argument("--verifier-threads", type=int, default=0)
    run.add_argument("--verifier-pubkey", action="append", default=[],
                     help="a public key allowed to run render-verifier (repeatable)")
    run.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = CoordinatorConfig(
        listen=args.listen,
        data_dir=args.data_dir,
        db_url=args.db,
        lease_seconds=args.lease_seconds,
        heartbeat_seconds=min(args.heartbeat_seconds, args.lease_seconds / 3),
        max_attempts=args.max_attempts,
        admins=tuple(args.admin_pubkey),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        verifiers=tuple(args.verifier_pubkey),
        run_verifier=not args.no_verifier,
        verifier_threads=args.verifier_threads,
    )
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    try:
        asyncio.run(serve(config))
    except OSError as error:
        parser.exit(2, f"render-coordinator: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

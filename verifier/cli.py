"""`render-verifier`: run a Proof-of-Render verifier against a coordinator."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from frameproof.client import coordinator_address
from verifier.worker import Verifier, VerifierConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="render-verifier", description=__doc__)
    parser.add_argument(
        "--coordinator", help="HOST:PORT or unix:PATH (default $FRAMEPROOF_COORDINATOR)"
    )
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument(
        "--keypair",
        type=Path,
        help="a key the coordinator trusts as verifier, or a Tier 1 node's own keypair "
        "(NODE_DIR/node-keypair.json: peer verification of other nodes' frames) "
        "(default WORK_DIR/verifier-keypair.json)",
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--tls-ca", type=Path)
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone "
                        "(set by the coordinator that starts its own verifier)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    verifier = Verifier(
        VerifierConfig(
            coordinator=coordinator_address(args.coordinator),
            work_dir=args.work_dir,
            keypair_path=args.keypair,
            threads=args.threads,
            tls_ca=args.tls_ca,
            parent_pid=args.parent_pid,
        )
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: verifier.stop())
    print(f"verifier {verifier.verifier_id} working for {verifier.config.coordinator}", flush=True)
    verifier.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`render-verifier`: run a Proof-of-Render verifier against a coordinator."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading
from pathlib import Path

from frameproof.client import AddressList, coordinator_address
from verifier.worker import Verifier, VerifierConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="render-verifier", description=__doc__)
    parser.add_argument(
        "--coordinator", action=AddressList,
        help="HOST:PORT or unix:PATH (default $FRAMEPROOF_COORDINATOR); several: a,b or the "
        "flag repeated, and the verifier fails over to a live one"
    )
    parser.add_argument("--work-dir", type=Path, required=True,
                        help="the verifier's folder: its keypair, scenes and renders")
    parser.add_argument(
        "--keypair",
        type=Path,
        help="a key the coordinator trusts as verifier, or a Tier 1 node's own keypair "
        "(NODE_DIR/node-keypair.json: peer verification of other nodes' frames) "
        "(default WORK_DIR/verifier-keypair.json)",
    )
    parser.add_argument("--threads", type=int, default=0,
                        help="render threads of each worker's Blender (0: all cores)")
    parser.add_argument("--workers", type=int, default=1,
                        help="checks run at once, each in its own Blender and WORK_DIR/worker-N "
                        "(default 1); the coordinator never leases one check to two workers")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate of a TLS coordinator")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone "
                        "(set by the coordinator that starts its own verifier)")
    parser.add_argument("--log-level", default="INFO",
                        help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    keypair = args.keypair or args.work_dir / "verifier-keypair.json"
    workers = [
        Verifier(
            VerifierConfig(
                coordinator=coordinator_address(args.coordinator),
                work_dir=args.work_dir if args.workers == 1 else args.work_dir / f"worker-{n}",
                keypair_path=keypair,
                threads=args.threads,
                tls_ca=args.tls_ca,
                parent_pid=args.parent_pid,
            )
        )
        for n in range(1, args.workers + 1)
    ]
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: [worker.stop() for worker in workers])
    first = workers[0]
    gc.freeze()  # what is loaded lives as long as the process (see coordinator.server.serve)
    print(f"verifier {first.verifier_id} working for {first.config.coordinator} "
          f"({len(workers)} worker{'s' if len(workers) > 1 else ''})", flush=True)
    threads = [threading.Thread(target=worker.run, name=f"verifier-{n}")
               for n, worker in enumerate(workers[1:], start=2)]
    for thread in threads:
        thread.start()
    first.run()  # the main thread keeps the signal handlers
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What checking a delivery's receipts costs the coordinator, per frame: each frame signed
alone (one ed25519 verification each) against the frames signed together as one tree
(frameproof.receipts: a proof walk each, one verification per delivery).

    .venv/bin/python -m bench.receipt_bench [--frames 16] [--rounds 5]

In-process, `verify_receipt` as NodeServicer calls it (a per-delivery memo, the job's settings
digest known), alternated alone / tree each round; prints µs per frame, the median of 10
repeats of 20 deliveries per round.
"""

from __future__ import annotations

import argparse
import statistics
import timeit

from solders.keypair import Keypair

from frameproof.receipts import (
    Claim,
    Receipt,
    settings_digest,
    sign_receipt,
    sign_receipts,
    verify_receipt,
)
from frameproof.v1 import farm_pb2 as pb


def check(node: str, claims: list[Claim], receipts: list[Receipt], digest: str) -> None:
    verified: dict[tuple[str, str, bytes], bool] = {}
    for claim, receipt in zip(claims, receipts, strict=True):
        assert verify_receipt(node, receipt.signature, claim.job_id, claim.frame,
                              claim.image_sha256, claim.settings, receipt.proof, verified,
                              digest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    keypair = Keypair()
    node = str(keypair.pubkey())
    settings = pb.RenderSettings(samples=16, resolution_x=160, resolution_y=90)
    digest = settings_digest(settings)
    claims = [Claim("job-1", frame, f"{frame:064x}", settings)
              for frame in range(1, args.frames + 1)]
    alone = [Receipt(sign_receipt(keypair, *claim)) for claim in claims]
    tree = sign_receipts(keypair, claims)
    print(f"| round | {args.frames} frames signed alone, µs a frame | "
          "signed as one tree, µs a frame |")
    print("|---|---|---|")
    for round_ in range(1, args.rounds + 1):
        figures = []
        for receipts in (alone, tree):
            runs = timeit.repeat(lambda receipts=receipts: check(node, claims, receipts, digest),
                                 number=20, repeat=10)
            figures.append(statistics.median(runs) / 20 / args.frames * 1e6)
        print(f"| {round_} | {figures[0]:.1f} | {figures[1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()

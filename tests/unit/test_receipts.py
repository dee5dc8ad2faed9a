"""Receipts signed alone and in trees (frameproof.receipts): every frame of a tree checks on
its own with its proof, and nothing else checks: another claim, another key, another proof."""

from __future__ import annotations

import pytest
from solders.keypair import Keypair

from frameproof.receipts import (
    PROOF_STEP,
    Claim,
    Receipt,
    is_proof,
    sign_receipt,
    sign_receipts,
    verify_receipt,
)
from frameproof.v1 import farm_pb2 as pb

SETTINGS = pb.RenderSettings(samples=16, resolution_x=160, resolution_y=90)


def claims(count: int, job: str = "job-1") -> list[Claim]:
    return [Claim(job, frame, f"{frame:064x}", SETTINGS) for frame in range(1, count + 1)]


def holds(node: Keypair, claim: Claim, receipt: Receipt, **extra: object) -> bool:
    return verify_receipt(str(node.pubkey()), receipt.signature, claim.job_id, claim.frame,
                          claim.image_sha256, claim.settings, receipt.proof, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 16, 17])
def test_each_frame_of_a_tree_checks_alone_and_only_its_own_claim(count: int):
    node = Keypair()
    signed = claims(count)
    receipts = sign_receipts(node, signed)
    assert len({r.signature for r in receipts}) == 1, "one signature for the whole delivery"
    assert all(len(r.proof) % PROOF_STEP == 0 and is_proof(r.proof) for r in receipts)
    assert (receipts[0].proof == "") == (count == 1), "a frame alone has no proof"
    for claim, receipt in zip(signed, receipts, strict=True):
        assert holds(node, claim, receipt)
        assert not holds(node, claim._replace(frame=claim.frame + 100), receipt)
        assert not holds(node, claim._replace(job_id="job-2"), receipt)
        assert not holds(node, claim._replace(image_sha256="f" * 64), receipt)
        assert not holds(node, claim._replace(settings=pb.RenderSettings(samples=17)), receipt)
        assert not holds(Keypair(), claim, receipt), "another key"
    if count > 1:
        # A frame's claim with another frame's proof, and a proof spoiled anywhere.
        assert not holds(node, signed[0], receipts[1])
        proof = receipts[0].proof
        flipped = ("r" if proof[0] == "l" else "l") + proof[1:]
        assert not holds(node, signed[0], receipts[0]._replace(proof=flipped)), "side"
        sibling = proof[:1] + ("0" if proof[1] != "0" else "1") + proof[2:]
        assert not holds(node, signed[0], receipts[0]._replace(proof=sibling)), "sibling"
        assert not holds(node, signed[0], receipts[0]._replace(proof=proof[:-PROOF_STEP]))
        assert not holds(node, signed[0], receipts[0]._replace(proof=proof + proof[:PROOF_STEP]))
        assert not holds(node, signed[0], receipts[0]._replace(proof="")), "tree as alone"
        assert not holds(node, signed[0], receipts[0]._replace(proof=proof.upper())), "malformed"


def test_a_receipt_signed_alone_is_no_tree_and_old_receipts_still_check():
    node = Keypair()
    claim = claims(1)[0]
    alone = sign_receipt(node, *claim)
    assert holds(node, claim, Receipt(alone))
    other = sign_receipts(node, claims(2))[0]
    # The alone signature with a proof (a root is never a payload), and a tree's signature
    # without one: neither checks.
    assert not holds(node, claim, Receipt(alone, other.proof))
    assert not holds(node, claim, Receipt(other.signature))


def test_a_delivery_checks_its_tree_signature_once_and_remembers_only_what_was_signed():
    node, intruder = Keypair(), Keypair()
    signed = claims(4)
    receipts = sign_receipts(node, signed)
    verified: dict[tuple[str, str, bytes], bool] = {}
    assert all(holds(node, c, r, verified=verified) for c, r in zip(signed, receipts, strict=True))
    assert list(verified.values()) == [True], "one tree, one signature check"
    # The same signature and proofs under another key, with the first key's check
    # remembered: still refused (the key is part of what is remembered).
    assert not holds(intruder, signed[0], receipts[0], verified=verified)
    forged = sign_receipts(intruder, signed)
    assert not holds(node, signed[1], forged[1], verified=verified)

"""Result receipts: a node signs what it delivers, so the farm can prove who claimed what.

The call that delivers a result is signed too, but that signature covers a whole request
and is not kept. A receipt names one frame, its image and the settings it was rendered
with, and is stored beside the result: an auditor (or a court of creators) can later check
that this node, and no one else, claimed this image for this frame.

A node delivering many frames at once signs them together: the frames' receipt payloads are
the leaves of a Merkle tree (RFC 6962's shape, with its leaf and node prefixes) and one
signature covers the root. Each frame keeps the signature and its proof, the sibling hashes
from its leaf to the root, so it is checked on its own as before, and the coordinator checks
one signature per delivery instead of one per frame (ed25519 verification was the largest
single cost of a frame cycle: docs/BENCHMARKS.md, "cycles"). A frame signed alone has an
empty proof and its signature covers its payload itself, as every receipt did before trees.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import MutableMapping, Sequence
from typing import NamedTuple

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from frameproof.v1 import farm_pb2 as pb

TREE_DEPTH = 16  # proof steps at most: 65,536 frames signed together
PROOF_STEP = 65  # "l" or "r" (the sibling's side), then its sha256 in hex
_PROOF = re.compile(rf"(?:[lr][0-9a-f]{{64}}){{0,{TREE_DEPTH}}}")
_TREE_HEADER = b"frameproof-receipt-tree-v1\n"
# RegisterNodeResponse.features: the coordinator verifies trees (coordinators before them
# refuse a frame whose receipt has a proof, so a node signs trees only when told this).
TREES_FEATURE = "receipt-trees"


class Claim(NamedTuple):
    """What a receipt says a node delivered."""

    job_id: str
    frame: int
    image_sha256: str
    settings: pb.RenderSettings


class Receipt(NamedTuple):
    signature: str
    proof: str = ""  # empty: the signature covers this frame's payload alone


def settings_digest(settings: pb.RenderSettings) -> str:
    return hashlib.sha256(settings.SerializeToString(deterministic=True)).hexdigest()


def receipt_payload(job_id: str, frame: int, image_sha256: str, settings_sha256: str) -> bytes:
    return "\n".join(["frameproof-receipt-v1", job_id, str(frame), image_sha256,
                      settings_sha256]).encode()


def sign_receipt(keypair: Keypair, job_id: str, frame: int, image_sha256: str,
                 settings: pb.RenderSettings) -> str:
    """One frame's receipt, signed alone (its proof is empty)."""
    payload = receipt_payload(job_id, frame, image_sha256, settings_digest(settings))
    return str(keypair.sign_message(payload))


def sign_receipts(keypair: Keypair, claims: Sequence[Claim]) -> list[Receipt]:
    """Receipts for several frames under one signature (see the module doc), in order."""
    if len(claims) == 1:
        (claim,) = claims
        return [Receipt(sign_receipt(keypair, *claim))]
    digests: dict[int, str] = {}
    leaves = []
    for claim in claims:
        digest = digests.get(id(claim.settings))
        if digest is None:
            digest = digests[id(claim.settings)] = settings_digest(claim.settings)
        leaves.append(_leaf(receipt_payload(claim.job_id, claim.frame, claim.image_sha256,
                                            digest)))
    root, proofs = _tree(leaves)
    signature = str(keypair.sign_message(_TREE_HEADER + root.hex().encode()))
    return [Receipt(signature, proof) for proof in proofs]


def sign_outputs(keypair: Keypair, outputs: Sequence[tuple[pb.Lease, pb.FrameOutput]]
                 ) -> None:
    """Set each output's receipt_signature and receipt_proof: the frames of one delivery
    (each with the lease it renders) signed together, as one tree."""
    receipts = sign_receipts(keypair, [Claim(lease.job_id, output.frame, output.image.sha256,
                                             lease.settings) for lease, output in outputs])
    for (_, output), receipt in zip(outputs, receipts, strict=True):
        output.receipt_signature, output.receipt_proof = receipt


def verify_receipt(node_id: str, signature: str, job_id: str, frame: int, image_sha256: str,
                   settings: pb.RenderSettings, proof: str = "",
                   verified: MutableMapping[tuple[str, str, bytes], bool] | None = None,
                   settings_sha256: str | None = None) -> bool:
    """Whether `node_id` signed this claim. `verified` remembers the signatures checked
    (one per tree) for a caller checking many frames of one delivery; `settings_sha256`
    spares recomputing the settings' digest."""
    try:
        pubkey = Pubkey.from_string(node_id)
        parsed = Signature.from_string(signature)
    except ValueError:
        return False
    digest = settings_sha256 or settings_digest(settings)
    payload = receipt_payload(job_id, frame, image_sha256, digest)
    if not proof:
        return parsed.verify(pubkey, payload)
    root = proof_root(_leaf(payload), proof)
    if root is None:
        return False
    key = (node_id, signature, root)
    if verified is not None and key in verified:
        return verified[key]
    valid = parsed.verify(pubkey, _TREE_HEADER + root.hex().encode())
    if verified is not None:
        verified[key] = valid
    return valid


def is_proof(proof: str) -> bool:
    return _PROOF.fullmatch(proof) is not None


def proof_root(leaf: bytes, proof: str) -> bytes | None:
    """The root a leaf's proof leads to; None for a malformed proof."""
    if not is_proof(proof):
        return None
    node = leaf
    for start in range(0, len(proof), PROOF_STEP):
        sibling = bytes.fromhex(proof[start + 1:start + PROOF_STEP])
        pair = sibling + node if proof[start] == "l" else node + sibling
        node = hashlib.sha256(b"\x01" + pair).digest()
    return node


def _leaf(payload: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + payload).digest()


def _tree(leaves: Sequence[bytes]) -> tuple[bytes, list[str]]:
    """(root, each leaf's proof): RFC 6962's tree, split at the largest power of two below
    the count."""
    if len(leaves) == 1:
        return leaves[0], [""]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    left, left_proofs = _tree(leaves[:split])
    right, right_proofs = _tree(leaves[split:])
    root = hashlib.sha256(b"\x01" + left + right).digest()
    return root, ([proof + "r" + right.hex() for proof in left_proofs]
                  + [proof + "l" + left.hex() for proof in right_proofs])

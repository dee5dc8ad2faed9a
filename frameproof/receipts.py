"""Result receipts: a node signs what it delivers, so the farm can prove who claimed what.

The call that delivers a result is signed too, but that signature covers a whole request
and is not kept. A receipt names one frame, its image and the settings it was rendered
with, and is stored beside the result: an auditor (or a court of creators) can later check
that this node, and no one else, claimed this image for this frame.
"""

from __future__ import annotations

import hashlib

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from frameproof.v1 import farm_pb2 as pb


def settings_digest(settings: pb.RenderSettings) -> str:
    return hashlib.sha256(settings.SerializeToString(deterministic=True)).hexdigest()


def receipt_payload(job_id: str, frame: int, image_sha256: str, settings_sha256: str) -> bytes:
    return "\n".join(["frameproof-receipt-v1", job_id, str(frame), image_sha256,
                      settings_sha256]).encode()


def sign_receipt(keypair: Keypair, job_id: str, frame: int, image_sha256: str,
                 settings: pb.RenderSettings) -> str:
    payload = receipt_payload(job_id, frame, image_sha256, settings_digest(settings))
    return str(keypair.sign_message(payload))


def verify_receipt(node_id: str, signature: str, job_id: str, frame: int, image_sha256: str,
                   settings: pb.RenderSettings) -> bool:
    try:
        pubkey = Pubkey.from_string(node_id)
        parsed = Signature.from_string(signature)
    except ValueError:
        return False
    payload = receipt_payload(job_id, frame, image_sha256, settings_digest(settings))
    return parsed.verify(pubkey, payload)

"""The node operator's side of bonds: airdrop test tokens, post a bond, take it back.

The coordinator prepares the transfer (node wallet -> bond vault); the node checks that it
pays from its own wallet only, signs it with its key and hands it back to be relayed, as a
creator does with an escrow deposit. See docs/PAYMENTS.md, "Bonds".
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from frameproof.client import FarmClient
from frameproof.v1 import farm_pb2 as pb
from frameproof.wallet import sign_deposit

CALL_TIMEOUT = 120.0


def base_units(tokens: str | Decimal, decimals: int) -> int:
    """"12.5" tokens -> base units; ValueError for anything but a positive amount."""
    try:
        amount = Decimal(str(tokens)) * 10**decimals
    except InvalidOperation as error:
        raise ValueError(f"not a number of tokens: {tokens!r}") from error
    if not amount.is_finite() or amount <= 0 or amount != amount.to_integral_value():
        raise ValueError(f"tokens must be positive with at most {decimals} decimals")
    return int(amount)


def bond_status(client: FarmClient) -> pb.Bond:
    """This node's bond and whether its share of work is still bounded."""
    bond: pb.Bond = client.nodes.GetBond(pb.GetBondRequest(node_id=client.pubkey),
                                         timeout=CALL_TIMEOUT, wait_for_ready=True)
    return bond


def airdrop(client: FarmClient, tokens: str | Decimal) -> pb.Wallet:
    """Embedded chain and test clusters: fee SOL and `tokens` fresh tokens to the node's key."""
    decimals = bond_status(client).decimals
    wallet: pb.Wallet = client.jobs.Airdrop(
        pb.AirdropRequest(tokens=base_units(tokens, decimals)), timeout=CALL_TIMEOUT)
    return wallet


def post_bond(client: FarmClient, tokens: str | Decimal) -> pb.Bond:
    """Move `tokens` from the node's wallet into the bond vault (the node signs)."""
    amount = base_units(tokens, bond_status(client).decimals)
    prepared = client.nodes.PrepareBond(pb.PrepareBondRequest(node_id=client.pubkey,
                                                              tokens=amount),
                                        timeout=CALL_TIMEOUT)
    signed = sign_deposit(prepared.message, client.keypair)
    bond: pb.Bond = client.nodes.PostBond(pb.PostBondRequest(
        node_id=client.pubkey, signed_bond=signed, tokens=amount), timeout=CALL_TIMEOUT)
    return bond


def unbond(client: FarmClient) -> pb.Bond:
    """Ask for the bond back: it stops counting now and returns after the cooldown."""
    bond: pb.Bond = client.nodes.Unbond(pb.UnbondRequest(node_id=client.pubkey),
                                        timeout=CALL_TIMEOUT)
    return bond

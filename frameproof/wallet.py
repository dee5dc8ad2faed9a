"""The creator's side of payments: check and sign the escrow deposit the coordinator prepared."""

from __future__ import annotations

from solders.keypair import Keypair
from solders.message import Message
from solders.transaction import VersionedTransaction


class DepositError(ValueError):
    """The prepared deposit is not one this creator should sign."""


def sign_deposit(message_bytes: bytes, keypair: Keypair) -> bytes:
    """Sign the deposit after checking it charges this creator's wallet and nobody else's.

    The creator is the fee payer and only signer; the coordinator relays the signed
    transaction but cannot change it (its chain layer checks it byte for byte too).
    """
    message = Message.from_bytes(message_bytes)
    if not message.account_keys or message.account_keys[0] != keypair.pubkey():
        raise DepositError("the deposit is not paid from your wallet; refusing to sign")
    if message.header.num_required_signatures != 1:
        raise DepositError("the deposit asks for other signers; refusing to sign")
    return bytes(VersionedTransaction(message, [keypair]))


def tokens(amount: int, decimals: int) -> str:
    """Base units as a token amount for people: 1500000 with 6 decimals -> "1.5"."""
    whole, fraction = divmod(amount, 10**decimals)
    text = f"{whole}.{fraction:0{decimals}d}".rstrip("0").rstrip(".") if decimals else str(whole)
    return text or "0"


def money(base_units: int, decimals: int, token_price_usd: float) -> str:
    """One money unit in text output: USD first, the tokens in brackets ("$1.50 (150 tokens)").

    Shared by the creator's and the node's commands, so both say amounts the same way."""
    usd = base_units / 10**decimals * token_price_usd
    return f"${usd:.6f} ({tokens(base_units, decimals)} tokens)"

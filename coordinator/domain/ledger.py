"""The ledger's rules: accounts, what each chain operation posts, and when a posting balances.

Double entry over token base units (a line's amount is positive when tokens arrive):

* `issued`          counterparty of every mint; its balance is minus the total ever minted.
* `burned`          receives every burn; its balance is the total ever burned.
* `escrow:<job>`    a job's share of the treasury's escrow ATA.
* `wallet:<pubkey>` what the farm moved into (grants, refunds, emissions, returned bonds,
                    slashed shares) or out of (deposits, bonds) an outside wallet. Not its
                    chain balance: owners also trade elsewhere.
* `bond:<node>`     a node's bond in the bond vault.
* `treasury`        the treasury vault: its share of slashed bonds.

So `-(issued + burned)` is the token supply, the sum of `escrow:*` is the escrow ATA's
balance, the sum of `bond:*` the bond vault's and `treasury` the treasury vault's: the
figures `Payments.check` compares with the chain. Storing postings is
`coordinator.storage.ledger`'s job; deciding what they are is this module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

ISSUED = "issued"
BURNED = "burned"
TREASURY = "treasury"
Lines = Sequence[tuple[str, int]]


class OpKind(StrEnum):
    """A token movement on chain (the journal's `kind`)."""

    GRANT = "grant"  # test tokens to a new creator
    DEPOSIT = "deposit"  # creator -> job escrow (a job's first deposit or a top-up)
    BURN = "burn"  # an approved frame's price, burned from its job's escrow
    REFUND = "refund"  # what a settled job did not spend, back to its creator
    MINT = "mint"  # an epoch's emission to a node
    BOND = "bond"  # node operator -> bond vault
    UNBOND = "unbond"  # bond vault -> node operator
    SLASH = "slash"  # bond vault -> a cheated creator
    FORFEIT = "forfeit"  # bond vault -> treasury


class OpState(StrEnum):
    """Where a journalled chain operation is; only `landed` ones have ledger lines."""

    NEW = "new"  # intent recorded, no transaction signed yet
    SENT = "sent"  # signed bytes recorded; maybe sent; reconcile decides
    LANDED = "landed"  # final: executed on chain, ledger posted
    FAILED = "failed"  # final: executed with an error, nothing moved
    DROPPED = "dropped"  # final (deposits only): expired unseen; the creator must sign again


OPEN_STATES = (OpState.NEW, OpState.SENT)


class EscrowState(StrEnum):
    """A job's escrow (`pay_job.state`)."""

    OPENING = "opening"  # the deposit is relayed, not landed yet
    OPEN = "open"  # frames are charged from it; top-ups add to it
    SETTLED = "settled"  # closed: no more charges, the rest refunded
    FAILED = "failed"  # the deposit failed or expired: the job never had escrow


class BondState(StrEnum):
    """A node's bond as the API shows it (`Bond.state`)."""

    NONE = "none"  # never bonded
    BONDED = "bonded"  # at least the minimum, counting now
    BELOW_MINIMUM = "below-minimum"
    UNBONDING = "unbonding"  # cooldown running: no longer counts, returned after it
    RETURNED = "returned"  # given back


class UnbalancedPosting(ValueError):
    """A posting whose lines do not sum to zero (or are malformed) was refused."""


def escrow_account(job_id: str) -> str:
    return f"escrow:{job_id}"


def wallet_account(pubkey: str) -> str:
    return f"wallet:{pubkey}"


def bond_account(node_id: str) -> str:
    return f"bond:{node_id}"


def movement_lines(kind: str, amount: int, *, owner: str = "", job_id: str = "",
                   node_id: str = "") -> list[tuple[str, int]]:
    """The posting a landed chain operation of `kind` makes; one definition for post and check."""
    match kind:
        case OpKind.GRANT | OpKind.MINT:
            return [(ISSUED, -amount), (wallet_account(owner), amount)]
        case OpKind.DEPOSIT:
            return [(wallet_account(owner), -amount), (escrow_account(job_id), amount)]
        case OpKind.BURN:
            return [(escrow_account(job_id), -amount), (BURNED, amount)]
        case OpKind.REFUND:
            return [(escrow_account(job_id), -amount), (wallet_account(owner), amount)]
        case OpKind.BOND:
            return [(wallet_account(owner), -amount), (bond_account(node_id), amount)]
        case OpKind.UNBOND | OpKind.SLASH:  # back to its node, or a share to a cheated creator
            return [(bond_account(node_id), -amount), (wallet_account(owner), amount)]
        case OpKind.FORFEIT:
            return [(bond_account(node_id), -amount), (TREASURY, amount)]
    raise ValueError(f"unknown operation kind {kind!r}")


def check_posting(op_id: str, lines: Lines) -> None:
    """Refuse a posting unless it has two or more well-formed lines summing to exactly zero."""
    if len(lines) < 2:
        raise UnbalancedPosting(f"posting for {op_id} needs at least two lines")
    for account, amount in lines:
        if not account or not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
            raise UnbalancedPosting(f"bad line {account!r} {amount!r} in posting for {op_id}")
    total = sum(amount for _, amount in lines)
    if total != 0:
        raise UnbalancedPosting(f"posting for {op_id} is off by {total}")


def supply(issued: int, burned: int) -> int:
    """Tokens in existence by the ledger: minted (minus `issued`) less burned."""
    return -issued - burned

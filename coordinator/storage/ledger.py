"""Double-entry ledger over token base units: every posting's lines sum to zero.

Accounts (a line's amount is positive when tokens arrive in the account):

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
figures `check` compares with the chain.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func
from sqlmodel import Session, col, select

from coordinator.storage.payment_models import LedgerLineRecord, PostingRecord

ISSUED = "issued"
BURNED = "burned"
TREASURY = "treasury"
Lines = Sequence[tuple[str, int]]


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
        case "grant" | "mint":
            return [(ISSUED, -amount), (wallet_account(owner), amount)]
        case "deposit":
            return [(wallet_account(owner), -amount), (escrow_account(job_id), amount)]
        case "burn":
            return [(escrow_account(job_id), -amount), (BURNED, amount)]
        case "refund":
            return [(escrow_account(job_id), -amount), (wallet_account(owner), amount)]
        case "bond":
            return [(wallet_account(owner), -amount), (bond_account(node_id), amount)]
        case "unbond" | "slash":  # the bond back to its node, or a share to a cheated creator
            return [(bond_account(node_id), -amount), (wallet_account(owner), amount)]
        case "forfeit":
            return [(bond_account(node_id), -amount), (TREASURY, amount)]
    raise ValueError(f"unknown operation kind {kind!r}")


def post(session: Session, op_id: str, kind: str, lines: Lines, at: float) -> PostingRecord:
    """Add one posting (not committed): refused unless it balances to zero exactly."""
    if len(lines) < 2:
        raise UnbalancedPosting(f"posting for {op_id} needs at least two lines")
    for account, amount in lines:
        if not account or not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
            raise UnbalancedPosting(f"bad line {account!r} {amount!r} in posting for {op_id}")
    total = sum(amount for _, amount in lines)
    if total != 0:
        raise UnbalancedPosting(f"posting for {op_id} is off by {total}")
    posting = PostingRecord(op_id=op_id, kind=kind, at=at)
    session.add(posting)
    session.flush()
    assert posting.posting_id is not None
    for account, amount in lines:
        session.add(LedgerLineRecord(posting_id=posting.posting_id, account=account, amount=amount))
    return posting


def balance(session: Session, account: str) -> int:
    """Sum of one account's lines."""
    query = select(func.coalesce(func.sum(LedgerLineRecord.amount), 0)).where(
        LedgerLineRecord.account == account
    )
    return int(session.exec(query).one())


def balances(session: Session, prefix: str) -> dict[str, int]:
    """Every account starting with `prefix`, with its balance."""
    query = (
        select(LedgerLineRecord.account, func.sum(LedgerLineRecord.amount))
        .where(col(LedgerLineRecord.account).startswith(prefix))
        .group_by(LedgerLineRecord.account)
    )
    return {account: int(total) for account, total in session.exec(query).all()}


def unbalanced_postings(session: Session) -> list[tuple[int, int]]:
    """(posting_id, sum) for every posting that does not sum to zero: must be empty."""
    query = (
        select(LedgerLineRecord.posting_id, func.sum(LedgerLineRecord.amount))
        .group_by(LedgerLineRecord.posting_id)
        .having(func.sum(LedgerLineRecord.amount) != 0)
    )
    return [(int(pid), int(total)) for pid, total in session.exec(query).all()]


def lines_of_op(session: Session, op_id: str) -> list[tuple[str, int]]:
    """The lines posted for one chain operation (empty if none), in a stable order."""
    query = (
        select(LedgerLineRecord.account, LedgerLineRecord.amount)
        .join(PostingRecord, col(PostingRecord.posting_id) == col(LedgerLineRecord.posting_id))
        .where(PostingRecord.op_id == op_id)
    )
    return sorted((account, int(amount)) for account, amount in session.exec(query).all())

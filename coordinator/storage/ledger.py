"""The ledger's storage: postings and their lines, and balances summed in SQL.

The rules (accounts, what each operation posts, when a posting balances) are
`coordinator.domain.ledger`; this module only writes and reads them.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, col, select

from coordinator.domain.ledger import Lines, check_posting
from coordinator.storage.payment_models import LedgerLineRecord, PostingRecord


def post(session: Session, op_id: str, kind: str, lines: Lines, at: float) -> PostingRecord:
    """Add one posting (not committed): refused unless it balances to zero exactly."""
    check_posting(op_id, lines)
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

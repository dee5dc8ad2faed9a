"""The ledger's storage: postings and their lines, and balances summed in SQL.

The rules (accounts, what each operation posts, when a posting balances) are
`coordinator.domain.ledger`; this module only writes and reads them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from coordinator.domain.ledger import BURNED, ISSUED, TREASURY, Lines, check_posting
from coordinator.storage.payment_models import (
    BondRecord,
    ChainOpRecord,
    FrameChargeRecord,
    JobBillingRecord,
    LedgerLineRecord,
    PostingRecord,
)


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
        .group_by(col(LedgerLineRecord.posting_id))
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


@dataclass(frozen=True)
class Books:
    """Everything the audit compares, read in one session: journal, postings, balances."""

    ops: Sequence[ChainOpRecord]
    posted: dict[str, list[tuple[str, int]]]  # op id -> its posted lines
    unbalanced: list[tuple[int, int]]
    issued: int
    burned: int
    treasury: int
    escrows: dict[str, int]  # escrow:<job> -> balance
    bonds_held: dict[str, int]  # bond:<node> -> balance
    jobs: Sequence[JobBillingRecord]
    bonds: Sequence[BondRecord]
    burned_per_job: dict[str, int]  # tokens burned by frame charges per job


def read_books(engine: Engine) -> Books:
    with Session(engine) as session:
        ops = session.exec(select(ChainOpRecord)).all()
        posted: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for op_id, account, amount in session.exec(
            select(PostingRecord.op_id, LedgerLineRecord.account, LedgerLineRecord.amount)
            .join(PostingRecord, col(PostingRecord.posting_id) == col(LedgerLineRecord.posting_id))
        ).all():
            posted[op_id].append((account, int(amount)))
        burned_per_job: dict[str, int] = defaultdict(int)
        for charge in session.exec(select(FrameChargeRecord)).all():
            burned_per_job[charge.job_id] += charge.tokens_burned
        return Books(
            ops=ops, posted=posted, unbalanced=unbalanced_postings(session),
            issued=balance(session, ISSUED), burned=balance(session, BURNED),
            treasury=balance(session, TREASURY), escrows=balances(session, "escrow:"),
            bonds_held=balances(session, "bond:"),
            jobs=session.exec(select(JobBillingRecord)).all(),
            bonds=session.exec(select(BondRecord)).all(), burned_per_job=burned_per_job,
        )

"""The ledger: rules (pure) and storage (real SQLite in memory), checked with Hypothesis.

Whatever sequence of landed chain operations happens, every posting balances, the supply is
minted minus burned, and each account holds what its movements say; an unbalanced posting is
refused and leaves nothing behind.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest
from conftest import ON_POSTGRES
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from coordinator.domain.ledger import (
    BURNED,
    ISSUED,
    OpKind,
    UnbalancedPosting,
    check_posting,
    escrow_account,
    movement_lines,
    supply,
)
from coordinator.storage import ledger
from coordinator.storage.payment_models import ChainOpRecord, LedgerLineRecord, PostingRecord

WALLETS = ("alice", "bob")
JOBS = ("j1", "j2")
NODES = ("n1",)

operations = st.tuples(
    st.sampled_from(list(OpKind)),
    st.integers(1, 10**12),
    st.sampled_from(WALLETS),
    st.sampled_from(JOBS),
    st.sampled_from(NODES),
)


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The ledger's two tables in SQLite in memory, or under FRAMEPROOF_TEST_DB in a
    PostgreSQL database of this module's own (each example rolls back, so one is enough)."""
    if not ON_POSTGRES:
        engine = create_engine("sqlite://", poolclass=StaticPool)
    else:
        engine = create_engine(request.getfixturevalue("module_postgres_url"))
    SQLModel.metadata.create_all(engine, tables=[ChainOpRecord.__table__, PostingRecord.__table__,
                                                 LedgerLineRecord.__table__])
    yield engine
    engine.dispose()


@given(operations)
def test_every_kind_posts_a_balanced_pair(op: tuple[OpKind, int, str, str, str]) -> None:
    kind, amount, owner, job, node = op
    lines = movement_lines(kind, amount, owner=owner, job_id=job, node_id=node)
    check_posting("op", lines)
    assert sum(amount for _, amount in lines) == 0 and len(lines) == 2


def test_an_unknown_kind_or_a_bad_posting_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown operation kind"):
        movement_lines("gift", 5)
    for lines in ([("a", 5)], [("a", 5), ("b", -4)], [("a", 0), ("b", 0)], [("", 1), ("b", -1)],
                  [("a", True), ("b", -1)]):
        with pytest.raises(UnbalancedPosting):
            check_posting("op", lines)


@settings(max_examples=25, deadline=None)
@given(st.lists(operations, max_size=20))
def test_stored_postings_add_up(engine: Engine,
                                ops: list[tuple[OpKind, int, str, str, str]]) -> None:
    """Each example posts in one transaction, reads the sums back in SQL, and rolls back."""
    expected: dict[str, int] = defaultdict(int)
    with Session(engine) as session:
        for n, (kind, amount, owner, job, node) in enumerate(ops):
            lines = movement_lines(kind, amount, owner=owner, job_id=job, node_id=node)
            # The journalled operation a posting refers to (PostgreSQL checks the key).
            session.add(ChainOpRecord(op_id=f"op{n}", purpose=f"op{n}", kind=kind,
                                      amount=amount, created_at=0.0, updated_at=0.0))
            ledger.post(session, f"op{n}", kind, lines, at=float(n))
            for account, line in lines:
                expected[account] += line
        with pytest.raises(UnbalancedPosting):  # refused before anything is written
            ledger.post(session, "bad", OpKind.BURN, [(BURNED, 5), (escrow_account("j1"), -4)],
                        at=0.0)
        session.flush()
        assert ledger.unbalanced_postings(session) == []
        for account, total in expected.items():
            assert ledger.balance(session, account) == total
        assert ledger.balances(session, "escrow:") == {
            a: t for a, t in expected.items() if a.startswith("escrow:")}
        minted = sum(a for k, a, *_ in ops if k in (OpKind.GRANT, OpKind.MINT))
        burned = sum(a for k, a, *_ in ops if k is OpKind.BURN)
        assert supply(ledger.balance(session, ISSUED), ledger.balance(session, BURNED)) \
            == minted - burned
        assert ledger.lines_of_op(session, "bad") == []
        session.rollback()

"""Payment tables (prefix `pay_`). Token amounts are integer base units; times Unix seconds.

`ChainOpRecord` is the journal: a row exists (state `new`) before any transaction is built,
and the signed bytes are stored (state `sent`) before they are sent. Ledger lines are posted
only when an operation is known to have landed, in the same database transaction that marks
it `landed`, so the ledger can never count a movement twice or miss a landed one for long.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from coordinator.domain.ledger import OpState


def _amount(default: int | None = None) -> Any:
    """A token amount: 64-bit integer column (base units exceed 32 bits quickly)."""
    if default is None:
        return Field(sa_column=Column(BigInteger, nullable=False))
    return Field(default=default, sa_column=Column(BigInteger, nullable=False))


class ChainOpRecord(SQLModel, table=True):
    """One token movement on chain: grant, deposit, burn, refund, mint (emission or fee)."""

    __tablename__ = "pay_chain_op"
    # The dashboard's burns and mints, newest first, a page at a time.
    __table_args__ = (Index("ix_pay_chain_op_kind_created", "kind", "created_at", "op_id"),)
    op_id: str = Field(primary_key=True)  # also the on-chain memo, as "fp:<op_id>"
    purpose: str = Field(unique=True)  # natural key: "burn:<job>:<frame>", "refund:<job>", ...
    kind: str = Field(index=True)  # grant | deposit | burn | refund | mint | bond | unbond
    #                                  | slash | forfeit (bonds.py)
    owner: str = ""  # wallet the tokens come from or go to (pubkey), "" for burns
    amount: int = _amount()
    job_id: str | None = Field(default=None, index=True)
    epoch: int | None = Field(default=None, index=True)
    state: str = Field(default=OpState.NEW, index=True)
    signature: str | None = Field(default=None, index=True)
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    description: str = ""
    valid_until: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    attempts: int = 0
    previous_signatures: str = ""  # space-separated: attempts that were dropped
    error: str = ""
    created_at: float
    updated_at: float
    node_id: str | None = None  # bond ops: whose bond the tokens come from or go into


class PostingRecord(SQLModel, table=True):
    """One balanced journal entry; its lines sum to zero."""

    __tablename__ = "pay_posting"
    posting_id: int | None = Field(default=None, primary_key=True)
    op_id: str = Field(unique=True, foreign_key="pay_chain_op.op_id")
    kind: str
    at: float


class LedgerLineRecord(SQLModel, table=True):
    """A signed amount on one account: positive = debit (tokens arrive), negative = credit."""

    __tablename__ = "pay_ledger_line"
    id: int | None = Field(default=None, primary_key=True)
    posting_id: int = Field(foreign_key="pay_posting.posting_id", index=True)
    account: str = Field(index=True)
    amount: int = _amount()


class JobBillingRecord(SQLModel, table=True):
    """A job's escrow: deposited, charged (burns decided), refunded; the amounts the API shows."""

    __tablename__ = "pay_job"
    job_id: str = Field(primary_key=True)
    creator: str = Field(index=True)
    tier: int = 2
    state: str = Field(index=True)  # opening | open | settled | failed
    deposit_op_id: str = Field(foreign_key="pay_chain_op.op_id")
    deposited: int = _amount()
    charged: int = _amount(default=0)
    charged_usd_micro: int = _amount(default=0)
    refunded: int = _amount(default=0)
    refund_op_id: str | None = None
    over_budget: bool = False
    error: str = ""
    created_at: float
    updated_at: float


class FrameChargeRecord(SQLModel, table=True):
    """An approved frame: its work, its USD price and the tokens burned for it."""

    __tablename__ = "pay_frame_charge"
    __table_args__ = (UniqueConstraint("job_id", "frame"),)
    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="pay_job.job_id", index=True)
    frame: int
    node_id: str = Field(index=True)
    render_seconds: float
    node_score: float
    work_ms: int = _amount()
    cost_usd_micro: int = _amount()
    cost_tokens: int = _amount()
    tokens_burned: int = _amount()
    over_budget: bool = False
    op_id: str | None = Field(default=None, foreign_key="pay_chain_op.op_id")
    created_at: float


class WorkCreditRecord(SQLModel, table=True):
    """Non-transferable credit for approved work; counted in the epoch it falls into."""

    __tablename__ = "pay_work_credit"
    __table_args__ = (UniqueConstraint("job_id", "frame"),)
    id: int | None = Field(default=None, primary_key=True)
    node_id: str = Field(index=True)
    job_id: str
    frame: int
    work_ms: int = _amount()
    epoch: int | None = Field(default=None, index=True)  # None: the open epoch
    created_at: float


class EpochRecord(SQLModel, table=True):
    """A closed epoch and how its emission was split."""

    __tablename__ = "pay_epoch"
    epoch: int = Field(primary_key=True)  # 1, 2, ...
    started_at: float
    ended_at: float
    emission: int = _amount()
    fee: int = _amount()
    fee_minted: bool = False
    work_pool: int = _amount()
    availability_pool: int = _amount()
    total_credits: int = _amount()
    unminted: int = _amount()  # pools nobody qualified for


class PayoutRecord(SQLModel, table=True):
    """One node's (or the fee account's) share of an epoch, minted by one chain op."""

    __tablename__ = "pay_payout"
    __table_args__ = (UniqueConstraint("epoch", "node_id"),)
    id: int | None = Field(default=None, primary_key=True)
    epoch: int = Field(foreign_key="pay_epoch.epoch", index=True)
    node_id: str = Field(index=True)  # node pubkey, or "fee:<pubkey>"
    credits: int = _amount()
    work_amount: int = _amount()
    availability_amount: int = _amount()
    amount: int = _amount()
    op_id: str = Field(foreign_key="pay_chain_op.op_id")


class BondRecord(SQLModel, table=True):
    """A node operator's bond in the bond vault (see coordinator/payments/bonds.py).

    `held` counts landed bonds minus every outflow already decided (returns and slashes are
    subtracted when they are planned, like a job's `charged`), so it never over-promises.
    """

    __tablename__ = "pay_bond"
    node_id: str = Field(primary_key=True)
    held: int = _amount(default=0)
    posted: int = _amount(default=0)  # landed bond transfers, all time
    slashed: int = _amount(default=0)
    returned: int = _amount(default=0)
    unbond_requested_at: float | None = None  # set: unbonding, returned after the cooldown
    last_op_id: str | None = None
    created_at: float
    updated_at: float


class SlashRecord(SQLModel, table=True):
    """One slash of a node's bond for proven cheating: who got what, and why."""

    __tablename__ = "pay_slash"
    __table_args__ = (UniqueConstraint("node_id", "event_id"),)
    slash_id: str = Field(primary_key=True)
    node_id: str = Field(index=True)
    event_id: int  # the reputation event that quarantined the node (one slash per quarantine)
    amount: int = _amount()
    to_creators: int = _amount()
    to_treasury: int = _amount()
    rejected_frames: int
    reason: str = ""
    created_at: float

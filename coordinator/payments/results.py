"""What the payments API answers, and its errors: plain frozen dataclasses for gRPC and the CLI.

Token amounts are integer base units; USD amounts are Decimals.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


class PaymentError(Exception):
    """A payment request was refused; the message is meant for the user."""


class InsufficientBalance(PaymentError):
    """The creator's wallet cannot cover the escrow for the job's maximum cost."""


class EscrowShort(PaymentError):
    """The frame's charge would go past the job's escrow: nothing was charged.

    The frame waits (the job pauses) until a top-up covers it; see coordinator.domain.budget.
    """

    def __init__(self, job_id: str, frame: int, cost_tokens: int, left: int) -> None:
        super().__init__(f"job {job_id} frame {frame} costs {cost_tokens} base units, the "
                         f"escrow holds {left}")
        self.job_id, self.frame, self.cost_tokens, self.left = job_id, frame, cost_tokens, left


# --- what the API answers -----------------------------------------------------------------


@dataclass(frozen=True)
class EscrowReceipt:
    """The job's deposit: `state` is open once it landed, opening while undecided."""

    job_id: str
    creator: str
    amount: int
    signature: str
    state: str


@dataclass(frozen=True)
class FrameCharge:
    """The charge for one approved frame.

    A charge is whole: `tokens_burned == cost_tokens` (a frame the escrow cannot cover raises
    `EscrowShort` instead). `over_budget` stays for charges booked before that rule.
    """

    job_id: str
    frame: int
    node_id: str
    work_ms: int
    cost_usd: Decimal
    cost_tokens: int
    tokens_burned: int
    over_budget: bool
    signature: str | None
    state: str  # the burn's op state; "none" when nothing was burned


@dataclass(frozen=True)
class JobReceipts:
    job_id: str
    creator: str
    tier: int
    state: str
    deposited: int
    deposit_signature: str | None
    frames: list[FrameCharge]
    total_cost_usd: Decimal
    total_tokens_burned: int
    refund: int
    refund_signature: str | None
    refund_state: str | None
    held: int  # tokens in escrow for this job right now (ledger)
    over_budget: bool


@dataclass(frozen=True)
class Wallet:
    pubkey: str
    balance: int  # on chain
    balance_usd: Decimal
    escrow_held: int  # in escrow for this creator's jobs (ledger)
    jobs: list[str]


@dataclass(frozen=True)
class EpochEarning:
    epoch: int
    ended_at: float
    credits: int  # reference milliseconds of approved work
    work_amount: int
    availability_amount: int
    minted: int
    signature: str | None
    state: str


@dataclass(frozen=True)
class NodeEarnings:
    node_id: str
    epochs: list[EpochEarning]
    total_minted: int  # landed mints only
    open_credits: int  # approved work not yet in a closed epoch


@dataclass(frozen=True)
class Payout:
    node_id: str
    credits: int
    work_amount: int
    availability_amount: int
    amount: int
    signature: str | None
    state: str


@dataclass(frozen=True)
class EpochSummary:
    epoch: int
    started_at: float
    ended_at: float
    emission: int
    fee: int
    fee_minted: bool
    work_pool: int
    availability_pool: int
    total_credits: int
    unminted: int
    payouts: list[Payout]


@dataclass(frozen=True)
class CheckReport:
    """`ok` is True when every line passed; failing lines start with "MISMATCH"."""

    ok: bool
    lines: list[str]

    @property
    def mismatches(self) -> list[str]:
        return [line for line in self.lines if line.startswith("MISMATCH")]

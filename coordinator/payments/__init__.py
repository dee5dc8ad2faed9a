"""Payouts: escrow, per-frame burns, epoch mints and bonds over the chain.

Burn-and-mint equilibrium as in Render Network's RNP-001, on the chain layer's `TokenChain`.
The coordinator uses `Payments`; the rules are `coordinator.domain` (pricing, epochs, ledger)
and the rows `coordinator.storage` (billing, bond_rows, chain_ops, ledger); see
docs/PAYMENTS.md.
"""

from coordinator.payments.payments import Payments
from coordinator.payments.results import (
    CheckReport,
    EpochEarning,
    EpochSummary,
    EscrowReceipt,
    FrameCharge,
    InsufficientBalance,
    JobReceipts,
    NodeEarnings,
    PaymentError,
    Payout,
    Wallet,
)

__all__ = [
    "CheckReport",
    "EpochEarning",
    "EpochSummary",
    "EscrowReceipt",
    "FrameCharge",
    "InsufficientBalance",
    "JobReceipts",
    "NodeEarnings",
    "PaymentError",
    "Payments",
    "Payout",
    "Wallet",
]

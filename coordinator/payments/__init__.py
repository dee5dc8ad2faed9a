"""Payouts: pricing, escrow, per-frame burns, epoch mints and a double-entry ledger.

Burn-and-mint equilibrium as in Render Network's RNP-001, on the chain layer's `TokenChain`.
The coordinator uses `Payments`; see docs/PAYMENTS.md.
"""

from coordinator.domain.epochs import EpochConfig
from coordinator.domain.pricing import CostEstimate, PricingConfig, estimate
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
    "CostEstimate",
    "EpochConfig",
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
    "PricingConfig",
    "Wallet",
    "estimate",
]

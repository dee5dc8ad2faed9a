"""Epoch emission schedule and the split of one epoch's emission (pure integer arithmetic).

Each epoch mints `emission(n)` new tokens to node operators (the "mint" half of burn-and-mint):

    emission(n) = floor(emission_tokens x (1 - decay_per_epoch) ** (n - 1) x 10**decimals)

Split, in this order, each step rounded so the parts add up to the whole exactly:

1. fee        = floor(emission x fee_share). Minted to `fee_owner` when one is configured;
               otherwise **not minted** (the default). The treasury's own ATA is the escrow,
               so minting the fee there would mix it with creators' deposits.
2. availability pool = floor((emission - fee) x availability_share), for the nodes the caller
               names as proven available capacity, in proportion to the weight it gives each
               (coordinator/bonding.py: bonded nodes, by work verified in the epoch); a plain
               list of nodes shares it equally.
3. work pool  = the rest, pro rata to each node's approved work credits in the epoch times its
               reputation weight (default 1.0).

Shares are allocated by the largest-remainder method (ties by node id), so no base unit is
lost or invented. A pool nobody qualifies for (no credits, nobody available) is not minted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction


@dataclass(frozen=True)
class EpochConfig:
    """Emission schedule and split parameters; shares are fractions of the emission."""

    length_seconds: float = 86_400.0
    emission_tokens: Decimal = Decimal("1000")
    decay_per_epoch: Decimal = Decimal("0.01")
    availability_share: Decimal = Decimal("0.10")
    fee_share: Decimal = Decimal("0.05")
    fee_owner: str | None = None  # pubkey to mint the fee to; None: the fee is not minted

    def __post_init__(self) -> None:
        if self.length_seconds <= 0 or self.emission_tokens < 0:
            raise ValueError("epoch length must be positive and emission non-negative")
        for name in ("decay_per_epoch", "availability_share", "fee_share"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1)")

    def emission(self, epoch: int, decimals: int) -> int:
        """Base units minted in epoch `epoch` (1-based)."""
        if epoch < 1:
            raise ValueError("epochs are numbered from 1")
        keep = (1 - Fraction(self.decay_per_epoch)) ** (epoch - 1)
        scale: int = 10**decimals
        return math.floor(Fraction(self.emission_tokens) * keep * scale)


@dataclass(frozen=True)
class Split:
    """Where one epoch's emission goes; `fee + sum(work) + sum(availability) + unminted_pools`
    equals the emission (the fee counts whether or not it is minted)."""

    emission: int
    fee: int
    work_pool: int
    availability_pool: int
    work: dict[str, int] = field(default_factory=dict)
    availability: dict[str, int] = field(default_factory=dict)
    unminted_pools: int = 0


def allocate(pool: int, shares: Mapping[str, Fraction]) -> dict[str, int]:
    """Split `pool` base units in proportion to `shares`, exactly (largest remainder)."""
    total = sum(shares.values(), Fraction(0))
    if pool <= 0 or total <= 0:
        return {}
    exact = {key: pool * share / total for key, share in shares.items() if share > 0}
    out = {key: math.floor(value) for key, value in exact.items()}
    left = pool - sum(out.values())
    by_remainder = sorted(exact, key=lambda key: (-(exact[key] - out[key]), key))
    for key in by_remainder[:left]:
        out[key] += 1
    return out


def split_emission(
    config: EpochConfig,
    emission: int,
    credits: Mapping[str, int],
    available: Iterable[str] | Mapping[str, float],
    weights: Mapping[str, float] | None = None,
) -> Split:
    """Divide `emission` between the fee, available nodes and nodes with credits."""
    weights = weights or {}
    fee = math.floor(emission * Fraction(config.fee_share))
    rest = emission - fee
    availability_pool = math.floor(rest * Fraction(config.availability_share))
    work_pool = rest - availability_pool
    weighted: dict[str, Fraction] = {}
    for node, credit in credits.items():
        weight = Fraction(weights.get(node, 1.0))
        if weight < 0:
            raise ValueError(f"reputation weight of {node} is negative")
        weighted[node] = credit * weight
    work = allocate(work_pool, weighted)
    if isinstance(available, Mapping):
        capacity = {node: Fraction(share) for node, share in available.items()}
        if any(share < 0 for share in capacity.values()):
            raise ValueError("an availability weight is negative")
    else:
        capacity = {node: Fraction(1) for node in set(available)}
    availability = allocate(availability_pool, capacity)
    unminted = (work_pool - sum(work.values())) + (availability_pool - sum(availability.values()))
    return Split(emission, fee, work_pool, availability_pool, work, availability, unminted)

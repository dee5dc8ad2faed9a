"""Work, prices and the cost estimate: USD-denominated, exact, never rounding against the creator.

The model (burn-and-mint equilibrium, as in Render Network's RNP-001):

* **Work** of a frame = render seconds x the node's benchmark score (see `benchmark.py`; 1.0 is
  the reference machine). It is kept as integer *reference milliseconds* (`work_ms`): the time
  the reference machine would have needed. Rounded down.
* **Price**: each tier has a USD price per reference-hour of work (Tier 1 costs most).
  `cost_usd = work_ms / 3_600_000 x tier price`, computed exactly (fractions).
* **Tokens**: `tokens = cost_usd / token_price_usd`, in base units (10**decimals per token),
  rounded **down**. A creator is never charged a fraction of a base unit more than the USD
  price; summed floors never exceed the floor of the sum, so per-frame charges never exceed
  the escrow of the same USD amount either.
* **Estimate** (before submitting): per frame the reference machine needs
  `pixels x samples / throughput` seconds, where the throughput is the
  benchmark scene's pixel-samples divided by its reference time (320x180 px x 24 samples /
  2.72 s, about 508,000 pixel-samples/s). The suggested maximum cost is the estimate times
  `escrow_safety_factor`, because real scenes differ from the benchmark scene (more bounces,
  volumes, heavier geometry): the estimate is an order of magnitude, the max cost is the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from fractions import Fraction

MS_PER_HOUR = 3_600_000
USD_PLACES = Decimal("0.000001")


@dataclass(frozen=True)
class PricingConfig:
    """Prices and token parameters. USD amounts are Decimals; token amounts are base units."""

    token_price_usd: Decimal = Decimal("0.50")
    decimals: int = 6
    tier_usd_per_ref_hour: tuple[Decimal, Decimal, Decimal] = field(
        default=(Decimal("1.50"), Decimal("1.00"), Decimal("0.60"))
    )
    creator_grant_tokens: Decimal = Decimal("100")
    escrow_safety_factor: Decimal = Decimal("3")

    def __post_init__(self) -> None:
        if self.token_price_usd <= 0:
            raise ValueError("token_price_usd must be positive")
        if not 0 <= self.decimals <= 9:
            raise ValueError("decimals must be in 0..9")
        prices = self.tier_usd_per_ref_hour
        if len(prices) != 3 or min(prices) <= 0 or list(prices) != sorted(prices, reverse=True):
            raise ValueError("need three positive tier prices, Tier 1 highest")
        if self.creator_grant_tokens < 0 or self.escrow_safety_factor < 1:
            raise ValueError("grant must be >= 0 and escrow_safety_factor >= 1")

    def tier_price(self, tier: int) -> Decimal:
        """USD per reference-hour for tier 1, 2 or 3."""
        if tier not in (1, 2, 3):
            raise ValueError(f"tier must be 1, 2 or 3, got {tier!r}")
        return self.tier_usd_per_ref_hour[tier - 1]

    @property
    def base_units_per_token(self) -> int:
        return 10**self.decimals

    @property
    def grant_base_units(self) -> int:
        """Tokens a new creator starts with (embedded chain and test clusters)."""
        return math.floor(Fraction(self.creator_grant_tokens) * self.base_units_per_token)


@dataclass(frozen=True)
class CostEstimate:
    """What a job should cost on a tier, and the max cost to escrow for it."""

    tier: int
    frames: int
    pixels_per_frame: int
    samples: int
    work_ms: int
    cost_usd: Decimal
    tokens: int
    max_cost_usd: Decimal
    max_tokens: int


def work_ms(render_seconds: float, node_score: float) -> int:
    """Reference milliseconds of work: render time x node score, rounded down."""
    if render_seconds < 0 or node_score <= 0:
        raise ValueError("render_seconds must be >= 0 and node_score > 0")
    return math.floor(Fraction(render_seconds) * Fraction(node_score) * 1000)


def cost_usd(pricing: PricingConfig, work: int, tier: int) -> Fraction:
    """Exact USD price of `work` reference milliseconds on `tier`."""
    return Fraction(work) * Fraction(pricing.tier_price(tier)) / MS_PER_HOUR


def usd_to_tokens(pricing: PricingConfig, usd: Fraction | Decimal) -> int:
    """USD to token base units at the configured price, rounded down (never overcharges)."""
    units = Fraction(usd) * pricing.base_units_per_token / Fraction(pricing.token_price_usd)
    return math.floor(units)


def tokens_to_usd(pricing: PricingConfig, tokens: int) -> Decimal:
    """Base units to USD for display, to the micro-dollar (rounded down)."""
    usd = Fraction(tokens) * Fraction(pricing.token_price_usd) / pricing.base_units_per_token
    return usd_display(usd)


def usd_display(usd: Fraction, *, up: bool = False) -> Decimal:
    """A USD fraction as a Decimal with six places (down by default, up for bounds)."""
    value = Decimal(usd.numerator) / Decimal(usd.denominator)
    return value.quantize(USD_PLACES, rounding=ROUND_UP if up else ROUND_DOWN)


def estimate(
    pricing: PricingConfig,
    *,
    width: int,
    height: int,
    samples: int,
    frames: int,
    tier: int,
    resolution_percentage: int = 100,
) -> CostEstimate:
    """Expected cost of a job from scene facts (see the module docstring for the model)."""
    if min(width, height, samples, frames, resolution_percentage) <= 0:
        raise ValueError("width, height, samples, frames and percentage must be positive")
    from render_node import benchmark  # lazy: `python -m render_node.benchmark` stays clean

    throughput = Fraction(benchmark.REFERENCE_PIXEL_SAMPLES) / Fraction(
        str(benchmark.REFERENCE_SECONDS)
    )  # pixel-samples per second of the reference machine on the benchmark scene
    scale = Fraction(resolution_percentage, 100)
    pixels = math.floor(width * scale) * math.floor(height * scale)
    seconds = Fraction(pixels * samples * frames) / throughput
    work = math.ceil(seconds * 1000)
    usd = cost_usd(pricing, work, tier)
    max_usd = usd * Fraction(pricing.escrow_safety_factor)
    return CostEstimate(
        tier=tier,
        frames=frames,
        pixels_per_frame=pixels,
        samples=samples,
        work_ms=work,
        cost_usd=usd_display(usd, up=True),
        tokens=usd_to_tokens(pricing, usd),
        max_cost_usd=usd_display(max_usd, up=True),
        max_tokens=usd_to_tokens(pricing, max_usd),
    )

"""Work, prices and the cost estimate: USD-denominated, exact, never rounding against the creator.

The model (docs/PRICING.md; burn-and-mint equilibrium as in Render Network's RNP-001):

* **Work** is kept as integer *reference milliseconds* (`work_ms`): the time the reference
  machine (`frameproof.benchmark`, score 1.0) would need. It is measured by the network, never
  taken from a node's word:
  - before escrow the coordinator *probes* the scene: it renders up to three of the job's frames
    (big ones at reduced sizes) at the job's settings on its own machine and converts the
    seconds with its own, self-measured benchmark score (`quote_from_probe`). The result is
    the job's *quote*: reference-ms per frame with a low/high band;
  - a frame's work is the quote, scaled by how this frame compared with the other frames the
    same node rendered for this job (`relative_factor`, clamped to 0.5..1.5). A node's absolute
    claims cancel out of that ratio, so inflating them moves a frame's price by at most 1.5x,
    and a frame costs the same whichever node renders it.
* **Price**: each tier has a USD price per reference-hour of work (Tier 1 costs most).
  `cost_usd = work_ms / 3_600_000 x tier price`, computed exactly (fractions).
* **Tokens**: `tokens = cost_usd / token_price_usd`, in base units (10**decimals per token),
  rounded **down**. A creator is never charged a fraction of a base unit more than the USD
  price; summed floors never exceed the floor of the sum, so per-frame charges never exceed
  the escrow of the same USD amount either.
* **Estimate**: frames x the quote, with the band's low and high; the default maximum cost (the
  escrow) is the high end. When a probe cannot run, `pixel_sample_estimate` (pixels x samples
  / the benchmark scene's throughput) stands in with a wide band.

Everything here is pure arithmetic: non-finite or absurd times are treated as "no
information", never as a number that could become NaN or infinity in a price.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from fractions import Fraction

from frameproof import benchmark

MS_PER_HOUR = 3_600_000
USD_PLACES = Decimal("0.000001")

# How far the real per-frame cost may sit from a probe beyond the spread the probe itself saw
# (other frames than the probed ones, other machines' ratios, timing noise): the band is
# widened by this much on each side. Tiles extrapolate, so they get the wider margin.
MODEL_UNCERTAINTY_FULL = Fraction(1, 4)
MODEL_UNCERTAINTY_SCALED = Fraction(1, 2)
# No probe (it failed): the pixel-sample estimate, which is off by 4x and more on heavy scenes.
FALLBACK_BAND = (Fraction(1, 4), Fraction(4))
# A frame's price follows its node's timing shape on the job within these bounds only.
RELATIVE_FACTOR_BOUNDS = (Fraction(1, 2), Fraction(3, 2))
# A node's claimed work (seconds x score) this far from the network's measure is flagged,
# once it has delivered this many frames of the job (fewer say too little).
CLAIM_MISMATCH_RATIO = 3.0
MIN_CLAIM_FRAMES = 3
# Times beyond this are not information (a day per frame at most; anything else is a lie).
MAX_PLAUSIBLE_SECONDS = 86_400.0


@dataclass(frozen=True)
class PricingConfig:
    """Prices and token parameters. USD amounts are Decimals; token amounts are base units."""

    token_price_usd: Decimal = Decimal("0.50")
    decimals: int = 6
    tier_usd_per_ref_hour: tuple[Decimal, Decimal, Decimal] = field(
        default=(Decimal("1.50"), Decimal("1.00"), Decimal("0.60"))
    )
    creator_grant_tokens: Decimal = Decimal("100")

    def __post_init__(self) -> None:
        if self.token_price_usd <= 0:
            raise ValueError("token_price_usd must be positive")
        if not 0 <= self.decimals <= 9:
            raise ValueError("decimals must be in 0..9")
        prices = self.tier_usd_per_ref_hour
        if len(prices) != 3 or min(prices) <= 0 or list(prices) != sorted(prices, reverse=True):
            raise ValueError("need three positive tier prices, Tier 1 highest")
        if self.creator_grant_tokens < 0:
            raise ValueError("grant must be >= 0")

    def tier_price(self, tier: int) -> Decimal:
        """USD per reference-hour for tier 1, 2 or 3."""
        if tier not in (1, 2, 3):
            raise ValueError(f"tier must be 1, 2 or 3, got {tier!r}")
        return self.tier_usd_per_ref_hour[tier - 1]

    @property
    def base_units_per_token(self) -> int:
        return int(10**self.decimals)

    @property
    def grant_base_units(self) -> int:
        """Tokens a new creator starts with (embedded chain and test clusters)."""
        return math.floor(Fraction(self.creator_grant_tokens) * self.base_units_per_token)


@dataclass(frozen=True)
class Quote:
    """Reference milliseconds per frame the network measured for a job, with its band."""

    ms_per_frame: int
    low_ms_per_frame: int
    high_ms_per_frame: int
    method: str  # "full" (whole frames probed), "scaled" (extrapolated from reduced sizes;
    # "tiles" in probes cached before the reduced sizes) or "fallback" (no probe)

    def __post_init__(self) -> None:
        if not 0 < self.low_ms_per_frame <= self.ms_per_frame <= self.high_ms_per_frame:
            raise ValueError(f"a quote needs 0 < low <= point <= high, got {self}")


@dataclass(frozen=True)
class CostEstimate:
    """What a job should cost on a tier, its range, and the max cost to escrow for it."""

    tier: int
    frames: int
    quote: Quote
    work_ms: int
    cost_usd: Decimal
    cost_low_usd: Decimal
    cost_high_usd: Decimal
    tokens: int
    max_cost_usd: Decimal  # the default escrow: the top of the range
    max_tokens: int


def finite_positive(value: float) -> bool:
    """A time or score that carries information: finite, above zero, not absurd."""
    return isinstance(value, (int, float)) and math.isfinite(value) and (
        0.0 < value <= MAX_PLAUSIBLE_SECONDS)


def work_ms(render_seconds: float, node_score: float) -> int:
    """Reference milliseconds of claimed work: seconds x score, rounded down (claims only).

    Used for jobs made before quotes existed and to compare a node's claims with the network's
    measure; never for a new job's price.
    """
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


# --- the probe: from measured seconds to a quote ---------------------------------------------


def scaled_frame_seconds(sync_seconds: float, small: tuple[float, float],
                         large: tuple[float, float]) -> float:
    """A full frame's seconds from two timed renders of it at reduced sizes (fixed +
    per-pixel cost).

    `small` and `large` are (share of the frame's pixels, seconds) of renders made after the
    frame's scene was synced; `sync_seconds` is what the first render of the frame cost on
    top (kernels, textures). Time = fixed + share x per-pixel, so two sizes separate the two;
    both are clamped at zero (noise can make the difference negative).
    """
    (area_s, secs_s), (area_l, secs_l) = small, large
    if not 0 < area_s < area_l <= 1:
        raise ValueError("pixel shares must satisfy 0 < small < large <= 1")
    if not all(math.isfinite(v) and v >= 0 for v in (sync_seconds, secs_s, secs_l)):
        raise ValueError("probe times must be finite and non-negative")
    per_area = max(0.0, (secs_l - secs_s) / (area_l - area_s))
    fixed = max(0.0, secs_s - area_s * per_area)
    return sync_seconds + fixed + per_area


def quote_from_probe(frame_seconds: Sequence[float], machine_score: float, *,
                     scaled: bool) -> Quote:
    """The job's quote from the probe machine's seconds per probed frame and its score.

    Point: the mean of the probed frames (a node pays each frame's own scene sync, as the
    probe did). Band: the fastest and slowest probed frame, widened by the model uncertainty.
    """
    if not frame_seconds:
        raise ValueError("a probe needs at least one frame")
    if not all(finite_positive(s) for s in frame_seconds):
        raise ValueError(f"probe times must be finite and positive, got {list(frame_seconds)}")
    if not (math.isfinite(machine_score) and machine_score > 0):
        raise ValueError(f"the machine score must be finite and positive, got {machine_score}")
    score = Fraction(machine_score)
    ref = [Fraction(s) * score * 1000 for s in frame_seconds]
    margin = MODEL_UNCERTAINTY_SCALED if scaled else MODEL_UNCERTAINTY_FULL
    point = max(1, round(sum(ref) / len(ref)))
    low = max(1, min(point, math.floor(min(ref) * (1 - margin))))
    high = max(point, math.ceil(max(ref) * (1 + margin)))
    return Quote(point, low, high, "scaled" if scaled else "full")


def pixel_sample_estimate(*, width: int, height: int, samples: int,
                          resolution_percentage: int = 100) -> Quote:
    """The stand-in quote when no probe could run: pixels x samples / benchmark throughput.

    It ignores each frame's fixed cost and what makes a pixel-sample dear (bounces, volumes,
    glass, heavy geometry), hence its wide band (FALLBACK_BAND).
    """
    if min(width, height, samples, resolution_percentage) <= 0:
        raise ValueError("width, height, samples and percentage must be positive")
    throughput = Fraction(benchmark.REFERENCE_PIXEL_SAMPLES) / Fraction(
        str(benchmark.REFERENCE_SECONDS)
    )  # pixel-samples per second of the reference machine on the benchmark scene
    scale = Fraction(resolution_percentage, 100)
    pixels = math.floor(width * scale) * math.floor(height * scale)
    ms = max(1, math.ceil(Fraction(pixels * samples) / throughput * 1000))
    low, high = FALLBACK_BAND
    return Quote(ms, max(1, math.floor(ms * low)), math.ceil(ms * high), "fallback")


def estimate(pricing: PricingConfig, quote: Quote, *, frames: int, tier: int) -> CostEstimate:
    """What `frames` frames of a job with this quote cost on `tier`, and the escrow to hold."""
    if frames <= 0:
        raise ValueError("frames must be positive")
    work = quote.ms_per_frame * frames
    usd = cost_usd(pricing, work, tier)
    low = cost_usd(pricing, quote.low_ms_per_frame * frames, tier)
    high = cost_usd(pricing, quote.high_ms_per_frame * frames, tier)
    return CostEstimate(
        tier=tier,
        frames=frames,
        quote=quote,
        work_ms=work,
        cost_usd=usd_display(usd, up=True),
        cost_low_usd=usd_display(low),
        cost_high_usd=usd_display(high, up=True),
        tokens=usd_to_tokens(pricing, usd),
        max_cost_usd=usd_display(high, up=True),
        max_tokens=usd_to_tokens(pricing, high),
    )


# --- a frame's price: the quote, shaped by the node's own timings ----------------------------


def relative_factor(frame_seconds: float, node_job_seconds: Sequence[float]) -> Fraction:
    """How dear this frame was next to the same node's other frames of the job, clamped.

    frame time / the median of the node's (informative) times on this job, within
    RELATIVE_FACTOR_BOUNDS. Whatever absolute time or score a node claims cancels out; a node
    can move a frame's price by the bounds only. No information (non-finite, zero, absurd
    times, or fewer than one usable time): 1.
    """
    if not finite_positive(frame_seconds):
        return Fraction(1)
    usable = [t for t in node_job_seconds if finite_positive(t)]
    if not usable:
        return Fraction(1)
    median = Fraction(statistics.median(usable))
    low, high = RELATIVE_FACTOR_BOUNDS
    return min(high, max(low, Fraction(frame_seconds) / median))


def frame_work_ms(quote_ms_per_frame: int, factor: Fraction) -> int:
    """A frame's network-derived work: the quote times the relative factor, rounded down."""
    if quote_ms_per_frame < 0:
        raise ValueError("the quote must be non-negative")
    low, high = RELATIVE_FACTOR_BOUNDS
    return math.floor(quote_ms_per_frame * min(high, max(low, factor)))


def claimed_work_ratio(claimed_seconds: Sequence[float], claimed_score: float,
                       quote_ms_per_frame: int) -> float | None:
    """A node's claimed reference work per frame on a job / the job's quote.

    Claimed work is the median of the node's reported seconds on the job times its reported
    score (a median: a node's first frame of a job also pays the scene's sync). None (no
    information) below MIN_CLAIM_FRAMES usable times, or with an unusable score or quote.
    """
    usable = [t for t in claimed_seconds if finite_positive(t)]
    if quote_ms_per_frame <= 0 or len(usable) < MIN_CLAIM_FRAMES:
        return None
    if not (math.isfinite(claimed_score) and claimed_score > 0):
        return None
    return statistics.median(usable) * claimed_score * 1000 / quote_ms_per_frame


def claim_mismatch(ratio: float | None) -> bool:
    """Whether a node's claims are off from the network's measure by more than the limit."""
    return ratio is not None and not (
        1 / CLAIM_MISMATCH_RATIO <= ratio <= CLAIM_MISMATCH_RATIO)


def measured_speed(samples: Sequence[tuple[int, float]]) -> float | None:
    """A node's speed on the network's clock: median of (work ms / wall ms) over its frames.

    `samples` are (network work ms, lease-to-completion wall seconds on the coordinator's
    clock). Wall time includes download and upload, so it reads a little slow; it never
    depends on anything the node says. None until there is a usable sample.
    """
    speeds = [work / (wall * 1000) for work, wall in samples
              if work > 0 and finite_positive(wall)]
    return statistics.median(speeds) if speeds else None

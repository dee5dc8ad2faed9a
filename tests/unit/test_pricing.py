"""Pricing arithmetic (pure): the probe's quote, a frame's network-derived work, claim checks.

Exact values, the clamps, and that no input (NaN, infinity, zero, absurd times) reaches a
price as anything but "no information".
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
from fractions import Fraction

import pytest

from coordinator.domain.pricing import (
    MODEL_UNCERTAINTY_FULL,
    PricingConfig,
    Quote,
    claim_mismatch,
    claimed_work_ratio,
    cost_usd,
    estimate,
    frame_work_ms,
    measured_speed,
    quote_from_probe,
    relative_factor,
    scaled_frame_seconds,
    usd_to_tokens,
)
from coordinator.probe import (
    LARGE_PIXEL_SAMPLES,
    MIN_LARGE_PIXELS,
    Prober,
    ProbeTooBig,
    probe_frames,
    probe_key,
    probe_sizes,
    reduced_sizes,
    settings_digest,
)
from frameproof.v1 import farm_pb2 as pb

PRICING = PricingConfig()  # Tier 3: $0.60 per reference-hour; $0.50 a token, 6 decimals
BAD_TIMES = (math.nan, math.inf, -math.inf, -1.0, 0.0, 1e12)


def test_quote_from_full_frame_probe_is_exact() -> None:
    # 2 s, 3 s, 4 s on a machine scoring 0.5: 1000, 1500, 2000 reference ms.
    quote = quote_from_probe([2.0, 3.0, 4.0], 0.5, scaled=False)
    assert quote == Quote(1500, 750, 2500, "full")  # band: 1000 x 0.75 .. 2000 x 1.25
    assert Fraction(1, 4) == MODEL_UNCERTAINTY_FULL
    scaled = quote_from_probe([2.0], 1.0, scaled=True)
    assert scaled == Quote(2000, 1000, 3000, "scaled")
    for bad in BAD_TIMES:
        with pytest.raises(ValueError):
            quote_from_probe([1.0, bad], 1.0, scaled=False)
        with pytest.raises(ValueError):
            quote_from_probe([1.0], bad if bad != 1e12 else -2.0, scaled=False)
    with pytest.raises(ValueError):
        quote_from_probe([], 1.0, scaled=False)


def test_estimate_escrows_the_top_of_the_range() -> None:
    quote = Quote(1500, 750, 2500, "full")
    est = estimate(PRICING, quote, frames=8, tier=3)
    # 8 x 1500 ms = 12 s = 1/300 h at $0.60 = $0.002; range $0.001 .. $0.003333.
    assert est.work_ms == 12_000
    assert est.cost_usd == Decimal("0.002000")
    assert (est.cost_low_usd, est.cost_high_usd) == (Decimal("0.001000"), Decimal("0.003334"))
    assert est.max_cost_usd == est.cost_high_usd
    assert est.max_tokens == usd_to_tokens(PRICING, cost_usd(PRICING, 20_000, 3)) == 6666
    with pytest.raises(ValueError):
        estimate(PRICING, quote, frames=0, tier=3)
    with pytest.raises(ValueError):
        Quote(10, 20, 30, "full")  # low above the point


def test_two_reduced_sizes_separate_fixed_and_per_pixel_cost() -> None:
    # Fixed 0.5 s, 8 s per full frame of pixels, 1 s of sync: 1/64 and 1/16 of the pixels.
    small, large = (1 / 64, 0.5 + 8 / 64), (1 / 16, 0.5 + 8 / 16)
    assert scaled_frame_seconds(1.0, small, large) == pytest.approx(1.0 + 0.5 + 8.0)
    # Noise that makes the large size faster: per-pixel clamps at 0, never negative.
    assert scaled_frame_seconds(0.0, (0.1, 2.0), (0.4, 1.0)) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        scaled_frame_seconds(0.0, (0.5, 1.0), (0.25, 2.0))
    with pytest.raises(ValueError):
        scaled_frame_seconds(math.nan, small, large)


def test_probe_sizes_keep_the_frame_and_bound_the_work() -> None:
    assert probe_sizes(160, 90, 16) is None  # small frames are probed whole
    sizes = probe_sizes(1280, 720, 16)  # the hd sample: 1/16 and 1/64 of its pixels
    assert sizes is not None
    assert (sizes.frame, sizes.small, sizes.large) == ((1280, 720), (160, 90), (320, 180))
    assert (sizes.share(sizes.small), sizes.share(sizes.large)) == (1 / 64, 1 / 16)
    big = probe_sizes(1920, 1080, 128)
    assert big is not None
    width, height = big.large
    assert width / height == pytest.approx(1920 / 1080, rel=0.02)  # the frame's aspect
    assert width * height * 128 == pytest.approx(LARGE_PIXEL_SAMPLES, rel=0.02)
    assert big.share(big.large) == pytest.approx(4 * big.share(big.small), rel=0.02)
    # A frame just past the whole-frame size: the large size is at most a quarter of it.
    edge = probe_sizes(640, 400, 16)
    assert edge is not None and edge.share(edge.large) <= 1 / 4
    # Few pixels, many samples: the large size keeps MIN_LARGE_PIXELS to time.
    dense = probe_sizes(200, 200, 2_000)
    assert dense is not None and dense.large[0] * dense.large[1] >= MIN_LARGE_PIXELS * 0.98
    with pytest.raises(ProbeTooBig):  # bounded work: absurd settings are not probed
        probe_sizes(65536, 65536, 1_000_000)
    with pytest.raises(ValueError):
        probe_sizes(0, 720, 16)
    tiny = reduced_sizes(3, 3, 1 / 4)  # never a zero-pixel render
    assert min(tiny.small) >= 1 and tiny.share(tiny.small) < tiny.share(tiny.large)
    with pytest.raises(ValueError):
        reduced_sizes(1280, 720, 0.0)


def test_probe_frames_and_key() -> None:
    assert probe_frames([5]) == [5]
    assert probe_frames([1, 2]) == [1, 2]
    assert probe_frames(list(range(1, 9))) == [1, 5, 8]
    # Big frames (reduced sizes): at most half of a short job's frames, at least one.
    assert probe_frames([1, 2], scaled=True) == [1]
    assert probe_frames([7], scaled=True) == [7]
    assert probe_frames([1, 2, 3, 4], scaled=True) == [1, 3]
    assert probe_frames(list(range(1, 9)), scaled=True) == [1, 5, 8]
    settings = pb.RenderSettings(engine="CYCLES", samples=16, resolution_x=160)
    key = probe_key("a" * 64, settings, [1, 5, 8])
    assert key == probe_key("a" * 64, settings, [8, 1, 5])
    assert key != probe_key("a" * 64, pb.RenderSettings(engine="CYCLES", samples=17,
                                                        resolution_x=160), [1, 5, 8])
    assert key != probe_key("b" * 64, settings, [1, 5, 8])
    region = pb.RenderSettings()
    region.CopyFrom(settings)
    region.region.CopyFrom(pb.RenderRegion(min_x=0.25, max_x=0.5, max_y=1.0, crop=True))
    assert probe_key("a" * 64, region, [1, 5, 8]) != key
    # Settings without a region keep the digest coordinators before regions gave them, so
    # their cached probes still count.
    before = {name: getattr(settings, name) for name in (
        "engine", "samples", "resolution_x", "resolution_y", "resolution_percentage",
        "output_format", "seed")}
    assert settings_digest(settings) == hashlib.sha256(
        json.dumps(before, sort_keys=True).encode()).hexdigest()


def test_the_fallback_quote_counts_only_a_render_regions_pixels() -> None:
    whole = pb.RenderSettings(engine="CYCLES", samples=64, resolution_x=1920,
                              resolution_y=1080, resolution_percentage=50)
    quarter = pb.RenderSettings()
    quarter.CopyFrom(whole)
    quarter.region.CopyFrom(pb.RenderRegion(min_x=0.0, max_x=0.5, min_y=0.0, max_y=0.5))
    full, part = Prober._fallback(whole), Prober._fallback(quarter)
    assert full.method == part.method == "fallback"
    assert part.ms_per_frame == pytest.approx(full.ms_per_frame / 4, rel=1e-3)


def test_relative_factor_follows_the_shape_and_clamps() -> None:
    times = [2.0, 4.0, 6.0]  # median 4
    assert relative_factor(4.0, times) == 1
    assert relative_factor(5.0, times) == Fraction(5, 4)
    assert relative_factor(100.0, times) == Fraction(3, 2)  # clamped high
    assert relative_factor(0.5, times) == Fraction(1, 2)  # clamped low
    # Claims scaled by any factor cancel out: 50x every time gives the same factors.
    assert relative_factor(250.0, [t * 50 for t in times]) == Fraction(5, 4)
    # No information -> 1, never NaN or infinity.
    for bad in BAD_TIMES:
        assert relative_factor(bad, times) == 1
        assert relative_factor(4.0, [bad, bad]) == 1
    assert relative_factor(4.0, []) == 1
    assert relative_factor(4.0, [math.nan, 4.0, math.inf]) == 1  # the bad ones are skipped


def test_frame_work_is_the_quote_within_the_bounds() -> None:
    assert frame_work_ms(1500, Fraction(1)) == 1500
    assert frame_work_ms(1500, Fraction(5, 4)) == 1875
    assert frame_work_ms(1001, Fraction(3, 2)) == 1501  # rounded down
    assert frame_work_ms(1500, Fraction(100)) == 2250  # the bounds hold even if asked for more
    assert frame_work_ms(1500, Fraction(0)) == 750
    with pytest.raises(ValueError):
        frame_work_ms(-1, Fraction(1))


def test_claim_mismatch_compares_claims_with_the_network() -> None:
    # 50x the real 2 s at score 20 against a quote of 2 reference seconds: 1000x.
    ratio = claimed_work_ratio([100.0, 100.0, 150.0], 20.0, 2000)
    assert ratio == pytest.approx(1000.0) and claim_mismatch(ratio)
    # The median: one slow first frame (the scene's sync) does not make an honest node a liar.
    assert claimed_work_ratio([9.0, 2.0, 2.0, 1.8], 1.0, 2000) == pytest.approx(1.0)
    assert claimed_work_ratio([2.0, 2.0], 1.0, 2000) is None  # too few frames to judge
    assert not claim_mismatch(2.9) and not claim_mismatch(1 / 2.9)
    assert claim_mismatch(3.1) and claim_mismatch(1 / 3.1)
    for bad in BAD_TIMES:
        assert claimed_work_ratio([bad, bad, bad], 1.0, 2000) is None
    for bad_score in (math.nan, math.inf, -1.0, 0.0):
        assert claimed_work_ratio([2.0, 2.0, 2.0], bad_score, 2000) is None
    assert claimed_work_ratio([2.0, 2.0, 2.0], 1.0, 0) is None
    assert not claim_mismatch(None)


def test_measured_speed_is_a_median_on_the_network_clock() -> None:
    # (work ms, wall s): 2, 1 and 4 reference seconds per second -> median 2.
    assert measured_speed([(2000, 1.0), (1000, 1.0), (4000, 1.0)]) == pytest.approx(2.0)
    assert measured_speed([(2000, math.nan), (0, 1.0), (1000, 0.0)]) is None
    assert measured_speed([]) is None

"""The rule that judges a denoised frame against the verifier's denoiser re-run on the node's
own passes (verifier.judge.judge_denoised), on synthetic frames."""

from __future__ import annotations

import numpy as np

from verifier.judge import DEFAULT_THRESHOLDS, Outcome, judge_denoised

RNG = np.random.default_rng(5)
FRAME = RNG.random((90, 160, 3)).astype(np.float32)


def shifted(levels: int, share: float) -> np.ndarray:
    """The frame with ``share`` of its pixels moved by ``levels`` 8-bit levels."""
    out = (np.round(FRAME * 255)).astype(np.int16)
    mask = RNG.random(out.shape[:2]) < share
    out[mask] = np.clip(out[mask] + levels, 0, 255)
    return (out / 255).astype(np.float32)


def test_exact_mode_needs_the_same_pixels() -> None:
    same = (np.round(FRAME * 255) / 255).astype(np.float32)
    assert judge_denoised(same, same.copy(), exact=True).outcome is Outcome.PASS
    assert judge_denoised(shifted(40, 0.3), same, exact=True).outcome is Outcome.FAIL


def test_statistical_mode_has_a_grey_band_between_rounding_and_tampering() -> None:
    base = shifted(0, 0.0)
    rounding = judge_denoised(shifted(1, 0.02), base, exact=False)
    assert rounding.outcome is Outcome.PASS, rounding.reason
    grey = judge_denoised(shifted(6, 0.05), base, exact=False)  # mean 0.3, max 6
    assert grey.outcome is Outcome.GREY, grey.reason
    blotch = shifted(DEFAULT_THRESHOLDS.denoise_fail_max + 10, 0.001)
    assert judge_denoised(blotch, base, exact=False).outcome is Outcome.FAIL
    broad = judge_denoised(shifted(3, 0.5), base, exact=False)  # mean 1.5 levels
    assert broad.outcome is Outcome.FAIL, broad.reason

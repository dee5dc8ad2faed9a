"""Proof-of-Render units with real renders: tiles, metrics and judge (reputation: tests/unit).

A handful of tiny frames (128x72, few samples) are rendered once per module in one warm
Blender child; bpy is never imported into the pytest process.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from frameproof.blender import BlenderWorker, RenderSettings
from verifier import judge, metrics, tiles
from verifier.judge import Outcome

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "spinning_cube.blend"
W, H = 128, 72  # 40% of the 320x180 sample
SPP = 8
needs_bpy = pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="no bpy")


def rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None
    return np.ascontiguousarray(image[:, :, ::-1])


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Honest (1 and 2 threads), other-seed, half-sample, next-frame and one border tile."""
    out = tmp_path_factory.mktemp("verifier")
    settings = RenderSettings(samples=SPP, resolution_percentage=40, seed=0)
    tile = tiles.Tile(40, 20, 32, 32)
    images: dict[str, object] = {"tile": tile}
    with BlenderWorker(threads=1) as worker:
        jobs = {
            "honest_t1": (1, 5, settings, None),
            "honest_t2": (2, 5, settings, None),
            "seed1": (2, 5, RenderSettings(samples=SPP, resolution_percentage=40, seed=1), None),
            "half": (
                2,
                5,
                RenderSettings(samples=SPP // 2, resolution_percentage=40, seed=0),
                None,
            ),
            "next": (2, 9, settings, None),
            "border": (2, 5, settings, tiles.to_border(tile, W, H)),
        }
        for name, (threads, frame, job, border) in jobs.items():
            worker.threads = threads
            path = out / f"{name}.png"
            worker.render_frame(SAMPLE, frame, path, job, border=border)
            images[name] = rgb(path)
    return images


# -- tiles --------------------------------------------------------------------------------


def test_border_conversion_flips_y_and_adds_quarter_pixel() -> None:
    min_x, max_x, min_y, max_y = tiles.to_border(tiles.Tile(0, 0, 64, 36), 128, 72)
    assert (min_x, max_x) == (0.25 / 128, 64.25 / 128)
    assert (min_y, max_y) == ((36 + 0.25) / 72, 1.0)  # top rows = high Blender Y
    with pytest.raises(AssertionError):
        tiles.to_border(tiles.Tile(100, 0, 64, 36), 128, 72)


@needs_bpy
def test_border_render_equals_crop_of_full_frame(renders: dict) -> None:
    crop = tiles.crop(renders["honest_t2"], renders["tile"])
    assert renders["border"].shape == crop.shape
    assert np.array_equal(renders["border"], crop)


def test_choose_tiles_in_bounds_non_flat_and_reproducible() -> None:
    image = np.zeros((180, 320, 3), np.uint8)
    image[:, 160:] = np.random.default_rng(0).integers(0, 255, (180, 160, 3))
    image = cv2.GaussianBlur(image, (0, 0), 1)
    picked = tiles.choose_tiles(image, 4, random.Random(1))
    assert picked == tiles.choose_tiles(image, 4, random.Random(1))
    assert len(picked) == 4 and len(set(picked)) == 4
    for t in picked:
        assert t.w == t.h == tiles.default_tile_size(320, 180) == 64
        assert t.x >= 0 and t.x + t.w <= 320 and t.y >= 0 and t.y + t.h <= 180
        assert tiles.detail(image, t) >= tiles.FLAT_STD  # the black half is never chosen
    assert tiles.choose_tiles(np.zeros((180, 320, 3), np.uint8), 3, random.Random(1)) == []
    assert tiles.default_tile_size(1280, 720) == 128
    assert tiles.default_tile_size(64, 36) == tiles.MIN_TILE


# -- metrics ------------------------------------------------------------------------------


@needs_bpy
def test_metrics_on_real_renders(renders: dict) -> None:
    t1, t2, seed1, half = (renders[k] for k in ("honest_t1", "honest_t2", "seed1", "half"))
    same = metrics.exact_match(t1, t2)
    assert (same.equal_fraction, same.max_abs_diff) == (1.0, 0)  # thread count changes nothing
    assert metrics.exact_match(t1, seed1).equal_fraction < 0.5
    cube = tiles.Tile(32, 16, 48, 48)  # the noisy part; the flat sky would dilute the ratio
    t2c, seed1c, halfc = (tiles.crop(x, cube) for x in (t2, seed1, half))
    assert metrics.noise_ratio(halfc, t2c) > 1.2  # half the samples: ≈ √2 the noise
    assert 0.8 < metrics.noise_ratio(seed1c, t2c) < 1.25
    assert metrics.noise_correlation(t1, t2) == pytest.approx(1.0)
    assert metrics.noise_correlation(half, t2) < 0.95
    assert metrics.blurred_ssim(seed1, t2) > 0.95


def test_cheap_checks_and_hashes() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    assert metrics.check_frame(frame, 128, 72).ok
    assert not metrics.check_frame(None, 128, 72).ok
    assert "size" in metrics.check_frame(frame, 64, 36).reason
    assert "blank" in metrics.check_frame(np.zeros_like(frame), 128, 72).reason
    assert metrics.noise_sigma(np.zeros_like(frame)) == 0.0  # flat: no noise, not NaN
    assert metrics.noise_ratio(np.zeros_like(frame), frame) == 0.0
    assert metrics.pixel_hash(frame) == metrics.pixel_hash(frame.copy())
    assert metrics.pixel_hash(frame) != metrics.pixel_hash(frame[:, ::-1])
    smooth = cv2.GaussianBlur(frame, (0, 0), 6)
    noisy = np.clip(smooth.astype(int) + rng.integers(-2, 3, smooth.shape), 0, 255).astype(np.uint8)
    assert metrics.hamming(metrics.perceptual_hash(smooth), metrics.perceptual_hash(noisy)) <= 8


# -- judge --------------------------------------------------------------------------------


def both_modes(renders: dict, node: np.ndarray) -> tuple[Outcome, Outcome]:
    tile = tiles.Tile(32, 16, 48, 48)
    exact = judge.judge_tile(
        tiles.crop(node, tile), tiles.crop(renders["honest_t2"], tile), exact=True
    )
    stat = judge.judge_tile(tiles.crop(node, tile), tiles.crop(renders["seed1"], tile), exact=False)
    return exact.outcome, stat.outcome


@needs_bpy
def test_honest_tile_passes(renders: dict) -> None:
    assert both_modes(renders, renders["honest_t1"]) == (Outcome.PASS, Outcome.PASS)


@needs_bpy
def test_half_samples_fail_in_both_modes(renders: dict) -> None:
    exact, stat = both_modes(renders, renders["half"])
    assert exact is Outcome.FAIL
    assert stat is not Outcome.PASS  # fail or grey (grey escalates to an exact re-render)
    tile = tiles.Tile(32, 16, 48, 48)
    ratio = judge.judge_tile(
        tiles.crop(renders["half"], tile), tiles.crop(renders["seed1"], tile), exact=False
    ).scores["noise_ratio"]
    assert ratio > judge.DEFAULT_THRESHOLDS.ratio_pass[1]


@needs_bpy
def test_blank_noise_shift_and_wrong_frame_fail(renders: dict) -> None:
    honest = renders["honest_t1"]
    cheats = {
        "blank": np.zeros_like(honest),
        "noise": np.random.default_rng(1).integers(0, 256, honest.shape, dtype=np.uint8),
        "shift": np.concatenate([honest[:, :1], honest[:, :-1]], axis=1),
        "next frame": renders["next"],
    }
    for name, node in cheats.items():
        exact, stat = both_modes(renders, node)
        assert exact is Outcome.FAIL, name
        if name != "shift":  # a 1-px shift is only visible to exact mode at this tiny size
            assert stat is Outcome.FAIL, name
    assert not metrics.check_frame(cheats["blank"], W, H).ok


def test_judge_frame_rules() -> None:
    ok = judge.TileVerdict(Outcome.PASS, "ok", {"noise_ratio": 1.0})
    bad = judge.TileVerdict(Outcome.FAIL, "bad")
    grey = judge.TileVerdict(Outcome.GREY, "hmm", {"noise_ratio": 1.0})
    assert judge.judge_frame([ok, ok]).outcome is Outcome.PASS
    assert judge.judge_frame([ok, bad]).outcome is Outcome.FAIL
    assert judge.judge_frame([ok, grey]).outcome is Outcome.GREY
    assert judge.judge_frame([]).outcome is Outcome.GREY
    # pooled over the tiles: the node differs from the second-seed render by 1.5x what the
    # verifier's own pair does, an error variance twice an honest render's: samples were cut
    noisy = judge.TileVerdict(Outcome.PASS, "ok", {"noise_node": 1.5, "noise_honest": 1.0,
                                                   "noise_count": 100.0})
    assert judge.judge_frame([noisy] * 4).outcome is Outcome.FAIL
    calm = judge.TileVerdict(Outcome.PASS, "ok", {"noise_node": 1.0, "noise_honest": 1.0,
                                                  "noise_count": 100.0})
    assert judge.judge_frame([calm] * 4).outcome is Outcome.PASS


def test_pooled_bands_narrow_with_the_pixels_pooled_down_to_a_floor() -> None:
    th = judge.DEFAULT_THRESHOLDS
    four_tiles = judge.pooled_bands(th.pooled_pixels)
    assert four_tiles.noise_fail[1] == pytest.approx(1 + th.noise_fail_width)
    whole = judge.pooled_bands(320 * 180)
    assert 1 < whole.noise_pass[1] < four_tiles.noise_pass[1]
    assert whole.lowfreq_fail < four_tiles.lowfreq_fail
    hd = judge.pooled_bands(1920 * 1080)
    assert hd.noise_fail[1] == pytest.approx(1 + th.noise_fail_floor)
    assert hd.noise_fail[0] == pytest.approx(1 / (1 + th.noise_fail_floor))


def test_variance_ratio_measures_the_nodes_error_in_honest_units() -> None:
    """Three independent renders: 1; twice the noise variance (half the samples): 2; a
    smoothed frame: well below 1; a noise-free pair: no verdict (NaN)."""
    truth = synthetic_truth()
    ref, second = synthetic_render(truth, 1), synthetic_render(truth, 2)

    def ratio(node: np.ndarray) -> float:
        e = metrics.pair_energy(node, ref, second, lowfreq=False)
        return metrics.variance_ratio(e.node, e.honest, e.count)

    assert abs(ratio(synthetic_render(truth, 3)) - 1.0) < 0.05
    assert abs(ratio(synthetic_render(truth, 3, noise=0.02 * 2**0.5)) - 2.0) < 0.1
    assert ratio(metrics.to_uint8(np.clip(truth, 0, 1))) < 0.1
    flat = metrics.to_uint8(np.clip(truth, 0, 1))
    e = metrics.pair_energy(flat, flat, flat, lowfreq=False)
    assert np.isnan(metrics.variance_ratio(e.node, e.honest, e.count))


def test_choose_tiles_hit_every_half_of_the_frame() -> None:
    """Latin hypercube: a cheat confined to one half of the frame always meets a tile."""
    image = cv2.GaussianBlur(
        np.random.default_rng(2).integers(0, 255, (180, 320, 3), dtype=np.uint8), (0, 0), 1
    )
    for seed in range(200):
        for count in (3, 4):
            picked = tiles.choose_tiles(image, count, random.Random(seed))
            assert len(picked) == count
            inside = {
                "left": [t for t in picked if t.x + t.w <= 160],
                "right": [t for t in picked if t.x >= 160],
                "top": [t for t in picked if t.y + t.h <= 90],
                "bottom": [t for t in picked if t.y >= 90],
            }
            # the outermost bands' tiles lie wholly inside their half (64 px tiles)
            assert inside["left"] and inside["right"], (seed, count, picked)
            if count == 4:
                assert inside["top"] and inside["bottom"], (seed, picked)


def synthetic_truth() -> np.ndarray:
    """A 320x180 "scene": soft-edged squares on a gradient (structure for SSIM to align on)."""
    yy, xx = np.mgrid[0:180, 0:320]
    squares = cv2.GaussianBlur((((xx // 20) + (yy // 20)) % 2).astype(np.float64), (0, 0), 1.5)
    base = np.stack([0.3 + 0.3 * xx / 320, 0.5 + 0.2 * yy / 180, 0.4 * np.ones_like(xx)], axis=2)
    return base + 0.25 * squares[..., None]


def synthetic_render(truth: np.ndarray, seed: int, blotches: float = 0.0,
                     noise: float = 0.02) -> np.ndarray:
    """``truth`` plus per-pixel noise shared by the channels, and optional low-frequency error."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, noise, truth.shape[:2])[..., None]
    smooth = cv2.GaussianBlur(rng.normal(0, 1, truth.shape[:2]), (0, 0), 3)[..., None]
    image = truth + noise + blotches * smooth / smooth.std()
    return metrics.to_uint8(np.clip(image, 0, 1))


def test_lowfreq_ratio_catches_blotches_that_noise_scores_miss() -> None:
    """A denoised frame with noise added back keeps the noise level but not the flatness."""
    truth = synthetic_truth()
    reference, second = synthetic_render(truth, 1), synthetic_render(truth, 2)
    honest = synthetic_render(truth, 3)
    forged = synthetic_render(truth, 4, blotches=0.01)
    chosen = tiles.choose_tiles(honest, 4, random.Random(0), flat_std=0.0)

    def frame(node: np.ndarray) -> judge.FrameVerdict:
        return judge.judge_frame([
            judge.judge_tile(
                tiles.crop(node, t),
                tiles.crop(reference, t),
                exact=False,
                second_reference=tiles.crop(second, t),
            )
            for t in chosen
        ])

    assert frame(honest).outcome is Outcome.PASS
    forged_verdict = frame(forged)
    assert forged_verdict.outcome is Outcome.FAIL, forged_verdict.reason
    assert "low-frequency" in forged_verdict.reason
    tile_scores = forged_verdict.tiles[0].scores
    assert judge.DEFAULT_THRESHOLDS.ratio_pass[0] < tile_scores["noise_ratio"] < 1.2


def test_judge_frame_grey_pooled_test_does_not_hide_a_failed_one() -> None:
    bands = judge.pooled_bands(4e4)  # the four tiles below pool 40,000 pixels
    grey_ratio = (bands.noise_pass[1] + bands.noise_fail[1]) / 2
    ratio_grey = {"noise_node": (grey_ratio + 1) / 2, "noise_honest": 1.0, "noise_count": 1e4,
                  "lowfreq_node": 2.0, "lowfreq_honest": 1.0, "lowfreq_count": 1e4}
    tile = judge.TileVerdict(Outcome.PASS, "ok", ratio_grey)
    verdict = judge.judge_frame([tile] * 4)
    assert verdict.outcome is Outcome.FAIL and "low-frequency" in verdict.reason
    calm = judge.TileVerdict(Outcome.PASS, "ok", {**ratio_grey, "lowfreq_node": 1.0})
    assert judge.judge_frame([calm] * 4).outcome is Outcome.GREY


def test_escalation_adds_tiles_then_renders_the_whole_frame() -> None:
    """Grey tiles ask for as many again, pooled; still grey, the whole frame decides."""
    from verifier.checker import judge_with_escalation

    truth = synthetic_truth()
    reference, second = synthetic_render(truth, 1), synthetic_render(truth, 2)
    asked: list[tiles.Tile] = []

    def render(tile: tiles.Tile, other_seed: bool) -> np.ndarray:
        asked.append(tile)
        return tiles.crop(second if other_seed else reference, tile)

    honest = synthetic_render(truth, 3)
    judged = judge_with_escalation(
        honest, exact=False, count=4, rng=random.Random(0), render=render
    )
    assert (judged.verdict.outcome, judged.stage, len(judged.tiles)) == (Outcome.PASS, "tiles", 4)
    assert len(asked) == 8  # every tile twice: the job's seed and a second one
    # nearly identical to the same-seed reference: grey in exact mode at every stage
    nearly = reference.copy()
    nearly[::11, ::11] = np.clip(nearly[::11, ::11].astype(int) + 3, 0, 255).astype(np.uint8)
    asked.clear()
    judged = judge_with_escalation(nearly, exact=True, count=3, rng=random.Random(0), render=render)
    assert judged.stage == "whole frame" and judged.verdict.outcome is Outcome.GREY
    assert len(judged.tiles) == 7 and asked[-1] == tiles.Tile(0, 0, 320, 180)

"""Proof-of-Render benchmark: real Blender renders, a cheat suite, thresholds and a simulation.

    .venv/bin/python bench/verification_bench.py            # full run, writes docs/VERIFICATION.md
    .venv/bin/python bench/verification_bench.py --quick    # smoke run (~1 min), same report

Honest renders vary thread count (node 1 thread, exact-mode verifier 2, and the other way
round) and seed (statistical mode: verifier seeds 1, 2 and 3 stand in for another device class;
each check uses a reference and a second-seed reference) over two scenes. Tiles are cropped from
full-frame renders (a border re-render equals the crop exactly; checked here on real border
renders), so one warm Blender renders everything, one process at a time. Frames are judged by
the verifier's own escalation code (`verifier.checker.judge_with_escalation`).
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator.domain import reputation  # noqa: E402
from frameproof.blender import BlenderWorker, RenderSettings  # noqa: E402
from verifier import judge, metrics, tiles  # noqa: E402
from verifier.checker import EXACT_TILES, Judgement, judge_with_escalation  # noqa: E402
from verifier.checker import STATISTICAL_TILES as STAT_TILES  # noqa: E402
from verifier.judge import Outcome  # noqa: E402

SAMPLES = 16
# name: (denoised .blend, threads, samples, seed, resolution %)
VARIANTS = {
    "honest_t1": (False, 1, SAMPLES, 0, 100),
    "honest_t2": (False, 2, SAMPLES, 0, 100),
    "seed1": (False, 2, SAMPLES, 1, 100),
    "seed2": (False, 2, SAMPLES, 2, 100),
    "seed3": (False, 2, SAMPLES, 3, 100),
    "seed4": (False, 2, SAMPLES, 4, 100),
    "half": (False, 2, SAMPLES // 2, 0, 100),
    "quarter": (False, 2, SAMPLES // 4, 0, 100),
    "sixteenth": (False, 2, SAMPLES // 16, 0, 100),
    "quarter_dn": (True, 2, SAMPLES // 4, 0, 100),
    "halfres": (False, 2, SAMPLES, 0, 50),
    # denoised jobs (the scene saved with OpenImageDenoise on): honest and cheating nodes
    "honest_t1_dn": (True, 1, SAMPLES, 0, 100),
    "honest_t2_dn": (True, 2, SAMPLES, 0, 100),
    "half_dn": (True, 2, SAMPLES // 2, 0, 100),
    "sixteenth_dn": (True, 2, SAMPLES // 16, 0, 100),
    "halfres_dn": (True, 2, SAMPLES, 0, 50),
    # statistical mode on denoised jobs: the verifier's references with other seeds
    "seed1_dn": (True, 2, SAMPLES, 1, 100),
    "seed2_dn": (True, 2, SAMPLES, 2, 100),
    "seed3_dn": (True, 2, SAMPLES, 3, 100),
}
# rendered only for the frames checked as exact-mode denoised jobs (real tile renders)
EXACT_DENOISED_VARIANTS = ("honest_t2_dn",)
Frames = dict[tuple[str, str, int], np.ndarray]  # (scene, variant, frame) -> uint8 RGB


# -- rendering ---------------------------------------------------------------------------------


def build_scenes(work: Path) -> dict[str, tuple[Path, Path]]:
    """Generate the second scene and the denoiser variants (a separate, finished bpy process)."""
    out = work / "scenes"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scenes" / "build_scenes.py"), str(out)],
        check=True,
        capture_output=True,
    )
    return {
        name: (out / f"{name}.blend", out / f"{name}_denoised.blend")
        for name in ("spinning_cube", "glossy_orbit")
    }


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.ascontiguousarray(image[:, :, ::-1])


def render_all(worker: BlenderWorker, scenes: dict, frames: list[int], work: Path,
               denoised_frames: list[int], cache: Path) -> Frames:
    """Every variant of every frame; grouped by variant so the warm child keeps its scene.
    ``honest_t2_dn`` (the exact whole-frame reference of denoised jobs) only for
    ``denoised_frames``. Renders already in ``cache`` (same scene, variant and frame: the
    scenes are built deterministically) are read back instead of rendered again."""
    out: Frames = {}
    for scene, (blend, denoised) in scenes.items():
        for name, (dn, threads, spp, seed, pct) in VARIANTS.items():
            wanted = denoised_frames if name in EXACT_DENOISED_VARIANTS else frames
            worker.threads = threads
            settings = RenderSettings(samples=spp, seed=seed, resolution_percentage=pct)
            for frame in wanted:
                path = cache / f"{scene}_{name}_{frame}.png"
                if not path.exists():
                    worker.render_frame(denoised if dn else blend, frame, path, settings)
                out[scene, name, frame] = read_rgb(path)
            print(f"  {scene} {name}: {len(wanted)} frames", flush=True)
    return out


def border_equals_crop(
    worker: BlenderWorker, scenes: dict, frames: Frames, work: Path, count: int
) -> tuple[int, int]:
    """Render real tiles the verifier's way (``tile=``: dither hashed by frame position) and
    compare them with crops of the full frame."""
    worker.threads = 2
    rng = random.Random(7)
    equal = total = 0
    for scene, (blend, _) in scenes.items():
        frame = next(f for (s, v, f) in frames if s == scene and v == "honest_t2")
        full = frames[scene, "honest_t2", frame]
        for i, tile in enumerate(tiles.choose_tiles(full, count, rng)):
            path = work / "border" / f"{scene}_{i}.png"
            worker.render_frame(
                blend,
                frame,
                path,
                RenderSettings(samples=SAMPLES, seed=0),
                tile=(tile.x, tile.y, tile.w, tile.h),
            )
            got = tiles.crop(read_rgb(path), tile)
            total += 1
            equal += got.shape == tiles.crop(full, tile).shape and bool(
                np.array_equal(got, tiles.crop(full, tile))
            )
    return equal, total


# -- cheats ------------------------------------------------------------------------------------


def cheat_suite(frames: Frames, scenes: list[str], frame_ids: list[int]) -> dict[str, Callable]:
    """Strategy name -> f(scene, frame) giving the cheater's frame (uint8) or None (not a cheat)."""
    other = {scenes[0]: scenes[1], scenes[1]: scenes[0]}

    def honest(s: str, f: int) -> np.ndarray:
        return frames[s, "honest_t1", f]

    def neighbour(s: str, f: int) -> np.ndarray | None:
        # the next frame (not delivered yet, so no hash to match); the last frame has none
        i = frame_ids.index(f)
        return honest(s, frame_ids[i + 1]) if i + 1 < len(frame_ids) else None

    def noise(s: str, f: int) -> np.ndarray:
        rng = np.random.default_rng(f)
        return rng.integers(0, 256, honest(s, f).shape, dtype=np.uint8)

    def matched_noise(s: str, f: int) -> np.ndarray:
        # denoise a quarter-sample render, add Gaussian noise at the level full samples would
        # leave (the cheater estimates it from its own quarter-sample noise / 2)
        dn = metrics.to_float(frames[s, "quarter_dn", f])
        sigma = metrics.noise_sigma(frames[s, "quarter", f]) / 2
        rng = np.random.default_rng(f)
        return metrics.to_uint8(np.clip(dn + rng.normal(0, sigma, dn.shape), 0, 1))

    def residual_noise(s: str, f: int) -> np.ndarray:
        # the strongest forgery we know: denoised + half its own quarter-sample residual, so the
        # noise has Cycles' own structure and the full-sample level
        dn = metrics.to_float(frames[s, "quarter_dn", f])
        q = metrics.to_float(frames[s, "quarter", f])
        return metrics.to_uint8(np.clip(dn + 0.5 * (q - dn), 0, 1))

    def half_res(s: str, f: int) -> np.ndarray:
        h, w = honest(s, f).shape[:2]
        return cv2.resize(frames[s, "halfres", f], (w, h), interpolation=cv2.INTER_CUBIC)

    def shift(s: str, f: int) -> np.ndarray:
        img = honest(s, f)
        return np.concatenate([img[:, :1], img[:, :-1]], axis=1)

    def partial(s: str, f: int) -> np.ndarray:
        img = honest(s, f).copy()
        w = img.shape[1]
        img[:, w // 2 :] = frames[s, "sixteenth", f][:, w // 2 :]
        return img

    return {
        "blank": lambda s, f: np.zeros_like(honest(s, f)),
        "noise": noise,
        "wrong frame (next frame)": neighbour,
        "same image every frame": lambda s, f: (
            None if f == frame_ids[0] else honest(s, frame_ids[0])
        ),
        "another job's frame": lambda s, f: honest(other[s], f),
        "samples 1/2": lambda s, f: frames[s, "half", f],
        "samples 1/4": lambda s, f: frames[s, "quarter", f],
        "samples 1/16": lambda s, f: frames[s, "sixteenth", f],
        "1/4 samples + denoiser": lambda s, f: frames[s, "quarter_dn", f],
        "1/4 denoised + matched Gaussian noise": matched_noise,
        "1/4 denoised + own residual noise": residual_noise,
        "half resolution upscaled": half_res,
        "1-pixel shift": shift,
        "right half at 1/16 samples": partial,
    }


# -- checking one frame ------------------------------------------------------------------------


@dataclass
class Check:
    outcome: Outcome
    stage: str  # cheap / tiles / more tiles / whole frame
    tile_verdicts: list[judge.TileVerdict]
    first_lowfreq: float = math.nan  # pooled low-frequency ratio of the first tiles
    first_noise: float = math.nan  # pooled noise variance ratio of the first tiles
    held_out: bool = False  # a frame the thresholds were not fitted on


class Registry:
    """Pixel hashes of frames delivered before this one (any job): a copy is a fail."""

    def __init__(self, frames: Frames, scenes: list[str]) -> None:
        self.hashes = {
            (s, f): metrics.pixel_hash(img) for (s, v, f), img in frames.items() if v == "honest_t1"
        }
        self.scenes = scenes

    def duplicate(self, image: np.ndarray, key: tuple[str, int]) -> bool:
        """Same pixels as an earlier frame of this job, or any frame of another job."""
        h = metrics.pixel_hash(image)
        scene, frame = key
        return any(v == h and (s != scene or f < frame) for (s, f), v in self.hashes.items())


def crop_renderer(reference: np.ndarray, others: list[np.ndarray] | None):
    """The verifier's renders of a tile, cropped from full frames (a border render is equal):
    offset 0 the job's seed, offset k the k-th other seed."""

    def render(tile: tiles.Tile, seed_offset: int) -> np.ndarray:
        if not seed_offset:
            return tiles.crop(reference, tile)
        assert others, "exact mode renders no other seed"
        return tiles.crop(others[seed_offset - 1], tile)

    return render


def check_frame(
    node: np.ndarray,
    reference: np.ndarray,
    others: list[np.ndarray] | None,
    key,
    *,
    rng: random.Random,
    registry: Registry | None,
) -> Check:
    """The full per-frame procedure: cheap checks, then the verifier's escalation.

    ``others``: the verifier's other-seed renders (statistical mode: the tiles use the first,
    the whole frame all of them) or None (exact mode). Grey after the whole frame passes, as in
    the verifier (benefit of the doubt).
    """
    height, width = reference.shape[:2]
    cheap = metrics.check_frame(node, width, height)
    if not cheap.ok or (registry is not None and registry.duplicate(node, key)):
        return Check(Outcome.FAIL, "cheap", [])
    exact = others is None
    judged: Judgement = judge_with_escalation(
        node,
        exact=exact,
        count=EXACT_TILES if exact else STAT_TILES,
        rng=rng,
        render=crop_renderer(reference, others),
    )
    verdicts = [v for t, v in judged.tiles if (t.w, t.h) != (width, height)]  # tiles only
    failed = judged.verdict.outcome is Outcome.FAIL
    first_tiles = verdicts[: EXACT_TILES if exact else STAT_TILES]
    return Check(Outcome.FAIL if failed else Outcome.PASS, judged.stage, verdicts,
                 judge.frame_lowfreq_ratio(first_tiles), judge.frame_noise_ratio(first_tiles))


def seed_of(*parts: object) -> int:
    """A reproducible RNG seed (``hash()`` of strings changes per process)."""
    return zlib.crc32(repr(parts).encode())


# -- experiments -------------------------------------------------------------------------------


def held_out_frames(frame_ids: list[int]) -> set[int]:
    """Every other frame: the statistical thresholds were fitted on the rest (``--fit``)."""
    return set(frame_ids[1::2])


# statistical mode's verifier renders: the job's seed A, then the other seeds (tiles use the
# first, the whole frame both)
STAT_REFS = [("seed1", "seed2", "seed3"), ("seed2", "seed3", "seed1"), ("seed3", "seed1", "seed2")]


def run_checks(frames: Frames, scenes: list[str], frame_ids: list[int], draws: int) -> dict:
    registry = Registry(frames, scenes)
    # mode -> (reference, other-seed references; none in exact mode)
    modes = {"exact": [("honest_t2",)], "statistical": STAT_REFS}
    # honest (node, reference, others...) beyond the node's own frames: threads swapped in exact
    # mode; in statistical mode a seed-4 node against every triple, and each of seeds 1-3
    # against the other three of seeds 1-4
    extra_honest = {
        "exact": [("honest_t2", "honest_t1")],
        "statistical": [*(("seed4", *refs) for refs in STAT_REFS),
                        ("seed1", "seed2", "seed3", "seed4"), ("seed2", "seed3", "seed4", "seed1"),
                        ("seed3", "seed4", "seed1", "seed2")],
    }
    held = held_out_frames(frame_ids)
    results: dict = {m: defaultdict(list) for m in modes}
    honest_tiles: dict = {m: [] for m in modes}
    suite = cheat_suite(frames, scenes, frame_ids)
    strategies = {"honest": lambda s, f: frames[s, "honest_t1", f], **suite}

    def record(mode: str, name: str, chk: Check, frame: int) -> None:
        chk.held_out = frame in held
        results[mode][name].append(chk)
        if name == "honest":
            honest_tiles[mode].extend(chk.tile_verdicts)

    for mode, refs in modes.items():
        for ref_name, *other_names in refs:
            for s in scenes:
                for f in frame_ids:
                    reference = frames[s, ref_name, f]
                    others = [frames[s, o, f] for o in other_names] or None
                    for name, make in strategies.items():
                        node = make(s, f)
                        if node is None:
                            continue
                        for d in range(draws):
                            rng = random.Random(seed_of(mode, ref_name, s, f, name, d))
                            chk = check_frame(
                                node, reference, others, (s, f), rng=rng, registry=registry
                            )
                            record(mode, name, chk, f)
            print(f"  {mode} vs {ref_name}: done", flush=True)
    for mode, cases in extra_honest.items():
        for node_name, ref_name, *other_names in cases:
            for s in scenes:
                for f in frame_ids:
                    others = [frames[s, o, f] for o in other_names] or None
                    for d in range(draws):
                        chk = check_frame(
                            frames[s, node_name, f],
                            frames[s, ref_name, f],
                            others,
                            (s, f),
                            rng=random.Random(seed_of("extra", mode, node_name, ref_name, s, f,
                                                      d)),
                            registry=None,
                        )
                        record(mode, "honest", chk, f)
    return {"results": results, "honest_tiles": honest_tiles}


def tile_score_table(frames: Frames, scenes: list[str], frame_ids: list[int]) -> list[tuple]:
    """Per-tile statistical scores (vs the seed-1 reference), honest and per cheat: quantiles."""
    suite = cheat_suite(frames, scenes, frame_ids)
    rows = []
    strategies = {"honest (seed 0 vs 1)": lambda s, f: frames[s, "honest_t1", f], **suite}
    for name, make in strategies.items():
        scores = defaultdict(list)
        for s in scenes:
            for f in frame_ids:
                node = make(s, f)
                if node is None or not metrics.check_frame(node, 320, 180).ok:
                    continue
                rng = random.Random(f)
                for tile in tiles.choose_tiles(frames[s, "honest_t1", f], 6, rng):
                    v = judge.judge_tile(
                        tiles.crop(node, tile),
                        tiles.crop(frames[s, "seed1", f], tile),
                        exact=False,
                        second_reference=tiles.crop(frames[s, "seed2", f], tile),
                    )
                    for k, x in v.scores.items():
                        if not math.isnan(x):
                            scores[k].append(x)
                    scores["lowfreq"].append(judge.frame_lowfreq_ratio([v]))
                    scores["variance"].append(judge.frame_noise_ratio([v]))
        rows.append((name, {k: np.array(x) for k, x in scores.items()}))
    return rows


# -- denoised jobs ----------------------------------------------------------------------------


def denoised_suite(frames: Frames, scenes: list[str], frame_ids: list[int]) -> dict[str, Callable]:
    """Cheats against a job whose scene denoises: every render the cheater makes is denoised."""
    other = {scenes[0]: scenes[1], scenes[1]: scenes[0]}

    def honest(s: str, f: int) -> np.ndarray:
        return frames[s, "honest_t1_dn", f]

    def neighbour(s: str, f: int) -> np.ndarray | None:
        i = frame_ids.index(f)
        return honest(s, frame_ids[i + 1]) if i + 1 < len(frame_ids) else None

    def half_res(s: str, f: int) -> np.ndarray:
        h, w = honest(s, f).shape[:2]
        return cv2.resize(frames[s, "halfres_dn", f], (w, h), interpolation=cv2.INTER_CUBIC)

    def shift(s: str, f: int) -> np.ndarray:
        img = honest(s, f)
        return np.concatenate([img[:, :1], img[:, :-1]], axis=1)

    def partial(s: str, f: int) -> np.ndarray:
        img = honest(s, f).copy()
        w = img.shape[1]
        img[:, w // 2 :] = frames[s, "sixteenth_dn", f][:, w // 2 :]
        return img

    return {
        "blank": lambda s, f: np.zeros_like(honest(s, f)),
        "noise": lambda s, f: np.random.default_rng(f).integers(
            0, 256, honest(s, f).shape, dtype=np.uint8),
        "wrong frame (next frame)": neighbour,
        "another job's frame": lambda s, f: honest(other[s], f),
        "samples 1/2 (denoised)": lambda s, f: frames[s, "half_dn", f],
        "samples 1/4 (denoised)": lambda s, f: frames[s, "quarter_dn", f],
        "samples 1/16 (denoised)": lambda s, f: frames[s, "sixteenth_dn", f],
        "half resolution upscaled": half_res,
        "1-pixel shift": shift,
        "right half at 1/16 samples": partial,
    }


def run_denoised_checks(worker: BlenderWorker, scenes: dict, frames: Frames,
                        frame_ids: list[int], draws: int, work: Path) -> dict:
    """Exact mode on denoised jobs, with the verifier's real tile renders (a 64-px margin).

    The node is the honest 1-thread render; the verifier renders each tile with 2 threads
    through ``BlenderWorker.render_frame(tile=...)``, cached per (scene, frame, tile): the tile
    draw is keyed by (scene, frame, draw), so strategies with the same detail map share it.
    The whole-frame stage is the verifier's exact full render (2 threads).
    """
    names = list(scenes)
    suite = denoised_suite(frames, names, frame_ids)
    strategies = {"honest": lambda s, f: frames[s, "honest_t1_dn", f], **suite}
    cache: dict[tuple, np.ndarray] = {}
    results: dict = defaultdict(list)
    honest_tiles: list[judge.TileVerdict] = []
    renders = [0, 0.0]
    worker.threads = 2
    settings = RenderSettings(samples=SAMPLES, seed=0)

    for s in names:
        denoised = scenes[s][1]
        for f in frame_ids:
            whole = frames[s, "honest_t2_dn", f]
            height, width = whole.shape[:2]

            def render(tile: tiles.Tile, seed_offset: int, s=s, f=f, whole=whole,
                       denoised=denoised, width=width, height=height) -> np.ndarray:
                assert not seed_offset
                if (tile.w, tile.h) == (width, height):
                    return whole
                key = (s, f, tile)
                if key not in cache:
                    path = work / "dn_tiles" / f"{s}_{f}.png"
                    t = time.perf_counter()
                    done = worker.render_frame(denoised, f, path, settings,
                                               tile=(tile.x, tile.y, tile.w, tile.h))
                    renders[0] += 1
                    renders[1] += time.perf_counter() - t
                    assert done.strategy == "padded", done.strategy
                    cache[key] = tiles.crop(read_rgb(path), tile)
                return cache[key]

            for name, make in strategies.items():
                node = make(s, f)
                if node is None:
                    continue
                for d in range(draws):
                    cheap = metrics.check_frame(node, width, height)
                    if not cheap.ok:
                        results[name].append(Check(Outcome.FAIL, "cheap", []))
                        continue
                    judged = judge_with_escalation(
                        node, exact=True, count=EXACT_TILES,
                        rng=random.Random(seed_of("denoised", s, f, d)), render=render,
                        close=True,
                    )
                    verdicts = [v for t, v in judged.tiles if (t.w, t.h) != (width, height)]
                    failed = judged.verdict.outcome is Outcome.FAIL
                    results[name].append(
                        Check(Outcome.FAIL if failed else Outcome.PASS, judged.stage, verdicts))
                    if name == "honest":
                        honest_tiles.extend(verdicts)
    return {"results": results, "honest_tiles": honest_tiles, "renders": renders[0],
            "render_seconds": renders[1]}


def run_stat_denoised_checks(frames: Frames, scenes: list[str], frame_ids: list[int]) -> dict:
    """Statistical mode on denoised jobs: the whole frame against two of the verifier's renders
    with other seeds (``verifier.checker`` skips tiles there: a tile with a margin is not the
    frame's region). No tile draws, so each (frame, pair) is one check."""
    suite = denoised_suite(frames, scenes, frame_ids)
    strategies = {"honest": lambda s, f: frames[s, "honest_t1_dn", f], **suite}
    triples = [tuple(f"{x}_dn" for x in refs) for refs in STAT_REFS]
    # honest nodes of seeds 1-3, against the other two and the seed-0 node's frame
    extra = [("seed1_dn", "seed2_dn", "seed3_dn", "honest_t1_dn"),
             ("seed2_dn", "seed3_dn", "honest_t1_dn", "seed1_dn"),
             ("seed3_dn", "honest_t1_dn", "seed1_dn", "seed2_dn")]
    registry = Registry(
        {(sc, "honest_t1", f): frames[sc, "honest_t1_dn", f] for sc in scenes for f in frame_ids},
        scenes)
    held = held_out_frames(frame_ids)
    results: dict = defaultdict(list)

    def one(node: np.ndarray, refs: tuple[str, ...], s: str, f: int, dup: bool) -> Check:
        height, width = node.shape[:2]
        cheap = metrics.check_frame(node, width, height)
        if not cheap.ok or (dup and registry.duplicate(node, (s, f))):
            return Check(Outcome.FAIL, "cheap", [], held_out=f in held)
        judged = judge_with_escalation(
            node, exact=False, count=0, rng=random.Random(0),
            render=crop_renderer(frames[s, refs[0], f], [frames[s, r, f] for r in refs[1:]]))
        whole = [v for _, v in judged.tiles]
        failed = judged.verdict.outcome is Outcome.FAIL
        return Check(Outcome.FAIL if failed else Outcome.PASS, judged.stage, whole,
                     judge.frame_lowfreq_ratio(whole), judge.frame_noise_ratio(whole),
                     held_out=f in held)

    for s in scenes:
        for f in frame_ids:
            for refs in triples:
                for name, make in strategies.items():
                    node = make(s, f)
                    if node is not None:
                        results[name].append(one(node, refs, s, f, name != "honest"))
            for node_name, *refs in extra:
                results["honest"].append(one(frames[s, node_name, f], tuple(refs), s, f, False))
    return {"results": results}


def fit_report(frames: Frames, scenes: list[str], frame_ids: list[int], draws: int) -> str:
    """The pooled statistical scores on the *fitting* frames only (not the held-out ones), per
    strategy: what ``verifier.judge.Thresholds``' pooled bounds were chosen from.

    For each check: the first stage's tiles (as the verifier draws them), the first and second
    stage pooled, and the whole frame; denoised jobs on whole frames. Quantiles 0/1/5/50/95/
    99/100 %.
    """
    fit = [f for f in frame_ids if f not in held_out_frames(frame_ids)]
    out: dict = defaultdict(lambda: defaultdict(list))

    def ratios(node, ref, others, tile_list):
        energies = {k: [metrics.pair_energy(tiles.crop(node, t), tiles.crop(ref, t),
                                            [tiles.crop(o, t) for o in others],
                                            lowfreq=k == "lowfreq")
                        for t in tile_list] for k in ("noise", "lowfreq")}
        return tuple(metrics.variance_ratio(sum(e.node for e in es), sum(e.honest for e in es),
                                            sum(e.count for e in es))
                     for es in energies.values())

    def add(group: str, name: str, node, ref, others, rng) -> None:
        h, w = node.shape[:2]
        first = tiles.choose_tiles(node, STAT_TILES, rng)
        more = first + tiles.choose_tiles(node, STAT_TILES, rng)
        for stage, chosen in (("4 tiles", first), ("8 tiles", more)):
            n, lf = ratios(node, ref, others[:1], chosen)
            out[group, stage]["noise", name].append(n)
            out[group, stage]["lowfreq", name].append(lf)
        n, lf = ratios(node, ref, others, [tiles.Tile(0, 0, w, h)])
        out[group, "whole frame"]["noise", name].append(n)
        out[group, "whole frame"]["lowfreq", name].append(lf)

    suite = cheat_suite(frames, scenes, frame_ids)
    dsuite = denoised_suite(frames, scenes, frame_ids)
    for s in scenes:
        for f in fit:
            for a, *bs in STAT_REFS:
                ref, others = frames[s, a, f], [frames[s, b, f] for b in bs]
                cases = {"honest": frames[s, "honest_t1", f],
                         "honest seed 4": frames[s, "seed4", f],
                         **{k: m(s, f) for k, m in suite.items()}}
                for name, node in cases.items():
                    if node is None or not metrics.check_frame(node, 320, 180).ok:
                        continue
                    for d in range(draws):
                        add("plain", name, node, ref, others,
                            random.Random(seed_of("fit", s, f, a, name, d)))
                dref = frames[s, f"{a}_dn", f]
                dothers = [frames[s, f"{b}_dn", f] for b in bs]
                dcases = {"honest": frames[s, "honest_t1_dn", f],
                          **{k: m(s, f) for k, m in dsuite.items()}}
                for name, node in dcases.items():
                    if node is None or not metrics.check_frame(node, 320, 180).ok:
                        continue
                    h, w = node.shape[:2]
                    n, lf = ratios(node, dref, dothers, [tiles.Tile(0, 0, w, h)])
                    out["denoised", "whole frame"]["noise", name].append(n)
                    out["denoised", "whole frame"]["lowfreq", name].append(lf)
    lines = []
    qs = (0, 1, 5, 50, 95, 99, 100)
    for (group, stage), table in out.items():
        lines.append(f"## {group} scenes, {stage} (fitting frames {fit})")
        for (stat, name), values in sorted(table.items()):
            v = np.array([x for x in values if not math.isnan(x)])
            if len(v):
                q = " / ".join(f"{np.percentile(v, p):.3f}" for p in qs)
                lines.append(f"{stat:8s} {name:40s} n={len(v):4d}  {q}")
    return "\n".join(lines)


# -- simulation --------------------------------------------------------------------------------


def simulate(
    rng: random.Random,
    frames_max: int,
    cheat_rate: float,
    detect: float,
    fp: float,
    start: reputation.NodeStanding,
    stop_on: str,
) -> int | None:
    """Frames until the node is caught ("caught": first failure) / quarantined, or None."""
    st = start
    recent: list[bool] = []  # cheated flags of the node's latest frames
    for n in range(1, frames_max + 1):
        cheated = rng.random() < cheat_rate
        recent = [*recent[-(reputation.RECHECK_RECENT - 1) :], cheated]
        if rng.random() < reputation.check_probability(st):
            fail = rng.random() < (detect if cheated else fp)
            st, change = reputation.apply_event(st, "failed" if fail else "verified")
            if fail:
                if stop_on == "caught":
                    return n
                for old in recent[:-1][-change.recheck_recent :]:
                    again = rng.random() < (detect if old else fp)
                    st, _ = reputation.apply_event(st, "failed" if again else "verified")
        else:
            st, _ = reputation.apply_event(st, "delivered")
        if rng.random() < 0.01:  # some honest unreliability: a timeout now and then
            st, _ = reputation.apply_event(st, "timeout")
        if st.quarantined:
            return n
    return None


def simulation_table(detect: dict[str, float], fp: float, runs: dict[str, int]) -> list[tuple]:
    trusted = reputation.NodeStanding(
        score=0.99, consecutive_verified=2000, verified=2000, delivered=20000
    )
    rows = []
    for mode, d in detect.items():
        rng = random.Random(1234)
        new = [
            simulate(rng, 100, 0.10, d, fp, reputation.NodeStanding(), "quarantine")
            for _ in range(runs["new"])
        ]
        old = [simulate(rng, 2000, 0.10, d, fp, trusted, "caught") for _ in range(runs["trusted"])]
        honest = [
            simulate(rng, 10_000, 0.0, d, fp, reputation.NodeStanding(), "quarantine")
            for _ in range(runs["honest"])
        ]
        rows.append(
            (
                mode,
                d,
                fp,
                sum(x is not None for x in new) / len(new),
                len(new),
                sum(x is not None for x in old) / len(old),
                len(old),
                sum(x is None for x in honest),
                len(honest),
            )
        )
    return rows


# -- cost --------------------------------------------------------------------------------------


def measure_cost(worker: BlenderWorker, work: Path, percentage: int) -> dict[str, float]:
    """One frame of the sample scene at ``percentage`` of 320x180 (400: 1280x720, 128² tiles)
    and its border tiles (16 samples), plain and denoised."""
    worker.threads = 2
    blend = work / "scenes" / "spinning_cube.blend"
    settings = RenderSettings(samples=SAMPLES, seed=0, resolution_percentage=percentage)
    width, height = 320 * percentage // 100, 180 * percentage // 100
    full = worker.render_frame(blend, 12, work / "cost" / "full.png", settings)
    node = read_rgb(full.output)
    times = []
    t0 = time.perf_counter()
    chosen = tiles.choose_tiles(node, STAT_TILES, random.Random(3))
    second_seed = RenderSettings(samples=SAMPLES, seed=1, resolution_percentage=percentage)
    for i, tile in enumerate(chosen):
        refs = []
        for j, job in enumerate((settings, second_seed)):
            t = time.perf_counter()
            out = worker.render_frame(
                blend,
                12,
                work / "cost" / f"tile{i}_{j}.png",
                job,
                border=tiles.to_border(tile, width, height),
            )
            times.append(time.perf_counter() - t)
            refs.append(read_rgb(out.output))
        judge.judge_tile(tiles.crop(node, tile), refs[0], exact=False, second_reference=refs[1])
    denoised = work / "scenes" / "spinning_cube_denoised.blend"
    full_dn = worker.render_frame(denoised, 12, work / "cost" / "full_dn.png", settings)
    padded = []
    for i, tile in enumerate(chosen[:EXACT_TILES]):
        t = time.perf_counter()
        worker.render_frame(denoised, 12, work / "cost" / f"dn{i}.png", settings,
                            tile=(tile.x, tile.y, tile.w, tile.h))
        padded.append(time.perf_counter() - t)
    return {
        "frame": full.seconds,
        "tile": float(np.mean(times)),
        "check_stat": time.perf_counter() - t0,
        "tile_px": chosen[0].w,
        "frame_dn": full_dn.seconds,
        "size": f"{width}x{height}",
        "tile_dn": float(np.mean(padded)),
    }


# -- report ------------------------------------------------------------------------------------


def rate(checks: list[Check], outcome: Outcome = Outcome.FAIL) -> float:
    return sum(c.outcome is outcome for c in checks) / max(1, len(checks))


def bound(k: int, n: int, lower: bool) -> float:
    """One-sided 95% Clopper-Pearson bound on a rate of ``k`` in ``n``."""
    from scipy.stats import beta

    if lower:
        return 0.0 if k == 0 else float(beta.ppf(0.05, k, n - k + 1))
    return 1.0 if k == n else float(beta.ppf(0.95, k + 1, n - k))


def rated(checks: list[Check], name: str) -> str:
    """Detected share with its 95% bound: lower for cheats, upper for honest (false positives)."""
    k, n = sum(c.outcome is Outcome.FAIL for c in checks), len(checks)
    if not n:
        return "-"
    honest = name == "honest"
    return f"{k / n:.1%} ({'≤' if honest else '≥'} {bound(k, n, lower=not honest):.1%})"


def stat_denoised_section(ctx: dict) -> list[str]:
    """Statistical mode on denoised jobs: whole frames against two other-seed renders."""
    res = ctx["stat_denoised"]["results"]
    lines = [
        "### Statistical mode on denoised jobs (whole frames)",
        "",
        "The same scenes saved with OpenImageDenoise on, every frame above; the verifier "
        "renders the whole frame with three seeds (triples 1/2/3, 2/3/1, 3/1/2: the job's and "
        "the next two) and judges the node's frame against them (`verifier.checker` skips "
        "tiles for denoised and volume scenes in statistical mode). Honest: the seed-0 node "
        "against every triple, and each of seeds 1-3 against the other two and the seed-0 "
        "frame. No tile draws: each (frame, triple) is one check.",
        "",
        "| strategy | held out: detected (95% bound) | n | all frames: detected (95% bound) | n "
        "| pooled noise variance ratio (min / median / max) | low-frequency ratio (min / median "
        "/ max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, checks in res.items():
        held = [c for c in checks if c.held_out]
        label = "honest (false positives)" if name == "honest" else name

        def mmm(values: list[float]) -> str:
            v = [x for x in values if not math.isnan(x)]
            return f"{min(v):.2f} / {np.median(v):.2f} / {max(v):.2f}" if v else "-"

        lines.append(
            f"| {label} | {rated(held, name)} | {len(held)} | {rated(checks, name)} | "
            f"{len(checks)} | {mmm([c.first_noise for c in checks])} | "
            f"{mmm([c.first_lowfreq for c in checks])} |")
    return [*lines, ""]


def write_report(path: Path, ctx: dict) -> None:
    res = ctx["checks"]["results"]
    honest_tiles = ctx["checks"]["honest_tiles"]
    lines = [
        "# Proof-of-Render: verification measurements",
        "",
        "Generated by `.venv/bin/python bench/verification_bench.py`"
        + (" --quick (smoke run: small numbers)" if ctx["quick"] else "")
        + f" in {ctx['elapsed']:.0f} s on this 2-core machine (bpy {ctx['blender']}, Cycles CPU).",
        "Every number below was measured in that run; rerun the command to reproduce them.",
        f"Run size: `{ctx['argv']}` (smaller than the defaults: the machine was shared).",
        "",
        CURRENT_NUMBERS,
        "",
        "## Setup",
        "",
        f"- Scenes: `samples/spinning_cube.blend` and `glossy_orbit` (built at run time by "
        f"`bench/scenes/build_scenes.py`: orbiting camera, metal/plastic/emissive spheres, area "
        f"light), 320x180, {SAMPLES} samples, frames {ctx['frames']}, saved as creators save "
        "them: adaptive sampling on (threshold 0.01), dither 1.0 (Blender's default), and a "
        "denoised copy of each (OpenImageDenoise). The farm renders them as saved.",
        "- Honest node: seed 0, 1 thread. Exact-mode verifier: seed 0, 2 threads; the pair "
        "with threads swapped (node 2, verifier 1) is an extra honest case. Statistical-mode "
        "verifier (another device class, simulated): the job's seed stood in by seed 1, 2 or 3 "
        "(the reference A), the next of them as the second reference B for tiles, and the "
        "third as C for the whole frame (triples 1/2/3, 2/3/1, 3/1/2); extra honest cases: a "
        "seed-4 node against every triple, and each of seeds 1-3 against the other three of "
        "seeds 1-4.",
        f"- Tiles of {ctx['tile']} px (64 px below 512-px frames, 128 px at HD), "
        f"{EXACT_TILES} per checked frame in exact mode and {STAT_TILES} in statistical mode, "
        "placed by `verifier.tiles.choose_tiles` (secret RNG, Latin hypercube, flat tiles "
        f"skipped); {ctx['draws']} independent tile draws per frame. Reference tiles are crops of "
        "full-frame renders: "
        f"{ctx['border'][0]}/{ctx['border'][1]} real border re-renders were pixel-identical to "
        "the crop" + ("." if ctx["border"][0] == ctx["border"][1] else
                      " (see Open: the full frames came from an earlier worker session, and a "
                      "warm worker's glossy_orbit renders after the other scene differ from a "
                      "fresh worker's)."),
        "- A checked frame: cheap checks (decodes, size, not blank, pixel-hash duplicate of "
        "another frame) → tiles → if grey, as many tiles again, pooled with the first → if "
        "still grey, the whole frame re-rendered by the verifier (statistically in statistical "
        "mode) → if still grey, passed (benefit of the doubt). \"Detected\" = final fail.",
        "",
        "## Detection per checked frame",
        "",
        "Statistical mode's pooled bounds were fitted on every other frame "
        f"({ctx['fit_frames']}: `--fit` prints their scores) and are validated on the others "
        f"(held out: {ctx['held_frames']}). Bounds are one-sided 95% Clopper-Pearson bounds on "
        "the detection (or false-positive) rate, counting each check as independent; checks of "
        "one frame share its renders (the draws differ only in where the tiles lie), so the "
        "independent evidence is smaller than n: the separation of the scores (below) is the "
        "stronger argument.",
        "",
        "| strategy | exact: detected | exact: n | stat, held out: detected (95% bound) | "
        "n | stat, all frames: detected (95% bound) | n | stat: grey→escalated | "
        "stat: whole frame |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in res["exact"]:
        ex, st = res["exact"][name], res["statistical"][name]
        held = [c for c in st if c.held_out]
        label = "honest (false positives)" if name == "honest" else name
        esc = sum(c.stage != "tiles" and c.stage != "cheap" for c in st) / max(1, len(st))
        full = sum(c.stage == "whole frame" for c in st) / max(1, len(st))
        lines.append(
            f"| {label} | {rate(ex):.1%} | {len(ex)} | {rated(held, name)} | {len(held)} | "
            f"{rated(st, name)} | {len(st)} | {esc:.1%} | {full:.1%} |"
        )
    direct = {
        n: sum(
            c.outcome is Outcome.FAIL and c.stage in ("cheap", "tiles", "more tiles") for c in st
        )
        / max(1, len(st))
        for n, st in res["statistical"].items()
        if n != "honest"
    }
    lines += [
        "",
        "Statistical mode without the whole-frame stage (tiles only, grey counted as not "
        "caught): " + ", ".join(f"{n} {v:.1%}" for n, v in direct.items()) + ".",
        "",
        *stat_denoised_section(ctx),
        "## False positives",
        "",
        f"- Exact mode: {sum(v.outcome is Outcome.FAIL for v in honest_tiles['exact'])} failed "
        f"and {sum(v.outcome is Outcome.GREY for v in honest_tiles['exact'])} grey of "
        f"{len(honest_tiles['exact'])} honest checked tiles; "
        f"{rate(res['exact']['honest']):.2%} of {len(res['exact']['honest'])} honest frames "
        "failed.",
        f"- Statistical mode: {sum(v.outcome is Outcome.FAIL for v in honest_tiles['statistical'])}"
        f" failed and {sum(v.outcome is Outcome.GREY for v in honest_tiles['statistical'])} grey "
        f"of {len(honest_tiles['statistical'])} honest checked tiles; "
        f"{rate(res['statistical']['honest']):.2%} of {len(res['statistical']['honest'])} honest "
        f"frames failed, {rate(res['statistical']['honest'], Outcome.PASS):.2%} passed "
        "(the rest was escalated and then passed; a pass after escalation is still a pass).",
        "",
        *denoised_section(ctx),
        "## Per-tile statistical scores (vs the seed-1 reference, seed 2 as second reference; "
        "5th / 50th / 95th percentile)",
        "",
        "| strategy | blurred SSIM | noise ratio (wavelet) | channel coherence Δ | noise "
        "variance ratio (one tile) | low-frequency ratio (one tile) | noise variance ratio "
        "(first tiles, pooled) | low-frequency ratio (first tiles, pooled) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, sc in ctx["scores"]:

        def q(k: str, sc=sc) -> str:
            x = sc.get(k)
            if x is None or not len(x):
                return "-"
            p5, p50, p95 = np.percentile(x, [5, 50, 95])
            return f"{p5:.3f} / {p50:.3f} / {p95:.3f}"

        key = "honest" if name.startswith("honest") else name
        checks = res["statistical"].get(key, [])
        sc = {**sc,
              "pooled": np.array([c.first_lowfreq for c in checks
                                  if not math.isnan(c.first_lowfreq)]),
              "pooled_noise": np.array([c.first_noise for c in checks
                                        if not math.isnan(c.first_noise)])}
        lines.append(
            f"| {name} | {q('ssim')} | {q('noise_ratio')} | {q('coherence_delta')} | "
            f"{q('variance')} | {q('lowfreq')} | {q('pooled_noise', sc)} | {q('pooled', sc)} |"
        )
    hs = ctx["scores"][0][1]
    honest = res["statistical"]["honest"]
    honest_pooled = [c.first_lowfreq for c in honest if not math.isnan(c.first_lowfreq)]
    honest_noise = [c.first_noise for c in honest if not math.isnan(c.first_noise)]
    lines += [
        "",
        f"Honest extremes (all {len(hs['ssim'])} tiles): SSIM ≥ {hs['ssim'].min():.3f}, noise "
        f"ratio {hs['noise_ratio'].min():.2f}-{hs['noise_ratio'].max():.2f}, coherence Δ ≥ "
        f"{hs['coherence_delta'].min():.3f}. Pooled over a checked frame's first "
        f"{STAT_TILES} tiles ({len(honest_noise)} honest checks): noise variance ratio "
        f"{min(honest_noise):.3f}-{max(honest_noise):.3f}, low-frequency ratio ≤ "
        f"{max(honest_pooled):.3f}.",
        "",
        "## Thresholds (`verifier.judge.Thresholds`)",
        "",
        "| test | pass | fail (grey between) |",
        "|---|---|---|",
    ]
    th = judge.DEFAULT_THRESHOLDS
    bands = [(label, judge.pooled_bands(px)) for label, px in (
        (f"{STAT_TILES} tiles of 64²", STAT_TILES * 64 * 64),
        (f"{2 * STAT_TILES} tiles of 64²", 2 * STAT_TILES * 64 * 64),
        ("whole 320x180 frame", 320 * 180), ("whole 1920x1080 frame", 1920 * 1080))]
    lines += [
        f"| exact: equal pixels / max abs diff | ≥ {th.exact_equal_fraction} and "
        f"≤ {th.exact_max_diff} "
        f"| < {th.exact_grey_equal_fraction} or > {th.exact_grey_max_diff} |",
        f"| blurred SSIM (sigma 1.5) | ≥ {th.ssim_pass} | < {th.ssim_fail} |",
        f"| noise ratio (tile) | {th.ratio_pass} | outside {th.ratio_fail} |",
        f"| channel coherence Δ | ≥ {th.coherence_pass} | < {th.coherence_fail} |",
        *(f"| pooled noise variance ratio, {label} | ({b.noise_pass[0]:.2f}, "
          f"{b.noise_pass[1]:.2f}) | outside ({b.noise_fail[0]:.2f}, {b.noise_fail[1]:.2f}) |"
          for label, b in bands),
        *(f"| pooled low-frequency ratio, {label} | ≤ {b.lowfreq_pass:.2f} | "
          f"> {b.lowfreq_fail:.2f} |" for label, b in bands),
        f"| same-seed noise correlation (when available) | ≥ {th.correlation_pass} | "
        f"< {th.correlation_fail} |",
        "",
        "Each per-tile pass bound lies outside the honest extremes above with a margin, and "
        "each fail bound a further margin away. The pooled bounds were fitted on the fitting "
        "frames only (`--fit`): pass bands just outside the honest fitting checks, fail bounds "
        "further out, below the weakest cheat's fitting checks. Honest frames in the grey band "
        f"({sum(c.stage != 'tiles' for c in honest) / max(1, len(honest)):.1%} of honest "
        "statistical checks here) escalate, which costs renders, never a false failure.",
        "",
        "## Reputation and adaptive checking",
        "",
        " ".join(reputation.__doc__.split("\n\n")[1].split()),
        "",
        "Monte-Carlo simulation of `coordinator.domain.reputation` (per-check detection = the "
        "weakest strategy's measured rate in that mode; false-positive rate per check as "
        "given; honest nodes also time out on 1% of frames):",
        "",
        "| mode | detection used | FP per check | "
        "new node cheating 10%: quarantined ≤ 100 frames | "
        "trusted node starts cheating 10%: caught ≤ 2,000 frames | honest: never quarantined "
        "in 10,000 frames |",
        "|---|---|---|---|---|---|",
    ]
    for mode, d, fp, q_new, n_new, c_old, n_old, ok_h, n_h in ctx["sim"]:
        lines.append(
            f"| {mode} | {d:.3f} | {fp:.4f} | {q_new:.1%} of {n_new} | {c_old:.1%} of "
            f"{n_old} | {ok_h}/{n_h} |"
        )
    stress = ctx["sim"][-1]
    lines += [
        "",
        f"The stress row assumes a false-positive rate of {stress[2]:g} per check, which no run "
        f"measured: then {stress[8] - stress[7]} of {stress[8]} honest nodes are quarantined "
        "within 10,000 frames, because two failures within 200 frames quarantine. The rule "
        "relies on the measured zero; if real devices ever show false positives, a second "
        "failure should first be confirmed by a full re-render on another trusted node.",
    ]
    c = ctx["cost"]
    # statistical mode renders every tile twice (the job's seed and a second seed)
    per_check = {"exact": EXACT_TILES * c["tile"], "statistical": 2 * STAT_TILES * c["tile"]}
    lines += [
        "",
        f"## Verification cost (sample scene at {c['size']}, 16 samples, 2 threads)",
        "",
        f"Measured: full frame {c['frame']:.1f} s ({c['frame_dn']:.1f} s denoised); one "
        f"{c['tile_px']}² tile with a 64-px margin on the denoised copy {c['tile_dn']:.2f} s; "
        f"one {c['tile_px']}² border tile re-render "
        f"{c['tile']:.2f} s (warm worker, persistent data); a {STAT_TILES}-tile statistical "
        f"check (each tile rendered with two seeds) including comparisons "
        f"{c['check_stat']:.2f} s. Cost share = checking rate x renders x tile time / frame "
        "time.",
        "",
        f"| trust level | checking rate | exact mode ({EXACT_TILES} tiles) | statistical "
        f"({STAT_TILES} tiles, 2 seeds) | exact, denoised job ({EXACT_TILES} tiles with a "
        "64-px margin) |",
        "|---|---|---|---|---|",
    ]
    run_floor = math.ceil(reputation.RATE_CONSTANT / reputation.RATE_FLOOR)
    levels = [
        ("probation (every frame)", 1.0),
        (f"{reputation.PROBATION_RUN} verified in a row", 0.5),
        (f"{int(reputation.RATE_CONSTANT * 10)} in a row", 0.10),
        (f"trusted (≥ {run_floor} in a row, floor)", reputation.RATE_FLOOR),
    ]
    for label, p in levels:
        lines.append(
            f"| {label} | {p:.0%} | {p * per_check['exact'] / c['frame']:.2%} | "
            f"{p * per_check['statistical'] / c['frame']:.2%} | "
            f"{p * EXACT_TILES * c['tile_dn'] / c['frame_dn']:.2%} |"
        )
    mix = 0.8 * reputation.RATE_FLOOR + 0.15 * 0.10 + 0.05 * 1.0
    lines += [
        "",
        f"A fleet with most nodes trusted (80% at the floor, 15% at 10%, 5% on probation) checks "
        f"{mix:.1%} of frames: {mix * per_check['exact'] / c['frame']:.2%} of render time in "
        f"exact mode, {mix * per_check['statistical'] / c['frame']:.2%} in statistical mode "
        "(escalations add a full frame for the grey share of honest statistical checks above). "
        "A denoised or volume job checked statistically renders its whole frame three times: "
        "300% of a frame per check on probation, "
        f"{3 * reputation.RATE_FLOOR:.0%} at the floor; checked exactly, one frame "
        "(plus the padded tiles before it) whenever the tiles are grey, which was every honest "
        "frame measured here.",
        "",
        "## Open",
        "",
        *ctx["open"],
    ]
    # The sections after HAND_WRITTEN (how the farm uses these numbers) are kept as they are.
    tail = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if HAND_WRITTEN in old:
            tail = "\n" + old[old.index(HAND_WRITTEN) :]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + tail, encoding="utf-8")


def denoised_section(ctx: dict) -> list[str]:
    """Exact mode on denoised jobs: detection, false positives, what the tiles scored."""
    dn = ctx["denoised"]
    res, honest_tiles = dn["results"], dn["honest_tiles"]
    th = judge.DEFAULT_THRESHOLDS
    lines = [
        "## Denoised jobs (exact mode, tiles re-rendered with a 64-px margin)",
        "",
        f"Frames {ctx['denoised_frames']} of both scenes saved with OpenImageDenoise on; "
        f"{ctx['denoised_draws']} tile draws per frame. The denoiser sees neighbouring pixels, "
        "so a "
        "tile is re-rendered with a 64-px margin and judged *close* (pass: max |Δ| ≤ "
        f"{th.close_max_diff} levels, ≥ {th.close_equal_fraction:.0%} equal pixels, mean |Δ| ≤ "
        f"{th.close_mean_diff}; fail: mean |Δ| > {th.close_fail_mean}); anything else "
        "escalates to more tiles, then to the whole frame "
        "re-rendered exactly (full denoised frames are bit-identical across 1 and 2 threads). "
        f"{dn['renders']} real tile renders, {dn['render_seconds'] / max(1, dn['renders']):.2f} "
        "s each.",
        "",
        "| strategy | detected | decided at tiles | more tiles | whole frame | n |",
        "|---|---|---|---|---|---|",
    ]
    for name, checks in res.items():
        label = "honest (false positives)" if name == "honest" else name
        stages = {st: sum(c.stage == st for c in checks) / max(1, len(checks))
                  for st in ("tiles", "more tiles", "whole frame")}
        cheap = sum(c.stage == "cheap" for c in checks) / max(1, len(checks))
        lines.append(
            f"| {label} | {rate(checks):.1%} | {stages['tiles'] + cheap:.1%} | "
            f"{stages['more tiles']:.1%} | {stages['whole frame']:.1%} | {len(checks)} |"
        )
    if honest_tiles:
        worst_max = max(v.scores["max_abs_diff"] for v in honest_tiles)
        worst_eq = min(v.scores["equal_fraction"] for v in honest_tiles)
        worst_mean = max(v.scores["mean_abs_diff"] for v in honest_tiles)
        lines += [
            "",
            f"Honest tiles ({len(honest_tiles)}): "
            f"{sum(v.outcome is Outcome.FAIL for v in honest_tiles)} failed, "
            f"{sum(v.outcome is Outcome.GREY for v in honest_tiles)} grey; worst max |Δ| "
            f"{worst_max:.0f}, lowest equal fraction {worst_eq:.3f}, highest mean |Δ| "
            f"{worst_mean:.3f}. The tile stage is a cheap filter; the exact whole frame decides "
            "whatever it leaves grey, so a grey honest tile costs one frame render, never a "
            "false failure.",
        ]
    whole = sum(c.stage == "whole frame" for c in res.get("honest", []))
    lines += [
        "",
        "Why this is as strong as verifying the noisy pass (the design the issue proposed: the "
        "node delivers its noisy image with albedo and normal passes, the verifier re-renders "
        "noisy tiles exactly and re-runs the denoiser on the node's noisy frame): a denoised "
        "frame passes only (a) when every checked tile is near-identical to the verifier's "
        "re-render with a margin (max |Δ| ≤ "
        f"{th.close_max_diff} levels, ≥ {th.close_equal_fraction:.0%} of pixels equal, mean "
        f"|Δ| ≤ {th.close_mean_diff}; a render with 3/4 of the samples differs by 7-15 levels "
        "in the same tiles), or (b) when the whole delivered frame is bit-identical to the "
        "verifier's own render of it. (b) is an exact check of every final pixel, where the "
        "noisy-pass design checks sampled tiles of the noisy pass exactly and the final pixels "
        "only as far as the denoiser re-run is deterministic; here "
        f"{whole} of {len(res.get('honest', []))} honest checks were decided by (b). The cost "
        "is the other way round: (b) is one frame render per checked denoised frame (plus the "
        "padded tiles before it), where the noisy-pass design needs a few tiles and one "
        "denoiser pass, and no extra passes to upload. Volume scenes are checked the same way.",
    ]
    return [*lines, ""]


HAND_WRITTEN = "<!-- hand-written below: bench/verification_bench.py keeps it as it is -->"


OPEN_ITEMS = [
    "- Cross-device behaviour is simulated with other seeds. A real GPU renders the job's seed "
    "with other floating-point paths: its noise may be partly shared with the verifier's "
    "same-seed reference A, which is why the node is compared with the second-seed render B "
    "only; it may also differ at low frequencies in ways two CPU seeds do not (light tree, "
    "texture filtering): the pooled bounds must be re-measured on a GPU before statistical "
    "mode is trusted across real devices. The same-seed noise-correlation test "
    "(`judge_tile(..., same_seed=True)`) is not used by the verifier until then.",
    "- Statistical mode renders every checked tile twice (the job's seed and a second seed): "
    "the pair is the per-tile calibration of the pooled tests (what an honest difference looks "
    "like in these very pixels), and the cost table counts both. On denoised and volume scenes "
    "it renders the whole frame three times.",
    "- Measured on two 16-sample scenes at 320x180 (64² tiles). Fog and EEVEE scenes are not "
    "calibrated in statistical mode: fog goes to the whole-frame statistical check like a "
    "denoised scene (measured only by one honest and one quarter-sample frame in "
    "`tests/integration/test_volume_eevee_verification.py`); an EEVEE frame has no seed "
    "noise, so the pooled variance tests say nothing there (NaN) and only the per-tile "
    "structure tests judge it.",
    "- Denoised scenes are checked on their noisy pass when the frame is OpenImageDenoise's "
    'output of it alone (one view layer, no compositing, no volume): "Denoised scenes on the '
    'noisy pass" below. Other denoised scenes (compositing, OptiX, volumes, several view '
    'layers) keep the routes measured here; in statistical mode their whole frames overlap '
    'with half-sample renders on both pooled scores (honest low-frequency up to 1.39, half '
    'samples from 1.34: about 98% detected), so such a job checked across device classes '
    "should rather go to a verifier of the node's class.",
    "- Flat tiles are skipped using the node's own image: a node could flatten regions to keep "
    "them from being checked. The blank check covers whole frames only; a low-resolution "
    "preview render by the verifier would close this.",
    "- Found while reusing renders (`--renders`): glossy_orbit frames rendered by a warm "
    "worker that had rendered the spinning cube's variants before differ from a fresh "
    "worker's render of the same file and settings by at most 2 levels on 0.09% of pixels "
    "(frame 1; two fresh workers agree exactly, and so do the warm worker's 1- and 2-thread "
    "renders). Some state carries across scenes in a warm Blender child. Exact mode sees "
    "such a tile as grey (near-identical), escalates, and passes a frame that stays grey, so "
    "it costs renders, not false failures; the cause is not found yet. A likely cause: the "
    "cached renders outlived a rebuilt scene file (glossy_orbit is built from scratch at every "
    "run); the noisy-pass bench saw the same thing that way, while fresh and warm workers "
    "agree exactly on one file (1 and 2 threads, denoiser on and off, after other scenes and "
    "sample counts).",
    "- Duplicate detection uses exact pixel hashes; the perceptual hash is computed but only a "
    "hint (legitimately still frames look alike).",
]


CURRENT_NUMBERS = (
    '**Which numbers are current.** Exact mode (same build and device class), denoiser off '
    'and on: the tables below. Statistical mode with the denoiser off: "Statistical mode on '
    'adaptive scenes" (held-out frames, the tests that run now; the statistical columns of '
    'the tables below measured the tests before them). Denoised scenes whose frame is the '
    'denoiser\'s output of the noisy pass alone, both modes: "Denoised scenes on the noisy '
    'pass" (`bench/noisy_pass_bench.py`). Denoised scenes the noisy pass cannot explain '
    '(compositing, OptiX, volumes, several view layers) keep the routes of "Denoised jobs" '
    'below and the whole-frame statistical check.'
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few frames and runs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "VERIFICATION.md")
    parser.add_argument("--frame-step", type=int, default=2, help="frames 1-24, every N")
    parser.add_argument("--cost-percentage", type=int, default=400,
                        help="cost measured at this %% of 320x180 (400: 1280x720)")
    parser.add_argument("--draws", type=int, default=6, help="tile draws per checked frame")
    parser.add_argument("--denoised-frames", type=int, default=6,
                        help="frames per scene checked as denoised jobs (real tile renders)")
    parser.add_argument("--denoised-draws", type=int, default=None,
                        help="tile draws per frame of exact-mode denoised jobs (default --draws)")
    parser.add_argument("--renders", type=Path, default=None,
                        help="keep full-frame renders here and reuse them on the next run")
    parser.add_argument("--fit", action="store_true",
                        help="print the pooled statistical scores on the fitting frames, stop")
    parser.add_argument("--render-only", action="store_true",
                        help="render (into --renders) and stop")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    frame_ids = [1, 9, 17] if args.quick else list(range(1, 25, args.frame_step))
    denoised_frames = frame_ids[:2] if args.quick else frame_ids[: args.denoised_frames]
    draws = 2 if args.quick else args.draws
    runs = (
        {"new": 200, "trusted": 100, "honest": 10}
        if args.quick
        else {"new": 2000, "trusted": 1000, "honest": 200}
    )
    with tempfile.TemporaryDirectory(prefix="vbench-") as tmp:
        work = Path(tmp)
        scenes = build_scenes(work)
        with BlenderWorker(threads=2, log_path=work / "blender.log") as worker:
            print("rendering ...", flush=True)
            cache = args.renders or work / "renders"
            cache.mkdir(parents=True, exist_ok=True)
            frames = render_all(worker, scenes, frame_ids, work, denoised_frames, cache)
            if args.render_only:
                return 0
            if args.fit:
                print(fit_report(frames, list(scenes), frame_ids, draws))
                return 0
            border = border_equals_crop(worker, scenes, frames, work, 4 if args.quick else 10)
            print(f"border tiles equal to crops: {border}; denoised jobs ...", flush=True)
            denoised = run_denoised_checks(worker, scenes, frames, denoised_frames,
                                           args.denoised_draws or draws, work)
            print(f"{denoised['renders']} denoised tiles rendered; measuring cost ...",
                  flush=True)
            cost = measure_cost(worker, work, args.cost_percentage)
            blender = worker.blender_version()
        print(f"renders done at {time.perf_counter() - t0:.0f} s; checking ...", flush=True)
        names = list(scenes)
        checks = run_checks(frames, names, frame_ids, draws)
        stat_denoised = run_stat_denoised_checks(frames, names, frame_ids)
        scores = tile_score_table(frames, names, frame_ids)
    detect = {
        mode: min(rate(v) for k, v in checks["results"][mode].items() if k != "honest")
        for mode in ("exact", "statistical")
    }
    detect["exact, denoised jobs"] = min(
        rate(v) for k, v in denoised["results"].items() if k != "honest"
    )
    n_honest = len(checks["results"]["exact"]["honest"]) + len(
        checks["results"]["statistical"]["honest"]
    )
    fp = (
        sum(
            rate(checks["results"][m]["honest"]) * len(checks["results"][m]["honest"])
            for m in ("exact", "statistical")
        )
        / n_honest
    )
    sim = simulation_table(detect, fp, runs)
    sim += simulation_table({"stress: FP 1e-3": detect["statistical"]}, 1e-3, runs)
    ctx = {
        "quick": args.quick,
        "argv": " ".join(["bench/verification_bench.py", *(argv if argv is not None
                                                              else sys.argv[1:])]),
        "elapsed": time.perf_counter() - t0,
        "blender": blender,
        "frames": f"{frame_ids[0]}-{frame_ids[-1]} (every {frame_ids[1] - frame_ids[0]})",
        "denoised_frames": ", ".join(map(str, denoised_frames)),
        "denoised": denoised,
        "stat_denoised": stat_denoised,
        "fit_frames": ", ".join(str(f) for f in frame_ids
                                if f not in held_out_frames(frame_ids)),
        "held_frames": ", ".join(str(f) for f in sorted(held_out_frames(frame_ids))),
        "tile": tiles.default_tile_size(320, 180),
        "draws": draws,
        "denoised_draws": args.denoised_draws or draws,
        "border": border,
        "checks": checks,
        "scores": scores,
        "sim": sim,
        "cost": cost,
        "open": OPEN_ITEMS,
    }
    write_report(args.out, ctx)
    print(f"wrote {args.out} in {ctx['elapsed']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

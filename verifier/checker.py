"""One frame's Proof-of-Render check, as the verifier runs it.

Cheap checks on every frame (decodes, size, not blank). When the coordinator
sampled the frame, tiles chosen with a secret RNG are re-rendered with
Blender's border render under the job's settings and judged: exactly when the
node shares our Blender build and device class, statistically otherwise (each tile
then also rendered with a second seed, to see what an honest difference looks like there).
A grey verdict escalates to as many tiles again, then to the whole frame.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from frameproof.blender.worker import BlenderWorker, RenderSettings
from verifier import metrics
from verifier.compare import (
    ImageDecodeError,
    Passes,
    exr_view,
    is_exr,
    load_exr,
    load_image,
    load_passes,
)
from verifier.judge import (
    FrameVerdict,
    Outcome,
    TileVerdict,
    judge_denoised,
    judge_frame,
    judge_tile,
)
from verifier.tiles import Tile, choose_tiles, crop

EXACT_TILES = 3  # one exact tile catches every cheat we tried; three cover the frame's thirds
STATISTICAL_TILES = 4  # statistical scores are pooled over the frame: more tiles, less noise


@dataclass(frozen=True)
class FrameJob:
    """What the verifier needs to know about the frame it checks."""

    blend: Path
    frame: int
    settings: RenderSettings
    width: int
    height: int
    node_blender_version: str
    node_device: str
    render_tiles: bool
    tile_count: int = EXACT_TILES  # statistical mode uses at least STATISTICAL_TILES
    # A Render Region (frameproof.region.FrameLayout): the rendered pixels in the node's file
    # (None: all of it) and where their top-left pixel is in the whole frame.
    area: Tile | None = None
    origin: tuple[int, int] = (0, 0)
    # the node's passes file (multilayer EXR) of a denoised frame checked on its noisy pass
    passes: Path | None = None


@dataclass
class CheckOutcome:
    passed: bool
    reason: str
    mode: str
    pixel_sha256: str = ""
    tiles: list[tuple[Tile, TileVerdict]] = field(default_factory=list)
    render_seconds: float = 0.0

    def details(self) -> dict[str, Any]:
        return {
            "tiles": [
                {
                    "x": t.x,
                    "y": t.y,
                    "w": t.w,
                    "h": t.h,
                    "outcome": v.outcome.value,
                    "reason": v.reason,
                    "scores": v.scores,
                }
                for t, v in self.tiles
            ],
            "render_seconds": round(self.render_seconds, 3),
        }


RenderReference = Callable[[Tile, int], np.ndarray]
"""``(tile, seed_offset) -> pixels``: the verifier's render of ``tile`` with the job's seed
(offset 0) or the one ``seed_offset`` after it (statistical mode's other references). A tile
covering the whole frame asks for a full render."""
WHOLE_FRAME_REFERENCES = 3  # statistical whole frames: the job's seed and the next two


@dataclass
class Judgement:
    """How a frame's tiles were judged, stage by stage (what the benchmark counts)."""

    verdict: FrameVerdict
    stage: str  # "tiles", "more tiles" or "whole frame"
    tiles: list[tuple[Tile, TileVerdict]]


def judge_with_escalation(
    image: np.ndarray,
    *,
    exact: bool,
    count: int,
    rng: random.Random,
    render: RenderReference,
    close: bool = False,
    bitwise: bool = False,
    pick_from: np.ndarray | None = None,
) -> Judgement:
    """Tiles, then as many tiles again pooled with the first when grey, then the whole frame.

    Shared by the verifier and ``bench/verification_bench.py``, so what is measured is what
    runs. The whole-frame stage re-renders the frame on the verifier (its device class); it may
    still be grey, and the caller decides what grey means there. ``close``: tiles of a denoised
    scene, judged near-identical (:func:`verifier.judge.judge_tile`); the whole frame is still
    judged exactly. ``bitwise``: ``image`` and the renders are EXR's linear float data, judged
    exactly bit for bit. ``count=0`` goes straight to the whole frame. ``pick_from``: the
    display view tiles are chosen on (where flat regions are told from detail), when
    ``image`` is linear float data.
    """
    checked: list[tuple[Tile, TileVerdict]] = []
    for stage in ("tiles", "more tiles"):
        chosen = choose_tiles(image if pick_from is None else pick_from, count, rng)
        for tile in chosen:
            checked.append((tile, _judge_tile(image, tile, exact, render, close, bitwise=bitwise)))
        verdict = judge_frame([v for _, v in checked])
        if verdict.outcome is not Outcome.GREY:
            return Judgement(verdict, stage, checked)
        if not chosen:
            break  # no detail anywhere: only the whole frame can tell
    height, width = image.shape[:2]
    whole = Tile(0, 0, width, height)
    tile_verdict = _judge_tile(image, whole, exact, render, references=WHOLE_FRAME_REFERENCES,
                               bitwise=bitwise)
    checked.append((whole, tile_verdict))
    return Judgement(judge_frame([tile_verdict], whole_frame=True), "whole frame", checked)


def _judge_tile(
    image: np.ndarray, tile: Tile, exact: bool, render: RenderReference, close: bool = False,
    references: int = 2, bitwise: bool = False,
) -> TileVerdict:
    reference = render(tile, 0)
    others = None if exact else [render(tile, k) for k in range(1, references)]
    return judge_tile(crop(image, tile), reference, exact=exact, second_reference=others,
                      close=close, bitwise=bitwise)


def check_frame(
    job: FrameJob,
    node_image_path: Path,
    worker: BlenderWorker,
    scratch: Path,
    rng: random.Random | None = None,
) -> CheckOutcome:
    """Judge the node's image of one frame.

    EXR frames: the cheap checks and the statistical metrics read the display view
    (:func:`verifier.compare.exr_view`); exact mode compares the linear float data bit for bit
    (same build and device render the same float32 bits). A denoised or close-mode scene is
    judged on the view's 8 bits, as PNG is.
    """
    exr = job.settings.output_format.upper() == "EXR"
    try:
        if is_exr(node_image_path) != exr:
            wanted = "OpenEXR" if exr else "PNG"
            return CheckOutcome(False, f"the frame is not the {wanted} image the job asked for",
                                "cheap")
        # Bounded before decoding: the job's size, or no decode at all.
        image = load_image(node_image_path, (job.width, job.height))
    except ImageDecodeError as error:
        return CheckOutcome(False, str(error), "cheap")
    except OSError as error:
        return CheckOutcome(False, f"the frame cannot be read: {error}", "cheap")
    cheap = metrics.check_frame(image, job.width, job.height)
    if not cheap.ok:
        return CheckOutcome(False, cheap.reason, "cheap")
    pixel_sha = metrics.pixel_hash(image)
    area = _area(job)
    if not metrics.empty_outside(image, area):
        return CheckOutcome(False, "the frame has pixels outside the scene's Render Region, "
                            "where Blender leaves it empty", "cheap", pixel_sha)
    if not job.render_tiles:
        return CheckOutcome(True, cheap.reason, "cheap", pixel_sha)
    exact = (
        job.node_blender_version == worker.blender_version()
        and job.node_device.upper() == worker.device.upper()
    )
    mode = "exact" if exact else "statistical"
    # How this scene's tiles are reproduced: alone (exact), with a margin (denoised or volume:
    # close), or only by the whole frame (Freestyle, burned-in stamps, EEVEE).
    plan = worker.tile_plan(job.blend, job.settings)
    strategy = plan.strategy
    if strategy == "noisy":
        if area != Tile(0, 0, job.width, job.height):
            raise OSError("a noisy-pass plan for a Render Region: the verifier's Blender child "
                          "and this checker disagree")
        return _check_noisy_pass(job, node_image_path, worker, scratch, exact, plan.seed,
                                 rng or random.SystemRandom(), pixel_sha)
    close = strategy in ("padded", "close")
    if close:  # tiles with a margin, judged close; the whole frame exactly
        mode += ", denoised" if strategy == "padded" else ", close"
    bitwise = exact and exr and not close
    if bitwise:
        mode += ", float bits"
        try:
            image = load_exr(node_image_path, (job.width, job.height))
        except ImageDecodeError as error:
            return CheckOutcome(False, str(error), "cheap", pixel_sha)
    outcome = CheckOutcome(False, "", mode, pixel_sha)
    image = crop(image, area)  # tiles are chosen and judged on the rendered pixels
    render = _tile_renderer(job, worker, scratch, outcome, plan.seed, raw=bitwise)
    count = job.tile_count if exact else max(job.tile_count, STATISTICAL_TILES)
    if strategy == "whole" or (close and not exact):
        # Statistical mode compares the node's pixels with two of our renders; a tile with a
        # margin is not the frame's region (the denoiser's exposure, a volume's paths), which
        # would bias that comparison, so denoised and volume scenes are judged on whole frames.
        count = 0
        outcome.mode = mode = f"{mode.split(',')[0]}, whole frame"  # stored in 32 characters
    judged = judge_with_escalation(
        image, exact=exact, count=count, rng=rng or random.SystemRandom(), render=render,
        close=close and exact, bitwise=bitwise,
        pick_from=exr_view(image) if bitwise else None,
    )
    outcome.tiles = judged.tiles
    verdict = judged.verdict
    if verdict.outcome is Outcome.GREY:
        # Still undecided on the whole frame: the benefit of the doubt goes to the node,
        # and the grey result is recorded for the operator and the thresholds' owners.
        outcome.passed = True
        outcome.reason = f"grey after a full re-render, passed: {verdict.reason}"
        return outcome
    outcome.passed = verdict.outcome is Outcome.PASS
    outcome.reason = verdict.reason
    return outcome


def _check_noisy_pass(
    job: FrameJob, node_image_path: Path, worker: BlenderWorker, scratch: Path, exact: bool,
    seed: int, rng: random.Random, pixel_sha: str,
) -> CheckOutcome:
    """A denoised frame checked on the passes the node returned with it
    (:func:`judge_noisy_pass`): reads the files, re-runs the denoiser, renders the tiles."""
    outcome = CheckOutcome(False, "", f"{'exact' if exact else 'statistical'}, noisy pass",
                           pixel_sha)
    if job.passes is None:
        outcome.reason = ("the scene is denoised, and the frame came without its render passes "
                          "(noisy image, albedo, normal), which its check needs")
        return outcome
    try:
        passes = load_passes(job.passes, (job.width, job.height))
    except ImageDecodeError as error:
        outcome.reason = f"its render passes do not decode: {error}"
        return outcome
    exr = job.settings.output_format.upper() == "EXR"
    denoised = scratch / f"denoised-{job.frame}{'.exr' if exr else '.png'}"
    noisy_view = scratch / f"noisy-view-{job.frame}.png"
    try:
        start = time.perf_counter()
        worker.denoise_passes(job.blend, job.frame, job.passes, denoised, job.settings,
                              noisy_output=noisy_view)
        outcome.render_seconds += time.perf_counter() - start
        try:  # EXR frames as their display view: another CPU's denoiser rounds differently
            node, rerun = load_image(node_image_path), load_image(denoised)
            view = load_image(noisy_view)
        except ImageDecodeError as error:
            raise OSError(f"the verifier's denoiser output does not decode: {error}") from None
    finally:
        denoised.unlink(missing_ok=True)
        noisy_view.unlink(missing_ok=True)
    judged = judge_noisy_pass(
        node, passes, view, rerun, exact=exact,
        count=job.tile_count if exact else max(job.tile_count, STATISTICAL_TILES), rng=rng,
        render=_noisy_renderer(job, worker, scratch, outcome, seed),
    )
    outcome.tiles = judged.tiles
    outcome.passed = judged.verdict.outcome is not Outcome.FAIL
    outcome.reason = judged.verdict.reason
    return outcome


@dataclass(frozen=True)
class NoisyRender:
    """The verifier's render of a noisy pass: its passes (linear) and how the scene's view
    transform shows the noisy image (display values in [0, 1], what a frame's PNG holds)."""

    passes: Passes
    view: np.ndarray


RenderNoisy = Callable[[Tile, int], NoisyRender]
"""``(tile, seed_offset) -> render``: the verifier's render of ``tile``'s noisy pass (arrays of
the frame's size; only the tile's region is read), with the job's seed or one after it."""
GUIDE_RATIO_FAIL = 4.0  # node's guide error over an honest pair's (statistical mode)
GUIDE_FLOOR = 0.01  # mean |Δ| a guide may differ by whatever the honest pair shows


def judge_noisy_pass(
    node: np.ndarray, passes: Passes, noisy_view: np.ndarray, rerun: np.ndarray, *,
    exact: bool, count: int, rng: random.Random, render: RenderNoisy,
) -> Judgement:
    """Judge a denoised frame by what it costs: its noisy render.

    (1) The scene's own denoiser re-run on the node's passes (``rerun``) must give the node's frame
    (exactly on the same build and device class; close otherwise, where another denoiser build
    rounds differently: :func:`verifier.judge.judge_denoised`). (2) Tiles of the noisy pass are
    judged like a frame without a denoiser, with the same escalation, on ``noisy_view`` (the
    node's noisy pass through the scene's view transform, as the verifier's denoiser-off
    renders show it: the 8-bit images both modes were calibrated on, with their grey band for a
    build or CPU that rounds a little differently, which float bits have not). (3) The guide
    passes the denoiser read must be the scene's: near the verifier's renders. A grey verdict
    at the end passes, as for other frames. Shared by the verifier and
    ``bench/noisy_pass_bench.py``.
    """
    height, width = node.shape[:2]
    whole = Tile(0, 0, width, height)
    denoise = judge_denoised(node, rerun, exact=exact)
    tiles: list[tuple[Tile, TileVerdict]] = [(whole, denoise)]
    if denoise.outcome is Outcome.FAIL:
        reason = f"the frame is not the scene's denoiser output of its own passes: " \
                 f"{denoise.reason}"
        return Judgement(FrameVerdict(Outcome.FAIL, reason), "denoiser", tiles)
    rendered: dict[Tile, list[Passes]] = {}

    def noisy_tile(tile: Tile, seed_offset: int) -> np.ndarray:
        ours = render(tile, seed_offset)
        rendered.setdefault(tile, []).append(ours.passes)
        return crop(ours.view, tile)

    judged = judge_with_escalation(noisy_view, exact=exact, count=count, rng=rng,
                                   render=noisy_tile)
    tiles.extend(judged.tiles)
    verdict = judged.verdict
    if verdict.outcome is Outcome.FAIL:
        return Judgement(FrameVerdict(Outcome.FAIL, f"noisy pass: {verdict.reason}"),
                         judged.stage, tiles)
    guides = _judge_guides(passes, rendered, exact)
    if guides:
        return Judgement(FrameVerdict(Outcome.FAIL, guides), judged.stage, tiles)
    note = "" if denoise.outcome is Outcome.PASS else f" (denoiser re-run grey: {denoise.reason})"
    if verdict.outcome is Outcome.GREY:
        reason = f"noisy pass grey after a full re-render, passed: {verdict.reason}{note}"
        return Judgement(FrameVerdict(Outcome.GREY, reason), judged.stage, tiles)
    return Judgement(FrameVerdict(Outcome.PASS, f"noisy pass: {verdict.reason}{note}"),
                     judged.stage, tiles)


def _judge_guides(passes: Passes, rendered: dict[Tile, list[Passes]], exact: bool) -> str:
    """"" when the node's albedo and normal passes match the verifier's renders of the same tiles,
    else why not. Exact mode: mean |Δ| at most :data:`GUIDE_FLOOR` (identical on one
    machine; other CPUs of the class may round differently). Statistical mode: the guides
    barely depend on the seed, so the node's mean difference from the job-seed render may be
    at most a few times the difference of two honest renders."""
    for tile, ours in rendered.items():
        for name in ("albedo", "normal"):
            node = crop(getattr(passes, name), tile)
            ref = crop(getattr(ours[0], name), tile)
            if exact:
                node_diff = float(np.mean(np.abs(node - ref)))
                if node_diff > GUIDE_FLOOR:
                    return (f"the {name} pass the denoiser read differs from the re-render at "
                            f"{tile} (mean |Δ| {node_diff:.4f})")
                continue
            if len(ours) < 2:
                continue
            node_diff = float(np.mean(np.abs(node - ref)))
            honest = float(np.mean(np.abs(crop(getattr(ours[1], name), tile) - ref)))
            if node_diff > GUIDE_RATIO_FAIL * honest + GUIDE_FLOOR:
                return (f"the {name} pass the denoiser read differs from the scene's at {tile} "
                        f"(mean |Δ| {node_diff:.4f}, honest renders {honest:.4f})")
    return ""


def _noisy_renderer(
    job: FrameJob, worker: BlenderWorker, scratch: Path, outcome: CheckOutcome, seed: int,
) -> RenderNoisy:
    """Border renders of the job's frame with the denoiser off and its passes kept (the noisy
    pass, bit-identical to the node's, and both guides in one render), timed into
    ``outcome``."""
    count = 0

    def render(tile: Tile, seed_offset: int) -> NoisyRender:
        nonlocal count
        count += 1
        frame = scratch / f"noisy-{job.frame}-{count}.png"
        passes_file = scratch / f"noisy-{job.frame}-{count}.exr"
        whole = (tile.x, tile.y, tile.w, tile.h) == (0, 0, job.width, job.height)
        settings = replace(job.settings, output_format="PNG")
        if seed_offset:
            settings = replace(settings, seed=seed + seed_offset)
        start = time.perf_counter()
        try:
            result = worker.render_frame(job.blend, job.frame, frame, settings,
                                         tile=None if whole else (tile.x, tile.y, tile.w, tile.h),
                                         passes=passes_file, noisy_pass=True)
            outcome.render_seconds += time.perf_counter() - start
            if result.passes is None:
                raise OSError("the verifier's render wrote no passes for a noisy-pass scene")
            try:
                return NoisyRender(
                    load_passes(passes_file, (job.width, job.height), noisy="Combined"),
                    load_image(frame))
            except ImageDecodeError as error:
                raise OSError(f"the verifier's own passes do not decode: {error}") from None
        finally:
            frame.unlink(missing_ok=True)
            passes_file.unlink(missing_ok=True)

    return render


def _area(job: FrameJob) -> Tile:
    return job.area or Tile(0, 0, job.width, job.height)


def _tile_renderer(
    job: FrameJob, worker: BlenderWorker, scratch: Path, outcome: CheckOutcome, seed: int,
    raw: bool = False,
) -> RenderReference:
    """Border renders of the job's frame under its settings, timed into ``outcome``.

    Tiles are in the coordinates of the frame's rendered area (``_area``): the whole file,
    or its Render Region; a tile covering all of it asks for the frame as the node rendered it.

    ``raw``: an EXR job's renders as their linear float data, not the display view.

    ``seed`` is the one the job renders with (the scene's own unless the creator overrode it);
    statistical mode's other references use the next ones.
    """
    count = 0
    area = _area(job)

    def render(tile: Tile, seed_offset: int) -> np.ndarray:
        nonlocal count
        count += 1
        suffix = ".exr" if job.settings.output_format.upper() == "EXR" else ".png"
        output = scratch / f"tile-{job.frame}-{count}{suffix}"
        whole = (tile.x, tile.y, tile.w, tile.h) == (0, 0, area.w, area.h)
        in_frame = Tile(tile.x + job.origin[0], tile.y + job.origin[1], tile.w, tile.h)
        start = time.perf_counter()
        worker.render_frame(
            job.blend,
            job.frame,
            output,
            replace(job.settings, seed=seed + seed_offset) if seed_offset else job.settings,
            tile=None if whole else (in_frame.x, in_frame.y, in_frame.w, in_frame.h),
        )
        outcome.render_seconds += time.perf_counter() - start
        try:  # the verifier's own render: failing to read it is our trouble, not the node's
            reference = load_exr(output) if raw else load_image(output)
        except ImageDecodeError as error:
            raise OSError(f"the verifier's own render does not decode: {error}") from None
        finally:
            output.unlink(missing_ok=True)
        # A tile's file has the whole frame's size (dither is hashed by pixel position).
        return crop(reference, area) if whole else crop(reference, in_frame)

    return render

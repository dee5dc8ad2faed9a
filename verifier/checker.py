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
from verifier.compare import ImageDecodeError, is_exr, load_exr, load_image
from verifier.judge import FrameVerdict, Outcome, TileVerdict, judge_frame, judge_tile
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
) -> Judgement:
    """Tiles, then as many tiles again pooled with the first when grey, then the whole frame.

    Shared by the verifier and ``bench/verification_bench.py``, so what is measured is what
    runs. The whole-frame stage re-renders the frame on the verifier (its device class); it may
    still be grey, and the caller decides what grey means there. ``close``: tiles of a denoised
    scene, judged near-identical (:func:`verifier.judge.judge_tile`); the whole frame is still
    judged exactly. ``bitwise``: ``image`` and the renders are EXR's linear float data, judged
    exactly bit for bit. ``count=0`` goes straight to the whole frame.
    """
    checked: list[tuple[Tile, TileVerdict]] = []
    for stage in ("tiles", "more tiles"):
        chosen = choose_tiles(image, count, rng)
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


def _tile_renderer(
    job: FrameJob, worker: BlenderWorker, scratch: Path, outcome: CheckOutcome, seed: int,
    raw: bool = False,
) -> RenderReference:
    """Border renders of the job's frame under its settings, timed into ``outcome``.

    ``raw``: an EXR job's renders as their linear float data, not the display view.

    ``seed`` is the one the job renders with (the scene's own unless the creator overrode it);
    statistical mode's other references use the next ones.
    """
    count = 0

    def render(tile: Tile, seed_offset: int) -> np.ndarray:
        nonlocal count
        count += 1
        suffix = ".exr" if job.settings.output_format.upper() == "EXR" else ".png"
        output = scratch / f"tile-{job.frame}-{count}{suffix}"
        whole = (tile.x, tile.y, tile.w, tile.h) == (0, 0, job.width, job.height)
        start = time.perf_counter()
        worker.render_frame(
            job.blend,
            job.frame,
            output,
            replace(job.settings, seed=seed + seed_offset) if seed_offset else job.settings,
            tile=None if whole else (tile.x, tile.y, tile.w, tile.h),
        )
        outcome.render_seconds += time.perf_counter() - start
        try:  # the verifier's own render: failing to read it is our trouble, not the node's
            reference = load_exr(output) if raw else load_image(output)
        except ImageDecodeError as error:
            raise OSError(f"the verifier's own render does not decode: {error}") from None
        finally:
            output.unlink(missing_ok=True)
        # The file has the frame's size (dither is hashed by pixel position): crop the tile.
        return reference if whole else crop(reference, tile)

    return render

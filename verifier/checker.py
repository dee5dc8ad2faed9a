"""One frame's Proof-of-Render check, as the verifier runs it.

Cheap checks on every frame (decodes, size, not blank). When the coordinator
sampled the frame, tiles chosen with a secret RNG are re-rendered with
Blender's border render under the job's settings and judged: exactly when the
node shares our Blender build and device class, statistically otherwise. A grey
verdict escalates to more tiles, then to the whole frame.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frameproof.blender.worker import BlenderWorker, RenderSettings
from verifier import metrics
from verifier.judge import FrameVerdict, Outcome, TileVerdict, judge_frame, judge_tile
from verifier.tiles import Tile, choose_tiles, crop, to_border

ESCALATION_TILES = 3  # added when the first tiles are grey


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
    tile_count: int = 3


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


def check_frame(
    job: FrameJob,
    node_image_path: Path,
    worker: BlenderWorker,
    scratch: Path,
    rng: random.Random | None = None,
) -> CheckOutcome:
    """Judge the node's image of one frame."""
    image = metrics.decode_frame(node_image_path)
    cheap = metrics.check_frame(image, job.width, job.height)
    if not cheap.ok or image is None:
        return CheckOutcome(False, cheap.reason, "cheap")
    pixel_sha = metrics.pixel_hash(image)
    if not job.render_tiles:
        return CheckOutcome(True, cheap.reason, "cheap", pixel_sha)
    rng = rng or random.SystemRandom()
    exact = (
        job.node_blender_version == worker.blender_version()
        and job.node_device.upper() == worker.device.upper()
    )
    mode = "exact" if exact else "statistical"
    outcome = CheckOutcome(False, "", mode, pixel_sha)
    tiles = choose_tiles(image, job.tile_count, rng)
    verdict = _judge(job, image, tiles, worker, scratch, exact, outcome)
    if verdict.outcome is Outcome.GREY and tiles:
        more = choose_tiles(image, ESCALATION_TILES, rng)
        verdict = _judge(job, image, more, worker, scratch, exact, outcome)
    if verdict.outcome is Outcome.GREY:
        whole = Tile(0, 0, job.width, job.height)
        verdict = _judge(job, image, [whole], worker, scratch, exact, outcome, border=False)
        if verdict.outcome is Outcome.GREY:
            # Still undecided on the whole frame: the benefit of the doubt goes to the node,
            # and the grey result is recorded for the operator and the thresholds' owners.
            outcome.passed = True
            outcome.reason = f"grey after a full re-render, passed: {verdict.reason}"
            return outcome
    outcome.passed = verdict.outcome is Outcome.PASS
    outcome.reason = verdict.reason
    return outcome


def _judge(
    job: FrameJob,
    image: np.ndarray,
    tiles: list[Tile],
    worker: BlenderWorker,
    scratch: Path,
    exact: bool,
    outcome: CheckOutcome,
    *,
    border: bool = True,
) -> FrameVerdict:
    verdicts: list[TileVerdict] = []
    for index, tile in enumerate(tiles):
        output = scratch / f"tile-{job.frame}-{index}-{len(outcome.tiles)}.png"
        start = time.perf_counter()
        worker.render_frame(
            job.blend,
            job.frame,
            output,
            job.settings,
            border=to_border(tile, job.width, job.height) if border else None,
        )
        outcome.render_seconds += time.perf_counter() - start
        reference = metrics.decode_frame(output)
        output.unlink(missing_ok=True)
        assert reference is not None, "the verifier's own render does not decode"
        verdict = judge_tile(crop(image, tile), reference, exact=exact, same_seed=True)
        verdicts.append(verdict)
        outcome.tiles.append((tile, verdict))
    return judge_frame(verdicts)

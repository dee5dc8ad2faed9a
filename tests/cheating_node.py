"""A render node that cheats, for tests only: it speaks the real protocol and lies in its pixels.

Usage: python tests/cheating_node.py --coordinator ADDR --work-dir DIR --strategy NAME
       [--device CLASS]

It is the real :class:`render_node.daemon.RenderNode` (register, lease, heartbeat, upload,
complete) with one method overridden: how a frame's pixels are made. Strategies:

- ``quarter-samples``: renders with a quarter of the job's samples (the cheap, plausible lie);
- ``blank``: a black frame; ``flat-colour``: the frame's mean colour everywhere;
- ``noise``: random pixels; ``shift``: the honest frame rolled 1 px;
- ``honest``: no lie in the pixels (with ``--device``: an honest node of another class).

``--claim-seconds inf`` (say) reports that render time for every frame, whatever it was.
``--device CUDA`` (say) makes the node claim another device class than the verifier's CPU, so
the verifier judges its frames in statistical mode, as it would a real GPU node's.

``--time-factor 50 --claim-score 20`` make it lie about its work instead: it reports 50x its
real render time and a benchmark score of 20 (written where `render-node benchmark` saves it).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from frameproof.blender.worker import RenderResult, RenderSettings
from frameproof.client import coordinator_address
from render_node.daemon import NodeConfig, RenderNode
from render_node.sysinfo import save_benchmark

DEFAULT_SAMPLES = 16  # what "the scene's own" is taken to be when a lease leaves samples at 0


def _blank(pixels: np.ndarray) -> np.ndarray:
    black = np.zeros_like(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        black[..., 3] = pixels[..., 3]
    return black


def _flat_colour(pixels: np.ndarray) -> np.ndarray:
    flat = np.empty_like(pixels)
    flat[...] = pixels.reshape(-1, pixels.shape[-1]).mean(axis=0).astype(pixels.dtype)
    return flat


def _noise(pixels: np.ndarray) -> np.ndarray:
    top = np.iinfo(pixels.dtype).max if np.issubdtype(pixels.dtype, np.integer) else 1.0
    noisy = np.random.default_rng().uniform(0, top, pixels.shape).astype(pixels.dtype)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        noisy[..., 3] = pixels[..., 3]  # keep alpha: the lie is in the colours
    return noisy


def _shift(pixels: np.ndarray) -> np.ndarray:
    return np.roll(pixels, 1, axis=1)


TAMPER: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "blank": _blank,
    "flat-colour": _flat_colour,
    "noise": _noise,
    "shift": _shift,
}
STRATEGIES = ("quarter-samples", "honest", *TAMPER)


class CheatingNode(RenderNode):
    """A RenderNode whose frames are wrong in a chosen way; everything else is honest."""

    def __init__(self, config: NodeConfig, strategy: str, device: str = "",
                 claim_seconds: float | None = None, time_factor: float = 1.0) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
        super().__init__(config)
        self.strategy = strategy
        self.device = device
        self.claim_seconds = claim_seconds
        self.time_factor = time_factor

    def _render_frame(self, blend: Path, frame: int, output: Path,
                      settings: RenderSettings, *, passes: Path | None = None) -> RenderResult:
        # The passes file comes from the same (cheating) render; only the frame is tampered.
        result = self._pixels(blend, frame, output, settings, passes)
        if self.claim_seconds is not None:
            result = dataclasses.replace(result, seconds=self.claim_seconds)
        if self.time_factor != 1.0:
            result = dataclasses.replace(result, seconds=result.seconds * self.time_factor)
        return dataclasses.replace(result, device=self.device) if self.device else result

    def _pixels(self, blend: Path, frame: int, output: Path,
                settings: RenderSettings, passes: Path | None) -> RenderResult:
        if self.strategy == "quarter-samples":
            samples = max(1, (settings.samples or DEFAULT_SAMPLES) // 4)
            return super()._render_frame(blend, frame, output,
                                         dataclasses.replace(settings, samples=samples),
                                         passes=passes)
        result = super()._render_frame(blend, frame, output, settings, passes=passes)
        if self.strategy == "honest":
            return result
        pixels = cv2.imread(str(result.output), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise ValueError(f"{result.output} does not decode; cannot tamper with it")
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if not cv2.imwrite(str(result.output), TAMPER[self.strategy](pixels)):
            raise ValueError(f"could not write the tampered frame {result.output}")
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cheating_node", description=__doc__)
    parser.add_argument("--coordinator")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--strategy", choices=STRATEGIES, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="cheater")
    parser.add_argument("--device", default="", help="claim this device class (e.g. CUDA)")
    parser.add_argument("--claim-seconds", type=float,
                        help="report this render time for every frame (e.g. inf)")
    parser.add_argument("--time-factor", type=float, default=1.0,
                        help="report this many times the real render time")
    parser.add_argument("--claim-score", type=float, default=0.0,
                        help="claim this benchmark score (0: whatever was measured)")
    args = parser.parse_args(argv)
    if args.claim_score > 0:
        save_benchmark(args.work_dir, args.claim_score, 0.01)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node = CheatingNode(NodeConfig(coordinator=coordinator_address(args.coordinator),
                                   work_dir=args.work_dir, threads=args.threads,
                                   name=args.name), args.strategy, args.device,
                        args.claim_seconds, args.time_factor)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: node.stop())
    print(f"cheating node {node.node_id} ({args.strategy}) working for "
          f"{node.config.coordinator}", flush=True)
    node.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

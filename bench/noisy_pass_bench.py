"""Denoised jobs verified on their noisy pass: detection per checked frame, both modes.

    PYTHONPATH=. .venv/bin/python bench/noisy_pass_bench.py [--frames 1 7 13 19] [--draws 6]

Scenes: ``spinning_cube`` and ``glossy_orbit`` saved denoised (OpenImageDenoise, adaptive
sampling, 320x180, 16 samples; ``bench/scenes/build_scenes.py``). Every render is a full frame
with its passes (``BlenderWorker.render_frame(passes=...)``); the verifier's references are
its renders with the denoiser off (``noisy_pass=True``), and their tiles are crops of those
full frames (a border tile's passes equal the frame's region:
``tests/integration/test_noisy_pass_verification.py``). Frames are judged by the verifier's
own ``verifier.checker.judge_noisy_pass``, with its denoiser re-run
(``BlenderWorker.denoise_passes``, which also shows the node's noisy pass through the scene's
view) on each node's passes file.

A cheater here controls its passes and runs the denoiser on them itself, so its frame is
always the denoiser's output of the passes it returns ("consistent"), except for the last
strategy, which returns honest passes next to a cheaper frame. Exact mode: node 1 thread,
verifier 2, the job's seed. Statistical mode: nodes render seeds +10 and +11 (another device's
noise), the verifier the job's seed and the next two.
"""

# ruff: noqa: B023 - each strategy closure is called in the loop iteration that defines it

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.verification_bench import bound, build_scenes  # noqa: E402
from frameproof.blender import BlenderWorker, RenderSettings  # noqa: E402
from verifier.checker import (  # noqa: E402
    EXACT_TILES,
    STATISTICAL_TILES,
    NoisyRender,
    judge_noisy_pass,
)
from verifier.compare import Passes, load_image, load_passes  # noqa: E402
from verifier.judge import Outcome  # noqa: E402
from verifier.tiles import Tile  # noqa: E402

SAMPLES = 16
STAT_SEEDS = (10, 11)  # node seeds (offsets from the job's) standing in for other devices


@dataclass
class Output:
    """What a node returns: its frame (display, float) and its passes (file and arrays)."""

    frame: np.ndarray
    passes_file: Path
    passes: Passes


class Renders:
    """Full-frame renders with passes, cached on disk per (scene, frame, variant)."""

    def __init__(self, worker: BlenderWorker, node: BlenderWorker, work: Path) -> None:
        self.worker, self.node, self.work = worker, node, work
        self.seconds = 0.0
        self.count = 0

    def get(self, blend: Path, frame: int, name: str, settings: RenderSettings,
            node: bool = False, noisy: bool = False) -> Output:
        size = (320, 180) if settings.resolution_percentage != 50 else (160, 90)
        png = self.work / "renders" / f"{blend.stem}-{frame}-{name}.png"
        exr = png.with_suffix(".exr")
        if not (png.exists() and exr.exists()):
            start = time.perf_counter()
            (self.node if node else self.worker).render_frame(blend, frame, png, settings,
                                                              passes=exr, noisy_pass=noisy)
            self.seconds += time.perf_counter() - start
            self.count += 1
        return Output(load_image(png), exr,
                      load_passes(exr, size, noisy="Combined" if noisy else "Noisy Image"))


def write_passes(template: Path, out: Path, noisy: np.ndarray, albedo: np.ndarray,
                 normal: np.ndarray) -> Path:
    """A passes file like Blender's (same parts and channel names) holding the given arrays
    (BGR / ZYX order, as ``load_passes`` returns them)."""
    import OpenEXR

    planes = {"Noisy Image": (noisy, "BGR"), "Denoising Albedo": (albedo, "BGR"),
              "Denoising Normal": (normal, "ZYX")}
    source = OpenEXR.File(str(template), separate_channels=True)
    parts = []
    for part in source.parts:
        name = part.name()
        short = name.rsplit(".", 1)[-1]
        channels = {key: np.array(value.pixels) for key, value in part.channels.items()}
        if short in planes:
            array, letters = planes[short]
            for i, letter in enumerate(letters):
                channels[f"{name}.{letter}"] = np.ascontiguousarray(array[:, :, i], np.float32)
        parts.append(OpenEXR.Part({"type": OpenEXR.scanlineimage,
                                   "compression": OpenEXR.ZIP_COMPRESSION}, channels, name=name))
    OpenEXR.File(parts).write(str(out))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 7, 13, 19])
    parser.add_argument("--draws", type=int, default=6, help="tile draws per checked frame")
    parser.add_argument("--work", type=Path, default=Path("/tmp/noisy_pass_bench"))
    parser.add_argument("--write", action="store_true",
                        help="write the tables into docs/VERIFICATION.md and BENCHMARKS.md")
    args = parser.parse_args()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    work = args.work
    (work / "renders").mkdir(parents=True, exist_ok=True)
    (work / "forged").mkdir(parents=True, exist_ok=True)
    # Built once per work dir: the cached renders belong to these files (glossy_orbit is built
    # from scratch, and a rebuilt file renders slightly differently).
    built = {name: work / "scenes" / f"{name}_denoised.blend"
             for name in ("spinning_cube", "glossy_orbit")}
    scenes = built if all(p.exists() for p in built.values()) else \
        {name: pair[1] for name, pair in build_scenes(work).items()}
    names = list(scenes)
    frames = args.frames
    results: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    stages: dict[tuple[str, str], list[str]] = defaultdict(list)
    denoise_seconds: list[float] = []
    with BlenderWorker(threads=2) as worker, BlenderWorker(threads=1) as node_worker:
        renders = Renders(worker, node_worker, work)
        seed = worker.tile_plan(scenes[names[0]], RenderSettings()).seed

        def rerun(out: Output, key: str) -> tuple[np.ndarray, np.ndarray]:
            """The verifier's denoiser on the node's passes (a consistent cheater's frame) and
            the node's noisy pass through the scene's view."""
            png = work / "forged" / f"{key.replace('|', '-')}.png"
            view = png.with_name(png.stem + "-view.png")
            if not (png.exists() and view.exists()):
                start = time.perf_counter()
                worker.denoise_passes(blend_of[key.split("|")[0]], int(key.split("|")[1]),
                                      out.passes_file, png, RenderSettings(), noisy_output=view)
                denoise_seconds.append(time.perf_counter() - start)
            return load_image(png), load_image(view)

        blend_of = scenes
        for scene_name, blend in scenes.items():
            other_scene = scenes[names[1 - names.index(scene_name)]]
            for frame in frames:
                refs = [renders.get(blend, frame, f"nref{k}",
                                    RenderSettings(seed=seed + k) if k else RenderSettings(),
                                    noisy=True)
                        for k in range(3)]

                def render_ref(tile: Tile, offset: int, refs: list[Output] = refs) -> NoisyRender:
                    return NoisyRender(refs[offset].passes, refs[offset].frame)

                for mode in ("exact", "statistical"):
                    node_seeds = [0] if mode == "exact" else list(STAT_SEEDS)
                    for node_seed in node_seeds:
                        base = RenderSettings(seed=seed + node_seed) if node_seed else \
                            RenderSettings()
                        tag = f"s{node_seed}"

                        def node(name: str, settings: RenderSettings, f: int = frame,
                                 b: Path = blend) -> Output:
                            return renders.get(b, f, f"{name}-{tag}", settings,
                                               node=(mode == "exact"))

                        honest = node("honest", base)
                        strategies: dict[str, Callable[[], tuple[np.ndarray, Output] | None]] = {}
                        key = f"{scene_name}|{frame}|{mode}|{tag}"

                        def rerun_of(out: Output, k: str = key) -> tuple:
                            return rerun(out, f"{k}|{out.passes_file.stem}")

                        def consistent(name: str, out: Output) -> tuple:
                            return rerun_of(out)[0], out

                        def forged(name: str, noisy: np.ndarray, albedo: np.ndarray,
                                   normal: np.ndarray, k: str = key,
                                   template: Path = honest.passes_file) -> tuple:
                            path = work / "forged" / f"{k.replace('|', '-')}-{name}.exr"
                            if not path.exists():
                                write_passes(template, path, noisy, albedo, normal)
                            out = Output(np.zeros(1), path, load_passes(path, (320, 180)))
                            return rerun_of(out)[0], out

                        def samples(n: int, name: str, base: RenderSettings = base) -> tuple:
                            return consistent(name, node(name, replace(base, samples=n)))

                        def quarter_forgery(kind: str, base: RenderSettings = base) -> tuple:
                            q = node("quarter", replace(base, samples=SAMPLES // 4))
                            denoised = load_combined(q.passes_file)
                            residual = q.passes.noisy - denoised
                            if kind == "matched":
                                rng = np.random.default_rng(frame)
                                fake = denoised + rng.normal(0, residual.std() / 2,
                                                             denoised.shape).astype(np.float32)
                            else:
                                fake = denoised + 0.5 * residual
                            return forged(kind, fake.astype(np.float32), q.passes.albedo,
                                          q.passes.normal)

                        def halfres(base: RenderSettings = base) -> tuple:
                            small = node("halfres", replace(base, resolution_percentage=50))
                            up = [cv2.resize(getattr(small.passes, p), (320, 180),
                                             interpolation=cv2.INTER_CUBIC)
                                  for p in ("noisy", "albedo", "normal")]
                            return forged("halfres", *up)

                        def shift(h: Output = honest) -> tuple:
                            moved = [np.concatenate([a[:, :1], a[:, :-1]], axis=1) for a in
                                     (h.passes.noisy, h.passes.albedo, h.passes.normal)]
                            return forged("shift", *moved)

                        def right_half(h: Output = honest, base: RenderSettings = base) -> tuple:
                            s = node("sixteenth", replace(base, samples=1))
                            mixed = []
                            for p in ("noisy", "albedo", "normal"):
                                a = getattr(h.passes, p).copy()
                                a[:, 160:] = getattr(s.passes, p)[:, 160:]
                                mixed.append(a)
                            return forged("right_half", *mixed)

                        def next_frame(base: RenderSettings = base) -> tuple | None:
                            i = frames.index(frame)
                            if i + 1 >= len(frames):
                                return None
                            out = node("honest", base, f=frames[i + 1])
                            return consistent("next", out)

                        def cheaper_frame(h: Output = honest, base: RenderSettings = base) -> tuple:
                            q = node("quarter", replace(base, samples=SAMPLES // 4))
                            return q.frame, h  # a quarter-sample frame, honest passes

                        strategies = {
                            "honest (false positives)": lambda h=honest: (h.frame, h),
                            "blank": lambda h=honest: (np.zeros_like(h.frame), h),
                            "noise": lambda h=honest: (np.random.default_rng(frame).random(
                                h.frame.shape).astype(np.float32), h),
                            "wrong frame (next frame)": next_frame,
                            "same image every frame": lambda: None if frame == frames[0] else
                            consistent("first", node("honest", base, f=frames[0])),
                            "another job's frame": lambda: consistent(
                                "other_job", node("honest", base, b=other_scene)),
                            "samples 1/2": lambda: samples(SAMPLES // 2, "half"),
                            "samples 1/4": lambda: samples(SAMPLES // 4, "quarter"),
                            "samples 1/16": lambda: samples(1, "sixteenth"),
                            "1/4 denoised + matched Gaussian noise (noisy pass)":
                                lambda: quarter_forgery("matched"),
                            "1/4 denoised + own residual noise (noisy pass)":
                                lambda: quarter_forgery("residual"),
                            "half resolution upscaled": halfres,
                            "1-pixel shift": shift,
                            "right half at 1/16 samples": right_half,
                            "honest passes, 1/4-sample frame": cheaper_frame,
                        }
                        for strategy, make in strategies.items():
                            made = make()
                            if made is None:
                                continue
                            frame_pixels, out = made
                            if strategy == "blank":
                                results[mode, strategy].extend([Outcome.FAIL] * args.draws)
                                stages[mode, strategy].extend(["cheap"] * args.draws)
                                continue  # the cheap checks refuse a blank frame
                            ours, view = rerun_of(out)
                            for draw in range(args.draws):
                                rng = random.Random(zlib.crc32(repr(
                                    (scene_name, frame, mode, tag, strategy, draw)).encode()))
                                judged = judge_noisy_pass(
                                    frame_pixels, out.passes, view, ours,
                                    exact=(mode == "exact"),
                                    count=EXACT_TILES if mode == "exact" else STATISTICAL_TILES,
                                    rng=rng, render=render_ref)
                                results[mode, strategy].append(judged.verdict.outcome)
                                stages[mode, strategy].append(judged.stage)
                print(f"{scene_name} frame {frame}: {renders.count} renders so far, "
                      f"{time.perf_counter() - wall0:.0f} s", flush=True)
                (work / "results.json").write_text(json.dumps({
                    "results": [[m, s, [o.value for o in v]] for (m, s), v in results.items()],
                    "stages": [[m, s, v] for (m, s), v in stages.items()]}))
        render_count, render_seconds = renders.count, renders.seconds
    report = table(results, stages, args, render_count, render_seconds, denoise_seconds,
                   time.perf_counter() - wall0, time.process_time() - cpu0)
    print(report)
    (work / "report.md").write_text(report)
    return 0


def load_combined(path: Path) -> np.ndarray:
    """The denoised Combined pass of a passes file (BGR, linear): the cheater's own denoise."""
    import OpenEXR

    for part in OpenEXR.File(str(path), separate_channels=True).parts:
        if part.name().endswith(".Combined"):
            return np.stack([np.asarray(part.channels[f"{part.name()}.{c}"].pixels)
                             for c in "BGR"], axis=2).astype(np.float32)
    raise ValueError(f"{path}: no Combined pass")


def table(results: dict, stages: dict, args: argparse.Namespace, renders: int,
          render_seconds: float, denoise_seconds: list[float], wall: float, cpu: float) -> str:
    strategies = list(dict.fromkeys(s for _, s in results))
    lines = [
        "| strategy | exact: detected (95% bound) | n | statistical: detected (95% bound) | n "
        "| statistical: decided at denoiser / tiles / more tiles / whole frame |",
        "|---|---|---|---|---|---|",
    ]
    for strategy in strategies:
        cells = []
        for mode in ("exact", "statistical"):
            outcomes = results.get((mode, strategy), [])
            k, n = sum(o is Outcome.FAIL for o in outcomes), len(outcomes)
            honest = strategy.startswith("honest (")
            b = bound(k, n, lower=not honest) if n else 0.0
            cells += [f"{k / max(n, 1):.1%} ({'≤' if honest else '≥'} {b:.1%})", str(n)]
        st = stages.get(("statistical", strategy), [])
        shares = " / ".join(f"{st.count(x) / max(len(st), 1):.0%}" for x in
                            ("denoiser", "tiles", "more tiles", "whole frame"))
        lines.append(f"| {strategy} | {' | '.join(cells)} | {shares} |")
    dn = sorted(denoise_seconds)
    lines += ["", f"Frames {args.frames} of both scenes, {args.draws} tile draws per checked "
              f"frame; {renders} full-frame renders ({render_seconds:.0f} s), "
              f"{len(dn)} denoiser re-runs (median {dn[len(dn) // 2] if dn else 0:.2f} s); "
              f"{wall:.0f} s wall, {cpu:.0f} s CPU in the bench process."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

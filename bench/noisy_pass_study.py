"""Feasibility study for verifying denoised scenes on their noisy pass (issue 11, item 1).

    PYTHONPATH=. .venv/bin/python bench/noisy_pass_study.py [--work DIR] [--draws 3]

Real bpy renders in a child process (``bench/noisy_pass_child.py``; scene Python never runs) of
the sample scene saved as a creator saves it (seed 7, adaptive sampling, OpenImageDenoise):

1. does ``denoising_store_passes`` change the final frame; what the multilayer EXR holds and
   weighs;
2. is the Noisy Image pass equal to a denoiser-off render, and a border-render tile of it equal
   to the same region of the full pass (exact tiles on the noisy pass);
3. does the compositor's Denoise node, run by the verifier on the node's passes, reproduce the
   final frame (threads 1 and 2, each prefilter);
4. does the statistical judge (``verifier.checker.judge_with_escalation``) separate an honest
   noisy pass from a half-sample one, where it cannot separate the denoised frames.

Prints the facts as Markdown (docs/VERIFICATION.md, "Open").
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import verification_bench as vb  # noqa: E402

from tests.saved_scenes import build_saved_scene  # noqa: E402
from verifier.checker import judge_with_escalation  # noqa: E402
from verifier.compare import exr_view  # noqa: E402
from verifier.judge import Outcome  # noqa: E402

CHILD = ROOT / "bench" / "noisy_pass_child.py"
FRAMES = (1, 7, 13, 19)  # step 4, at 320x180
TILE = (48, 16, 112, 80)  # pixels x0, y0, x1, y1 of the border tile in the 160x90 frame


def run_child(jobs: list[dict], work: Path) -> dict[str, dict]:
    spec = work / "jobs.json"
    spec.write_text(json.dumps(jobs))
    out = subprocess.run([sys.executable, str(CHILD), str(spec)], capture_output=True,
                         text=True, timeout=1800, check=True).stdout
    return {j["name"]: j for j in (json.loads(line[4:]) for line in out.splitlines()
                                   if line.startswith("JOB "))}


def passes(path: Path) -> dict[str, np.ndarray]:
    """Every part of a (multipart) multilayer EXR: pass name -> float32 (h, w, channels)."""
    import OpenEXR

    out = {}
    for part in OpenEXR.File(str(path), separate_channels=True).parts:
        chans = part.channels
        order = sorted(chans, key=lambda n: "RGBAXYZ".find(n[-1]))
        planes = [chans[n].pixels for n in order]
        out[part.name().removeprefix("ViewLayer.")] = np.stack(planes, axis=2)
    return out


def delta(a: np.ndarray, b: np.ndarray) -> str:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return (f"bit-identical: {np.array_equal(a, b)}; max |Δ| {d.max():.4g}, mean {d.mean():.3g}, "
            f"{(d == 0).mean():.1%} equal")


def png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


def levels(a: np.ndarray, b: np.ndarray) -> str:
    d = np.abs(a.astype(int) - b.astype(int))
    return f"max {d.max()} levels, mean {d.mean():.3f}, {(d == 0).mean():.1%} of values equal"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/noisy_pass_study"))
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args()
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    s160 = build_saved_scene(w / "s160.blend", size=(160, 90), samples=16, seed=7,
                             adaptive=True, denoise=True)
    s320 = build_saved_scene(w / "s320.blend", size=(320, 180), samples=16, seed=7,
                             adaptive=True, denoise=True)
    x0, y0, x1, y1 = TILE
    border = [x0 / 160, (90 - y1) / 90, x1 / 160, (90 - y0) / 90]  # Blender's y runs up

    def r(name, blend=s160, **kw):
        return {"kind": "render", "name": name, "blend": str(blend), "exr": str(w / f"{name}.exr"),
                "png": str(w / f"{name}.png"), **kw}

    def dn(name, src, **kw):
        job = {"kind": "denoise", "name": name, "blend": str(s160), "passes": str(w / f"{src}.exr"),
               "prefilter": "Accurate", "quality": "Follow Scene", "exr": str(w / f"{name}.exr"),
               "png": str(w / f"{name}.png")}
        return {**job, **kw}

    jobs = [r("final"), r("stored", store_passes=True),
            r("stored_t2", store_passes=True, threads=2),
            r("off", denoise=False), r("off_tile", denoise=False, border=border),
            r("stored_tile", store_passes=True, border=border),
            dn("redo_t1", "stored"), dn("redo_t2", "stored", threads=2),
            dn("redo_fast", "stored", prefilter="Fast"),
            dn("redo_none", "stored", prefilter="None"),
            dn("redo_noguides", "stored", guides=False)]
    for f in FRAMES:
        for name, kw in ((f"h{f}", {}), (f"half{f}", {"cycles": {"samples": 8}}),
                         *((f"ref{s}_{f}", {"cycles": {"seed": s}}) for s in (1, 2, 3))):
            jobs.append(r(name, s320, store_passes=True, frame=f, **kw))
    times = run_child(jobs, w)
    P = {j["name"]: passes(w / f"{j['name']}.exr") for j in jobs}
    out = ["Measured by `bench/noisy_pass_study.py` (bpy 5.0.1, CPU, sample scene saved with "
           "seed 7, 16 samples, adaptive threshold 0.01, OpenImageDenoise prefilter Accurate, "
           "quality High; 160x90 unless said).", ""]
    # 1. store passes
    out.append(f"1. Final frame with vs without `denoising_store_passes`: Combined "
               f"{delta(P['final']['Combined'], P['stored']['Combined'])}; 8-bit PNG "
               f"{levels(png(w / 'final.png'), png(w / 'stored.png'))}. Passes in the render "
               f"result without stored passes: {sorted(P['final'])}; with: {sorted(P['stored'])}. "
               f"Threads 1 vs 2 (stored): Combined "
               f"{delta(P['stored']['Combined'], P['stored_t2']['Combined'])}, Noisy Image "
               f"{delta(P['stored']['Noisy Image'], P['stored_t2']['Noisy Image'])}.")
    sizes = {n: (w / f"{n}.exr").stat().st_size for n in ("final", "stored")}
    px = 160 * 90
    out.append(f"   Multilayer EXR (float32, ZIP, multipart): {sizes['final']} B without stored "
               f"passes (Combined + Noisy Image), {sizes['stored']} B with "
               f"(+ Denoising Normal, Albedo, Depth) = {sizes['stored'] / px:.1f} B/px; "
               f"8-bit PNG {(w / 'stored.png').stat().st_size} B. At 1280x720 (64x the pixels, "
               f"scaled): about {sizes['stored'] * 64 / 1e6:.0f} MB per frame with passes.")
    # 2. noisy pass vs denoiser off, border tile
    tile, full = P["stored_tile"], P["stored"]
    noisy = P["stored"]["Noisy Image"]
    crop = (slice(y0, y1), slice(x0, x1))
    out.append(f"2. Noisy Image pass vs a denoiser-off render (same seed, adaptive): "
               f"{delta(noisy, P['off']['Combined'])}. Border tile {TILE} "
               f"(shape {P['stored_tile']['Noisy Image'].shape[:2]}), denoiser on, its Noisy Image "
               f"vs the full pass's region: {delta(P['stored_tile']['Noisy Image'], noisy[crop])}; "
               f"denoiser-off tile vs the full pass's region: "
               f"{delta(P['off_tile']['Combined'], noisy[crop])}; the denoised tile's Combined vs "
               f"the final frame's region: "
               f"{delta(P['stored_tile']['Combined'], P['stored']['Combined'][crop])}. "
               f"The tile's guide passes vs the full passes' region: Denoising Albedo "
               f"{delta(tile['Denoising Albedo'], full['Denoising Albedo'][crop])}"
               f"; Denoising Normal "
               f"{delta(tile['Denoising Normal'], full['Denoising Normal'][crop])}.")
    # 3. compositor Denoise node
    final_png = png(w / "stored.png")
    lines = []
    for name, label in (("redo_t1", "Accurate, 1 thread"), ("redo_t2", "Accurate, 2 threads"),
                        ("redo_fast", "Fast"), ("redo_none", "None"),
                        ("redo_noguides", "no albedo/normal (sanity: must differ)")):
        redo = P[name]["Composite.Combined"]
        lines.append(f"{label}: linear {delta(redo, P['stored']['Combined'])}; "
                     f"PNG {levels(png(w / f'{name}.png'), final_png)}; "
                     f"{times[name]['cpu_s']:.2f} s CPU")
    out.append("3. Compositor Denoise node (HDR on, quality Follow Scene) on the node's EXR "
               "passes vs the node's final frame:\n" + "\n".join(f"   - {x}" for x in lines))
    out.append(f"   Render CPU for comparison: {times['stored']['cpu_s']:.2f} s (160x90 frame).")
    # 4. statistical judge on the noisy pass
    res: dict[str, list[str]] = {}
    for f in FRAMES:
        refs = [exr_view(P[f"ref{s}_{f}"]["Noisy Image"][..., :3]) for s in (1, 2, 3)]
        drefs = [exr_view(P[f"ref{s}_{f}"]["Combined"][..., :3]) for s in (1, 2, 3)]
        for label, node, rr in (
                ("honest noisy pass", P[f"h{f}"]["Noisy Image"], refs),
                ("half-sample noisy pass", P[f"half{f}"]["Noisy Image"], refs),
                ("honest denoised frame", P[f"h{f}"]["Combined"], drefs),
                ("half-sample denoised frame", P[f"half{f}"]["Combined"], drefs)):
            image = exr_view(node[..., :3])
            if "denoised" in label:  # what statistical mode does with denoised frames today
                for k in range(3):
                    ref, others = rr[k], rr[k + 1:] + rr[:k]
                    j = judge_with_escalation(image, exact=False, count=0, rng=random.Random(0),
                                              render=vb.crop_renderer(ref, others))
                    res.setdefault(label + ", whole frame (today's route)", []).append(
                        f"{j.verdict.outcome.value}@{j.stage}")
            for d in range(args.draws):
                for k in range(3):  # each seed as the reference, the others as second seeds
                    ref, others = rr[k], rr[k + 1:] + rr[:k]
                    j = judge_with_escalation(image, exact=False, count=vb.STAT_TILES,
                                              rng=random.Random(vb.seed_of("noisy", f, d, k)),
                                              render=vb.crop_renderer(ref, others))
                    res.setdefault(label, []).append(
                        f"{j.verdict.outcome.value}@{j.stage}")
    out.append(f"4. Statistical judge (`judge_with_escalation`, exact=False, {vb.STAT_TILES} tiles,"
               f" 320x180, frames {list(FRAMES)}, node seed 7, references seeds 1/2/3 in turn, "
               f"{args.draws} tile draws; display view of the linear pass):")
    for label, got in res.items():
        fails = sum(g.startswith(Outcome.FAIL.value) for g in got)
        out.append(f"   - {label}: failed {fails}/{len(got)} "
                   f"({', '.join(sorted(set(got)))})")
    out.append(f"\n{time.perf_counter() - t0:.0f} s wall in all.")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

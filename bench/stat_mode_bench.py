"""Statistical-mode Proof-of-Render on adaptive scenes, denoiser off and on: a focused run.

    .venv/bin/python bench/verification_bench.py --frame-step 3 --denoised-frames 2 \\
        --renders DIR --render-only            # the full frames (kept in DIR)
    .venv/bin/python bench/stat_mode_bench.py --renders DIR [--draws 13] [--judge-draws 1]

Uses the renders ``bench/verification_bench.py`` keeps (same scenes, variants and cheats) and
only the held-out frames (every other frame; the pooled bounds in ``verifier.judge.Thresholds``
were fitted on the others with ``verification_bench.py --fit``):

- pooled tests alone, many tile draws: the verifier's escalation (4 tiles, 8 tiles, whole
  frame with three renders) judged by the pooled variance ratios only. A frame the pooled tests
  fail fails whatever the per-tile tests say, so this detection is a lower bound of the real
  one, cheap enough for hundreds of checks per cheat on a loaded machine;
- the real judge (`verifier.checker.judge_with_escalation`, every test) on fewer draws: honest
  checks (false positives) and every cheat.

Prints a Markdown section for docs/VERIFICATION.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import verification_bench as vb  # noqa: E402

from verifier import judge, metrics, tiles  # noqa: E402
from verifier.checker import judge_with_escalation  # noqa: E402
from verifier.judge import Outcome  # noqa: E402

SCENES = ["spinning_cube", "glossy_orbit"]


def load(cache: Path, frame_ids: list[int]) -> vb.Frames:
    out: vb.Frames = {}
    for s in SCENES:
        for name in vb.VARIANTS:
            for f in frame_ids:
                path = cache / f"{s}_{name}_{f}.png"
                if path.exists():
                    out[s, name, f] = vb.read_rgb(path)
    return out


def pooled_only(node, ref, others, rng) -> tuple[bool, str]:
    """The escalation judged by the pooled tests alone: (failed, stage)."""
    def verdict(tile_list, refs, whole):
        scores = []
        for t in tile_list:
            sc = {}
            for name, lf in (("noise", False), ("lowfreq", True)):
                e = metrics.pair_energy(tiles.crop(node, t), tiles.crop(ref, t),
                                        [tiles.crop(o, t) for o in refs], lowfreq=lf)
                sc.update({f"{name}_node": e.node, f"{name}_honest": e.honest,
                           f"{name}_count": float(e.count)})
            scores.append(judge.TileVerdict(Outcome.PASS, "", sc))
        return judge.judge_frame(scores, whole_frame=whole).outcome

    chosen: list[tiles.Tile] = []
    for stage in ("tiles", "more tiles"):
        chosen += tiles.choose_tiles(node, vb.STAT_TILES, rng)
        got = verdict(chosen, others[:1], False)
        if got is not Outcome.GREY:
            return got is Outcome.FAIL, stage
    h, w = node.shape[:2]
    return verdict([tiles.Tile(0, 0, w, h)], others, True) is Outcome.FAIL, "whole frame"


def real(node, ref, others, rng, count) -> tuple[bool, str]:
    judged = judge_with_escalation(node, exact=False, count=count, rng=rng,
                                   render=vb.crop_renderer(ref, others))
    return judged.verdict.outcome is Outcome.FAIL, judged.stage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=Path, required=True)
    parser.add_argument("--frame-step", type=int, default=3)
    parser.add_argument("--draws", type=int, default=13)
    parser.add_argument("--judge-draws", type=int, default=1)
    args = parser.parse_args()
    t0, c0 = time.perf_counter(), time.process_time()
    frame_ids = list(range(1, 25, args.frame_step))
    held = sorted(vb.held_out_frames(frame_ids))
    frames = load(args.renders, frame_ids)
    registry = vb.Registry(frames, SCENES)
    suite = vb.cheat_suite(frames, SCENES, frame_ids)
    dsuite = vb.denoised_suite(frames, SCENES, frame_ids)
    dregistry = vb.Registry({(s, "honest_t1", f): frames[s, "honest_t1_dn", f]
                             for s in SCENES for f in frame_ids}, SCENES)
    plain_honest = [("honest_t1", *r) for r in vb.STAT_REFS] + [("seed4", *r) for r in vb.STAT_REFS]
    plain_honest += [("seed1", "seed2", "seed3", "seed4"), ("seed2", "seed3", "seed4", "seed1"),
                     ("seed3", "seed4", "seed1", "seed2")]
    dn_refs = [tuple(f"{x}_dn" for x in r) for r in vb.STAT_REFS]
    dn_honest = [("honest_t1_dn", *r) for r in dn_refs] + [
        ("seed1_dn", "seed2_dn", "seed3_dn", "honest_t1_dn"),
        ("seed2_dn", "seed3_dn", "honest_t1_dn", "seed1_dn"),
        ("seed3_dn", "honest_t1_dn", "seed1_dn", "seed2_dn")]
    res: dict = defaultdict(lambda: defaultdict(list))  # table -> strategy -> [(failed, stage)]

    def cheap(node, s, f, reg) -> bool:
        return not metrics.check_frame(node, 320, 180).ok or reg.duplicate(node, (s, f))

    for s in SCENES:
        for f in held:
            # plain scenes
            for node_name, *refs in plain_honest:
                node, ref = frames[s, node_name, f], frames[s, refs[0], f]
                others = [frames[s, r, f] for r in refs[1:]]
                for d in range(args.draws):
                    rng = random.Random(vb.seed_of("pooled", s, f, node_name, refs[0], d))
                    res["pooled"]["honest"].append(pooled_only(node, ref, others, rng))
                for d in range(args.judge_draws):
                    rng = random.Random(vb.seed_of("real", s, f, node_name, refs[0], d))
                    res["real"]["honest"].append(real(node, ref, others, rng, vb.STAT_TILES))
            for name, make in suite.items():
                node = make(s, f)
                if node is None:
                    continue
                for refs in vb.STAT_REFS:
                    ref, others = frames[s, refs[0], f], [frames[s, r, f] for r in refs[1:]]
                    if cheap(node, s, f, registry):
                        res["pooled"][name] += [(True, "cheap")] * args.draws
                        res["real"][name] += [(True, "cheap")] * args.judge_draws
                        continue
                    for d in range(args.draws):
                        rng = random.Random(vb.seed_of("pooled", s, f, name, refs[0], d))
                        res["pooled"][name].append(pooled_only(node, ref, others, rng))
                    for d in range(args.judge_draws):
                        rng = random.Random(vb.seed_of("real", s, f, name, refs[0], d))
                        res["real"][name].append(real(node, ref, others, rng, vb.STAT_TILES))
            # denoised scenes: whole frames, real judge (deterministic: one check per triple)
            for node_name, *refs in dn_honest:
                node, ref = frames[s, node_name, f], frames[s, refs[0], f]
                others = [frames[s, r, f] for r in refs[1:]]
                res["denoised"]["honest"].append(real(node, ref, others, random.Random(0), 0))
            for name, make in dsuite.items():
                node = make(s, f)
                if node is None:
                    continue
                for refs in dn_refs:
                    if cheap(node, s, f, dregistry):
                        res["denoised"][name].append((True, "cheap"))
                        continue
                    ref, others = frames[s, refs[0], f], [frames[s, r, f] for r in refs[1:]]
                    res["denoised"][name].append(real(node, ref, others, random.Random(0), 0))
            print(f"{s} frame {f} done at {time.perf_counter() - t0:.0f} s", flush=True)
    print(report(res, held, args, time.perf_counter() - t0, time.process_time() - c0))
    return 0


def report(res, held, args, wall: float, cpu: float) -> str:
    def cell(checks, honest: bool) -> str:
        k, n = sum(x for x, _ in checks), len(checks)
        if not n:
            return "- | 0"
        b = vb.bound(k, n, lower=not honest)
        return f"{k / n:.1%} ({'≤' if honest else '≥'} {b:.1%}) | {n}"

    def stages(checks) -> str:
        n = max(1, len(checks))
        return " / ".join(f"{sum(st == x for _, st in checks) / n:.0%}"
                          for x in ("cheap", "tiles", "more tiles", "whole frame"))

    lines = [
        "| strategy | pooled tests alone: detected (95% bound) | n | every test: detected "
        "(95% bound) | n | decided at cheap / tiles / more tiles / whole frame (every test) |",
        "|---|---|---|---|---|---|",
    ]
    for name in res["pooled"]:
        label = "honest (false positives)" if name == "honest" else name
        lines.append(f"| {label} | {cell(res['pooled'][name], name == 'honest')} | "
                     f"{cell(res['real'][name], name == 'honest')} | {stages(res['real'][name])} |")
    lines += [
        "",
        "Denoised scenes (whole frames, three renders, every test; one check per frame and "
        "triple):",
        "",
        "| strategy | detected (95% bound) | n |",
        "|---|---|---|",
    ]
    for name, checks in res["denoised"].items():
        label = "honest (false positives)" if name == "honest" else name
        lines.append(f"| {label} | {cell(checks, name == 'honest')} |")
    lines += ["", f"Held-out frames {held} of both scenes; {args.draws} tile draws per check "
              f"for the pooled tests alone, {args.judge_draws} for every test; {wall:.0f} s wall, "
              f"{cpu:.0f} s CPU."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

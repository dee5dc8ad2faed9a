"""How long a creator waits for the estimate of a new scene, and what it quotes, per checkout.

    PYTHONPATH=$PWD .venv/bin/python -m bench.estimate_latency_bench \\
        --tree /tmp/base --tree . [--label before --label after] [--rounds 5] \\
        [--scenes sample | plain,fog,...] [--write]

One coordinator per `--tree` (a checkout with its gRPC code generated, e.g.
`git archive <commit> | tar -x -C /tmp/base` plus the Makefile's protoc line), all running at
once, no nodes, no verifier, `--machine-score 1.0`. Each round uploads a fresh copy of the
scene to each coordinator in turn (the order alternating round by round) and times
`EstimateJob` from this checkout's client: the coordinator's intake inspection and its probe
renders (coordinator/probe.py), what a creator waits for between upload and escrow. The quote
(reference seconds per frame) is the probe's own measurement; it should not depend on the
checkout, only on the machine's load at the moment, so it is the accuracy check of a change to
how the probe runs. `sample` is samples/spinning_cube.blend at 160x90, frames 1-8 (the small
job of bench/job_latency_bench.py); the other names are bench/scenes/estimate_scenes.py's
scenes, frames 1-4.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from frameproof.creator import Creator, JobOptions  # noqa: E402
from frameproof.localfarm import LocalFarm  # noqa: E402

SAMPLE = ROOT / "samples" / "spinning_cube.blend"
SECTION = "estimate latency"


def scene_sources(names: list[str], work: Path) -> dict[str, tuple[Path, JobOptions]]:
    """Each scene's .blend (its folder is copied whole: dependencies) and the job asked for."""
    sources: dict[str, tuple[Path, JobOptions]] = {}
    built = work / "estimate-scenes"
    if any(name != "sample" for name in names):
        subprocess.run([sys.executable, str(ROOT / "bench" / "scenes" / "estimate_scenes.py"),
                        str(built)], check=True, capture_output=True, timeout=900)
    for name in names:
        if name == "sample":
            sources[name] = (SAMPLE, JobOptions(frames="1-8", resolution_percentage=50))
        else:
            sources[name] = (built / f"{name}.blend", JobOptions(frames="1-4"))
    return sources


def fresh_copy(blend: Path, where: Path, stem: str) -> Path:
    """The scene's folder under a new name: a scene the coordinator has never seen."""
    shutil.copytree(blend.parent, where)
    copy = where / f"{stem}.blend"
    (where / blend.name).rename(copy)
    return copy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, action="append", required=True)
    parser.add_argument("--label", action="append")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scenes", default="sample")
    parser.add_argument("--pause", type=float, default=5.0,
                        help="seconds between requests (a coordinator's spare child restarts)")
    parser.add_argument("--write", action="store_true", help=f"write '{SECTION}'")
    args = parser.parse_args()
    labels = args.label or [str(tree) for tree in args.tree]
    trees = [tree.resolve() for tree in args.tree]
    names = args.scenes.split(",")
    rows: list[tuple[str, str, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="fp-estimate-latency-") as tmp:
        work = Path(tmp)
        # `python -m coordinator.cli` puts its working folder first on sys.path: started from
        # a checkout, every coordinator would run that checkout's code.
        os.chdir(work)
        sources = scene_sources(names, work)
        farms: dict[str, LocalFarm] = {}
        try:
            for label, tree in zip(labels, trees, strict=True):
                farm = LocalFarm(work / f"farm-{len(farms)}", lease_seconds=30.0)
                farms[label] = farm
                farm.start_coordinator(extra_args=("--machine-score", "1.0", "--no-verifier"),
                                       env={"PYTHONPATH": str(tree)})
            time.sleep(args.pause)
            count = 0
            for name, (blend, options) in sources.items():
                for number in range(args.rounds):
                    order = list(farms.items())
                    if number % 2:
                        order.reverse()
                    for label, farm in order:
                        count += 1
                        scene = fresh_copy(blend, work / f"scene-{count}", f"{name}_{count}")
                        with farm.client() as client:
                            creator = Creator(client)
                            uploaded = creator.upload_scene(scene)
                            started = time.perf_counter()
                            estimate = creator.estimate(uploaded.scene_id, options)
                            seconds = time.perf_counter() - started
                        load = os.getloadavg()[0]
                        rows.append((name, label, seconds,
                                     estimate.reference_seconds_per_frame, load))
                        print(f"{name} {label}: estimate {seconds:.2f} s, quote "
                              f"{estimate.reference_seconds_per_frame:.3f} reference s/frame "
                              f"(load {load:.1f})", flush=True)
                        time.sleep(args.pause)
        finally:
            for farm in farms.values():
                farm.stop()
    body = report(rows, labels, names, args.rounds)
    print(body)
    if args.write:
        trees = " ".join(f"--tree {tree}" for tree in args.tree)
        marks = " ".join(f"--label {label}" for label in labels)
        write_section(SECTION, f"PYTHONPATH=$PWD .venv/bin/python -m bench.estimate_latency_bench "
                      f"{trees} {marks} --rounds {args.rounds} --scenes {args.scenes}", body)
    return 0


def report(rows: list[tuple[str, str, float, float, float]], labels: list[str],
           names: list[str], rounds: int) -> str:
    head = " | ".join(f"{label}: estimate s, median (all) | {label}: quote" for label in labels)
    lines = [f"{rounds} rounds per scene, requests alternated between the coordinators; "
             f"load average {min(r[4] for r in rows):.1f}-{max(r[4] for r in rows):.1f} "
             "during the run.\n",
             f"| scene | {head} |", "|---" * (1 + 2 * len(labels)) + "|"]
    for name in names:
        cells = []
        for label in labels:
            mine = [r for r in rows if r[0] == name and r[1] == label]
            waits = [r[2] for r in mine]
            quotes = [r[3] for r in mine]
            cells.append(f"{statistics.median(waits):.2f} ({', '.join(f'{w:.2f}' for w in waits)})"
                         f" | {statistics.median(quotes):.3f}")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

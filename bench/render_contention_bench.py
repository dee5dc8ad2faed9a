"""Two render processes side by side against one process with both threads, on this machine.

    .venv/bin/python -m bench.render_contention_bench [--percentage 400] [--rounds 1]

The latency bench's farm runs two nodes with one render thread each on the same 2-core
machine, against local Blender with 2 threads. This measures that setup's floor without the
farm: the same frame of samples/spinning_cube.blend (at --percentage of its resolution, 400:
1280x720) rendered in a Blender child with 1 thread alone, then in two children with 1 thread
each at the same moment, then in one child with 2 threads. Each child renders a tiny frame
first, so scene load is not timed. Prints the seconds of each render.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from frameproof.blender.worker import BlenderWorker, RenderSettings

SCENE = Path(__file__).resolve().parents[1] / "samples" / "spinning_cube.blend"


def render(threads: int, frame: int, settings: RenderSettings, out: Path,
           start: threading.Barrier | None = None) -> float:
    """Seconds to render `frame` in a warm child with `threads` threads."""
    with BlenderWorker(threads=threads) as worker:
        worker.render_frame(SCENE, frame, out / "warm.png", RenderSettings(
            resolution_percentage=10))
        if start is not None:
            start.wait()
        began = time.perf_counter()
        worker.render_frame(SCENE, frame, out / "frame.png", settings)
        return time.perf_counter() - began


def side_by_side(settings: RenderSettings, out: Path) -> list[float]:
    """Two 1-thread children rendering frames 1 and 2 at the same moment."""
    seconds = [0.0, 0.0]
    start = threading.Barrier(2)

    def one(index: int) -> None:
        folder = out / f"side-{index}"
        folder.mkdir()
        seconds[index] = render(1, 1 + index, settings, folder, start)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--percentage", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    settings = RenderSettings(resolution_percentage=args.percentage)
    print("| round | 1 thread, alone | two 1-thread children at once (each) | "
          "1 child, 2 threads |")
    print("|---|---|---|---|")
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="fp-contention-") as tmp:
            out = Path(tmp)
            (out / "alone").mkdir()
            alone = render(1, 1, settings, out / "alone")
            pair = side_by_side(settings, out)
            (out / "both").mkdir()
            both = render(2, 1, settings, out / "both")
        print(f"| {round_} | {alone:.1f} s | {pair[0]:.1f} s, {pair[1]:.1f} s | {both:.1f} s |",
              flush=True)


if __name__ == "__main__":
    main()

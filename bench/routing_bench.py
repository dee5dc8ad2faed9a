"""Routing: a small job behind a 10,000-frame job, and scene bytes downloaded per frame.

Both are simulations over the real store (SQLite, the coordinator's own lease functions),
with simulated time: nodes render each frame for `--render-seconds` and lease again when
done, earliest first. `--tree DIR` runs the same simulation with another checkout's store,
e.g. the commit before the routing work (which had FIFO and no affinity):

    PYTHONPATH=$PWD .venv/bin/python -m bench.routing_bench --tree /tmp/base --tree .

- Time to first frame: creator A submits a 10,000-frame job, then (10 s later) creator B an
  8-frame job; 100 nodes, 10 s per frame. Reported: B's first frame delivered, and B's last.
- Scene bytes per frame: 8 jobs of 200 frames, each its own 2 GB scene, from 4 creators, on
  32 nodes with a cache of 2 scenes each (least recently used goes), each frame rendering
  for 5-15 s (seeded: the same for every variant). A node downloads a
  scene when it leases a frame of a scene not in its cache. With affinity, the coordinator
  is told the scenes the node's cache holds (as `NodeServicer` remembers them).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCENE_BYTES = 2 * 10**9


def _farm(work: Path) -> tuple[Any, Any]:
    try:
        import coordinator.storage.payment_models
    except ImportError:  # d760101
        import coordinator.payments.models  # noqa: F401
    from coordinator.storage.database import open_database, sqlite_url
    from coordinator.storage.store import FarmStore

    store = FarmStore(open_database(sqlite_url(work)))
    try:
        from coordinator.payments.bonds import BondPolicy
        from coordinator.storage.leasing import LeaseHotPath
    except ImportError:
        return store, None
    return store, LeaseHotPath(store, 0, BondPolicy())


def _job(store: Any, job_id: str, scene: str, creator: str, frames: int, now: float) -> None:
    from coordinator.storage.models import JobRecord, SceneRecord

    if store.get_scene(scene) is None:
        store.save_scene(SceneRecord(scene_id=scene, main_file="a.blend", info_json="{}",
                                     created_at=now))
    store.create_job(JobRecord(job_id=job_id, scene_id=scene, creator=creator,
                               frames_spec=f"1-{frames}", settings_json="{}", created_at=now,
                               updated_at=now), [[n] for n in range(1, frames + 1)], now)


def _lease(store: Any, leasing: Any, node: str, now: float,
           cache: list[str], affinity: bool) -> tuple[str, str, int] | None:
    """(job, scene, frame) leased and delivered at once (its result lands later in simulated
    time; the store only needs the task out of the queue)."""
    from coordinator.storage.store import FrameOutputRecord

    if leasing is not None:
        grants, _ = leasing.lease(node, now, cache if affinity else ())
        if not grants:
            return None
        grant = grants[0]
        job, scene, frame, lease_id = (grant.job_id, grant.job.scene_id, grant.first_frame,
                                       grant.lease_id)
    else:
        task = store.lease_next_task(node, now)
        if task is None:
            return None
        job, frame, lease_id = task.job_id, task.first_frame, task.lease_id
        scene = store.get_job(job).scene_id
    store.complete_task(lease_id, node, [FrameOutputRecord(
        frame=frame, sha256=uuid.uuid4().hex * 2, size=1, extension="png",
        render_seconds=1.0)], now)
    return job, scene, frame


def _register(store: Any, nodes: list[str]) -> None:
    """Registered, bonded and with a verified record: no probation limits."""
    from sqlmodel import Session

    try:
        from coordinator.storage.payment_models import BondRecord
    except ImportError:  # a checkout from before the models moved (d760101)
        from coordinator.payments.models import BondRecord  # type: ignore[no-redef]
    from coordinator.storage.models import NodeStandingRecord

    with Session(store.engine) as session:
        for node in nodes:
            session.add(NodeStandingRecord(node_id=node, score=0.99, consecutive_verified=1000,
                                           verified=1000, delivered=1000))
            session.add(BondRecord(node_id=node, held=10**12, posted=10**12, created_at=0.0,
                                   updated_at=0.0))
        session.commit()
    for node in nodes:
        store.register_node(node, node, "{}", 0.0)


def time_to_first_frame(work: Path, nodes: int, render: float) -> dict[str, float]:
    store, leasing = _farm(work)
    names = [f"node{i}" for i in range(nodes)]
    _register(store, names)
    _job(store, "big", "scene-a", "creator-a", 10_000, 0.0)
    small_at = 10.0
    submitted = False
    free = [(i * render / nodes, name) for i, name in enumerate(names)]  # staggered start
    heapq.heapify(free)
    first = last = None
    small_frames = 0
    while free:
        now, node = heapq.heappop(free)
        if not submitted and now >= small_at:
            _job(store, "small", "scene-b", "creator-b", 8, small_at)
            submitted = True
        got = _lease(store, leasing, node, now, [], affinity=False)
        if got is None:
            continue
        if got[0] == "small":
            small_frames += 1
            done = now + render
            first = done if first is None else min(first, done)
            last = done if last is None else max(last, done)
            if small_frames == 8:
                break
        heapq.heappush(free, (now + render, node))
    return {"first": (first or 0) - small_at, "last": (last or 0) - small_at}


def scene_bytes(work: Path, affinity: bool, nodes: int, render: float) -> dict[str, float]:
    store, leasing = _farm(work)
    names = [f"node{i}" for i in range(nodes)]
    _register(store, names)
    for j in range(8):
        _job(store, f"job{j}", f"scene{j}", f"creator{j % 4}", 200, float(j))
    caches: dict[str, list[str]] = {name: [] for name in names}
    rng = random.Random(7)  # the same render times for every variant
    free = [(i * render / nodes, name) for i, name in enumerate(names)]
    heapq.heapify(free)
    frames = downloads = 0
    while free:
        now, node = heapq.heappop(free)
        got = _lease(store, leasing, node, now, caches[node], affinity)
        if got is None:
            continue
        cache = caches[node]
        scene = got[1]
        if scene in cache:
            cache.remove(scene)
        else:
            downloads += 1
            if len(cache) >= 2:
                cache.pop()
        cache.insert(0, scene)
        frames += 1
        heapq.heappush(free, (now + render * rng.uniform(0.5, 1.5), node))
    return {"frames": frames, "downloads": downloads,
            "bytes_per_frame": downloads * SCENE_BYTES / max(1, frames)}


def simulate(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b, \
            tempfile.TemporaryDirectory() as c:
        ttff = time_to_first_frame(Path(a), 100, 10.0)
        plain = scene_bytes(Path(b), False, 32, 10.0)
        _, leasing = _farm(Path(c))
        affine = scene_bytes(Path(c), True, 32, 10.0) if leasing is not None else None
    return {"ttff": ttff, "plain": plain, "affinity": affine}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, action="append",
                        help="checkout whose store is simulated (repeat: side by side)")
    parser.add_argument("--label", action="append")
    parser.add_argument("--simulate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help="write docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.simulate:
        print(json.dumps(simulate(args)))
        return 0
    trees = args.tree or [ROOT]
    labels = args.label or [str(tree) for tree in trees]
    rows = []
    for tree, label in zip(trees, labels, strict=True):
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--simulate"],
                             cwd=tree, env={**os.environ, "PYTHONPATH": str(tree.resolve())},
                             check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        ttff, plain, affine = result["ttff"], result["plain"], result["affinity"]
        affine_cell = (f"{affine['bytes_per_frame'] / 1e6:.0f} MB ({affine['downloads']} "
                       "downloads)" if affine else "n/a (no affinity)")
        rows.append(f"| {label} | {ttff['first']:.0f} s | {ttff['last']:.0f} s | "
                    f"{plain['bytes_per_frame'] / 1e6:.0f} MB ({plain['downloads']} downloads) "
                    f"| {affine_cell} |")
        print(rows[-1], flush=True)
    table = ("| coordinator | small job: first frame after submit | small job: all 8 frames "
             "| scene bytes per frame, no affinity | scene bytes per frame, affinity |\n"
             "|---|---|---|---|---|\n" + "\n".join(rows))
    print(table)
    if args.write:
        from bench.report import write_section

        body = (__doc__.split("\n\n", 1)[1] if __doc__ else "") + "\n" + table
        write_section("routing", "PYTHONPATH=$PWD .venv/bin/python -m bench.routing_bench "
                      + " ".join(sys.argv[1:] if argv is None else argv), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

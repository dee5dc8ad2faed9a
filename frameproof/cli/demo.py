"""`frameproof demo`: a coordinator, nodes and a job on this machine, start to finish."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from frameproof.cli.common import STATE_NAMES, err, out
from frameproof.cli.download import download_frames
from frameproof.cli.watch import watch_job
from frameproof.creator import Creator, JobOptions
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb

SAMPLE_SCENE = Path(__file__).resolve().parents[2] / "samples" / "spinning_cube.blend"


def run(args: argparse.Namespace) -> int:
    if not SAMPLE_SCENE.exists():  # an installed wheel has no samples/: the demo needs a checkout
        print(f"frameproof demo: the sample scene {SAMPLE_SCENE} is missing; run the demo from "
              "a checkout (`make demo`)", file=sys.stderr)
        return 2
    out_dir: Path = args.out.resolve()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    farm_dir = out_dir / "farm"
    started = time.monotonic()
    with LocalFarm(farm_dir) as farm:
        address = farm.start_coordinator()
        err.print(f"coordinator on {address} (data in {farm_dir / 'coordinator'})")
        for index in range(args.nodes):
            farm.start_node(f"node-{index + 1}")
        err.print(f"{args.nodes} render nodes started (logs in {farm_dir / 'logs'})")
        with farm.client() as client:
            options = JobOptions(frames=args.frames, name="demo: spinning cube",
                                 max_cost_usd=1.0)
            job_id = Creator(client).submit_scene(SAMPLE_SCENE, options)[0].job.job_id
            job = watch_job(client, job_id)
            frames = download_frames(client, job_id, out_dir / "frames").files
    if job.state != pb.JOB_STATE_DONE:
        err.print(f"the demo job ended {STATE_NAMES.get(job.state, job.state)}: {job.error}; "
                  f"see the logs in {farm_dir / 'logs'}")
        return 1
    sheet = write_contact_sheet(frames, out_dir / "contact_sheet.png")
    out.print(f"\n{len(frames)} frames rendered by {args.nodes} nodes in "
              f"{time.monotonic() - started:.1f}s")
    out.print(f"frames:        {frames[0].parent}  (named after the scene's output path)")
    out.print(f"contact sheet: {sheet}")
    return 0


def write_contact_sheet(frames: list[Path], path: Path, columns: int = 4) -> Path:
    """Tile the frames in a grid, each labelled with its file name."""
    images = [cv2.imread(str(frame), cv2.IMREAD_COLOR) for frame in sorted(frames)]
    height, width = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = np.zeros((rows * height, columns * width, 3), np.uint8)
    for index, (image, frame) in enumerate(zip(images, sorted(frames), strict=True)):
        row, column = divmod(index, columns)
        tile = image.copy()
        cv2.putText(tile, frame.stem, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        sheet[row * height:(row + 1) * height, column * width:(column + 1) * width] = tile
    cv2.imwrite(str(path), sheet)
    return path

"""What `submit` and `estimate` can check locally, before packing and uploading anything.

Options given explicitly are checked against argv: 0 means "the scene's own" to the
coordinator, so a typed `--samples 0` must be refused here rather than silently ignored.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence

from frameproof.cli.common import fail
from frameproof.frames import FrameSpecError, parse_frames

# The same engines as coordinator.intake.SUPPORTED_ENGINES
# (tests/integration/test_cli_trust.py checks); not imported from there because that module
# pulls in the coordinator's database layer.
ENGINES = ("CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH")
MAX_RESOLUTION = 65_536
MAX_COST_USD = 1_000_000.0


def given(argv: Sequence[str], option: str) -> str | None:
    """The value typed for `option` (the last one wins, like argparse), or None."""
    value = None
    for index, word in enumerate(argv):
        if word == option and index + 1 < len(argv):
            value = argv[index + 1]
        elif word.startswith(option + "="):
            value = word.split("=", 1)[1]
    return value


def check_job_options(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """Refuse, with exit status 2, a job `submit`/`estimate` would only fail on later."""
    if given(argv, "--samples") is not None and args.samples < 1:
        fail("--samples must be at least 1 (leave it out for the scene's own)", 2)
    percentage = given(argv, "--resolution-percentage")
    if percentage is not None and not 1 <= args.resolution_percentage <= 1000:
        fail("--resolution-percentage must be 1..1000 (leave it out for the scene's own)", 2)
    resolution = getattr(args, "resolution", "")
    if given(argv, "--resolution") is not None:
        match = re.fullmatch(r"(\d+)x(\d+)", resolution or "")
        if not match:
            fail("--resolution must look like 1920x1080", 2)
        if not all(1 <= int(side) <= MAX_RESOLUTION for side in match.groups()):
            fail(f"--resolution: width and height must be 1..{MAX_RESOLUTION}", 2)
    if given(argv, "--max-cost") is not None:
        cost = getattr(args, "max_cost", 0.0)
        if not (math.isfinite(cost) and 0 < cost <= MAX_COST_USD):
            fail(f"--max-cost must be more than 0 and at most {MAX_COST_USD:,.0f} USD "
                 "(leave it out for the estimate's top)", 2)
    if getattr(args, "chunk", 1) < 1:
        fail("--chunk must be at least 1", 2)
    engine = (getattr(args, "engine", "") or "").upper()
    if engine and engine not in ENGINES:
        fail(f"--engine {engine}: not a render engine; use one of {', '.join(ENGINES)}", 2)
    if args.frames.strip():
        try:
            parse_frames(args.frames)
        except FrameSpecError as error:
            fail(f"--frames: {error}", 2)
    scene = args.scene  # last: an option's typo is named even before the file is found
    if not scene.is_file():
        fail(f"{scene}: no such file", 2)
    if scene.suffix.lower() != ".blend":
        fail(f"{scene}: not a .blend file", 2)

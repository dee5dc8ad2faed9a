"""Shared fixtures: real processes, real Blender, loopback gRPC."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.cli import MACHINE_SCORE_ENV
from frameproof.localfarm import LocalFarm

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SCENE = ROOT / "samples" / "spinning_cube.blend"
SHARED_SCENES = ROOT.parent / "shared" / "scenes" / "bat"

# Coordinators started by tests take this as their machine's benchmark score instead of
# measuring it (10-30 s each on a loaded box). tests/test_pricing_e2e.py removes it and measures.
os.environ.setdefault(MACHINE_SCORE_ENV, "1.0")


@pytest.fixture
def shared_scenes() -> Path:
    """The third-party scenes beside the checkout; tests skip when they are absent."""
    if not SHARED_SCENES.is_dir():
        pytest.skip("../shared/scenes is not present")
    return SHARED_SCENES


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[LocalFarm]:
    """A coordinator-and-nodes farm of real processes; everything stopped afterwards."""
    with LocalFarm(tmp_path / "farm", lease_seconds=4.0) as local_farm:
        yield local_farm

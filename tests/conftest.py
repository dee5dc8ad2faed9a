"""Shared fixtures: real processes, real Blender, loopback gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from frameproof.localfarm import LocalFarm

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SCENE = ROOT / "samples" / "spinning_cube.blend"
SHARED_SCENES = ROOT.parent / "shared" / "scenes" / "bat"


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

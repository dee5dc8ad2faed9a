"""Which delivered frames get a tile re-render: drawn in secret, at the node's rate.

The rate follows the node's reputation (`reputation.check_probability`: every frame while it is
new or unbonded, then less as it earns trust). The draw uses the coordinator's own randomness
after the frames arrived, so a node cannot know which of its frames will be re-rendered.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable

SECRET_DRAW: Callable[[], float] = secrets.SystemRandom().random


def sample_frames(frames: Iterable[int], probability: float,
                  draw: Callable[[], float] = SECRET_DRAW) -> frozenset[int]:
    """The frames to re-render in tiles, each drawn independently with `probability`."""
    return frozenset(frame for frame in frames if draw() < probability)

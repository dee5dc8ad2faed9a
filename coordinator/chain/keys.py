"""Keypairs in the Solana CLI format (a JSON array of 64 integers), written owner-only."""

from __future__ import annotations

import os
from pathlib import Path

from solders.keypair import Keypair


def load_keypair(path: Path) -> Keypair:
    """Read a keypair written by `solana-keygen new` (or by `save_keypair`)."""
    return Keypair.from_json(Path(path).read_text())


def save_keypair(keypair: Keypair, path: Path) -> None:
    """Write `keypair` with mode 0600 from the start, so the secret is never world-readable.

    The file is created exclusively: an existing keypair is never overwritten, because losing
    the treasury key means losing the mint authority and the escrow.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(keypair.to_json())
        handle.flush()
        os.fsync(handle.fileno())


def load_or_create_keypair(path: Path) -> Keypair:
    """The keypair at `path`, created (0600) on first use."""
    path = Path(path)
    if path.exists():
        return load_keypair(path)
    keypair = Keypair()
    save_keypair(keypair, path)
    return keypair

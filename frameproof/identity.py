"""Identities are Solana keypairs, in the Solana CLI's JSON format (a list of 64 integers)."""

from __future__ import annotations

import os
from pathlib import Path

from solders.keypair import Keypair

ENV_KEYPAIR = "FRAMEPROOF_KEYPAIR"
SOLANA_CLI_KEYPAIR = Path("~/.config/solana/id.json")


def creator_keypair_path(explicit: Path | None) -> Path:
    """--keypair, else $FRAMEPROOF_KEYPAIR, else the Solana CLI's default wallet."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(ENV_KEYPAIR)
    return Path(from_env) if from_env else SOLANA_CLI_KEYPAIR.expanduser()


def load_or_create_keypair(path: Path) -> Keypair:
    """Load the keypair at path, or create one there (mode 0600, written atomically)."""
    if path.exists():
        try:
            return Keypair.from_json(path.read_text())
        except ValueError as error:
            raise ValueError(f"{path} is not a Solana keypair file: {error}") from error
    keypair = Keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(keypair.to_json())
    os.replace(temp, path)
    return keypair

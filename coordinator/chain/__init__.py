"""The farm's token on Solana: one interface (`TokenChain`), an embedded and an RPC backend.

See docs/CHAIN.md. The coordinator depends on `TokenChain` only and gets one from `open_chain`.
"""

from __future__ import annotations

from pathlib import Path

from solders.pubkey import Pubkey

from coordinator.chain.base import (
    ChainError,
    PreparedTx,
    Reconciled,
    TokenChain,
    TxStatus,
    signed_deposit,
)

__all__ = [
    "ChainError",
    "PreparedTx",
    "Reconciled",
    "TokenChain",
    "TxStatus",
    "open_chain",
    "signed_deposit",
]


def open_chain(
    cluster: str | None,
    *,
    data_dir: Path,
    treasury_keypair: Path | None = None,
    mint: str | None = None,
    decimals: int = 6,
) -> TokenChain:
    """The chain selected by `--cluster`: None or "embedded" runs LiteSVM under `data_dir`.

    Any other value (devnet, testnet, mainnet-beta, localnet or a URL) needs the treasury
    keypair file and the mint address (see `python -m coordinator.chain create-mint`).
    """
    if cluster in (None, "embedded"):
        from coordinator.chain.embedded import EmbeddedChain

        return EmbeddedChain(Path(data_dir) / "chain", decimals=decimals)
    from coordinator.chain.keys import load_keypair
    from coordinator.chain.rpc import RpcChain, cluster_url

    if treasury_keypair is None or mint is None:
        raise ChainError(f"--cluster {cluster} needs --treasury-keypair and --mint")
    return RpcChain(cluster_url(cluster), load_keypair(treasury_keypair), Pubkey.from_string(mint))

"""The RPC backend: the farm's token on any Solana cluster, through solana-py.

solana-py 0.41 is async-only and its HTTP session belongs to one event loop, while the
coordinator calls the chain from worker threads. So each `RpcChain` owns a private event loop
in a daemon thread and every call is shipped there with `run_coroutine_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Literal, TypeVar

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment, Confirmed, Finalized
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from spl.token.constants import MINT_LEN, TOKEN_PROGRAM_ID

from coordinator.chain import tokenops
from coordinator.chain.base import ChainError, PreparedTx, Reconciled, TokenChain, TxStatus

CLUSTERS = {
    "devnet": "https://api.devnet.solana.com",
    "testnet": "https://api.testnet.solana.com",
    "mainnet-beta": "https://api.mainnet-beta.solana.com",
    "localnet": "http://127.0.0.1:8899",
}
MAX_PROCESSING_AGE = 150
"""Blocks a blockhash stays valid for (Solana's MAX_PROCESSING_AGE)."""
CREATOR_FEE_LAMPORTS = 10_000_000  # 0.01 SOL: about 2,000 deposit fees
_RANK = {"processed": 0, "confirmed": 1, "finalized": 2}

T = TypeVar("T")


def cluster_url(cluster: str) -> str:
    """`--cluster` value to an RPC URL: a known cluster name, or an http(s) URL as is."""
    if cluster in CLUSTERS:
        return CLUSTERS[cluster]
    if cluster.startswith(("http://", "https://")):
        return cluster
    raise ValueError(f"unknown cluster {cluster!r}: use {', '.join(CLUSTERS)} or an http(s) URL")


class _LoopThread:
    """An event loop of our own, in a daemon thread, so sync callers on any thread can await."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except FutureTimeout as exc:
            future.cancel()
            raise ChainError(f"RPC call timed out after {timeout} s") from exc

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class _Rpc:
    """solana-py's AsyncClient behind a private loop; every failure surfaces as ChainError."""

    def __init__(self, url: str, *, rank: int, request_timeout_s: float) -> None:
        self.rank = rank
        self._timeout = request_timeout_s
        self._loop = _LoopThread()
        self._client = self._loop.run(_make_client(url, request_timeout_s), request_timeout_s)

    def call(self, request: Callable[[AsyncClient], Awaitable[T]]) -> T:
        try:
            return self._loop.run(request(self._client), self._timeout)
        except (RPCException, SolanaRpcException) as exc:
            raise ChainError(f"RPC error: {_describe(exc)}") from exc

    def status(self, signature: str) -> TxStatus:
        """getSignatureStatuses with history search: landed/failed once at our commitment."""
        sig = Signature.from_string(signature)
        found = self.call(lambda c: c.get_signature_statuses([sig], True)).value[0]
        if found is None:
            return "unknown"
        level = found.confirmation_status
        if (_RANK["finalized"] if level is None else int(level)) < self.rank:
            return "unknown"  # seen, but not yet at the commitment we promised the caller
        return "failed" if found.err is not None else "landed"

    def wait(self, signature: str, timeout_s: float, poll_s: float) -> TxStatus:
        """Poll until landed/failed or `timeout_s`; "unknown" means still undecided."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(signature)
            if status != "unknown" or time.monotonic() >= deadline:
                return status
            time.sleep(poll_s)

    def close(self) -> None:
        try:
            self._loop.run(self._client.close(), self._timeout)
        finally:
            self._loop.stop()


class RpcChain(TokenChain):
    """The farm's token on the cluster at `url`, with `treasury` as its mint authority.

    `commitment` is what "landed" means: "confirmed" (optimistic, seconds) or "finalized"
    (rooted, about 13 s more). Opening checks that `mint` exists and that `treasury` is its
    mint authority, and creates the escrow ATA if it is missing.
    """

    def __init__(
        self,
        url: str,
        treasury: Keypair,
        mint: Pubkey,
        *,
        commitment: Literal["confirmed", "finalized"] = "confirmed",
        confirm_timeout_s: float = 60.0,
        poll_interval_s: float = 0.5,
        request_timeout_s: float = 15.0,
    ) -> None:
        super().__init__(treasury)
        self.url, self.mint = url, mint
        self._commitment: Commitment = Confirmed if commitment == "confirmed" else Finalized
        self._confirm_timeout_s, self._poll_interval_s = confirm_timeout_s, poll_interval_s
        self._rpc = _Rpc(url, rank=_RANK[commitment], request_timeout_s=request_timeout_s)
        try:
            self.decimals = self._check_mint()
            if self._account(self.escrow) is None:
                create = tokenops.create_mint_ixs(self.treasury, mint, self.decimals, 0)[-1]
                if self.send(self._sign_treasury([create], "create escrow ATA")) != "landed":
                    raise ChainError(f"could not create the escrow {self.escrow}")
        except BaseException:
            self._rpc.close()
            raise

    @classmethod
    def create_mint(
        cls, url: str, treasury: Keypair, *, decimals: int = 6, **options: object
    ) -> RpcChain:
        """Create a new mint (authority: `treasury`, which pays) with its escrow, and open it.

        Record `chain.mint`: the coordinator must be configured with it from then on.
        """
        mint = Keypair()
        timeout = float(options.get("request_timeout_s", 15.0))  # type: ignore[arg-type]
        rpc = _Rpc(url, rank=_RANK["confirmed"], request_timeout_s=timeout)
        try:
            rent = rpc.call(lambda c: c.get_minimum_balance_for_rent_exemption(MINT_LEN)).value
            latest = rpc.call(lambda c: c.get_latest_blockhash(Confirmed)).value
            ixs = tokenops.create_mint_ixs(treasury.pubkey(), mint.pubkey(), decimals, rent)
            message = Message.new_with_blockhash(ixs, treasury.pubkey(), latest.blockhash)
            tx = VersionedTransaction(message, [treasury, mint])
            opts = TxOpts(skip_confirmation=True, preflight_commitment=Confirmed)
            rpc.call(lambda c: c.send_raw_transaction(bytes(tx), opts=opts))
            if rpc.wait(str(tx.signatures[0]), 90.0, 0.5) != "landed":
                raise ChainError(f"mint creation {tx.signatures[0]} did not land")
        finally:
            rpc.close()
        return cls(url, treasury, mint.pubkey(), **options)  # type: ignore[arg-type]

    # --- TokenChain ---------------------------------------------------------------------

    def send(self, tx: PreparedTx) -> TxStatus:
        """Submit with preflight, then poll up to `confirm_timeout_s`; "unknown" = undecided.

        Preflight makes a transaction that would fail raise ChainError instead of landing as a
        failure (and charging a fee). A landed or failed signature is never resubmitted.
        """
        status = self.status(tx.signature)
        if status != "unknown":
            return status
        opts = TxOpts(skip_confirmation=True, preflight_commitment=self._commitment)
        try:
            self._rpc.call(lambda c: c.send_raw_transaction(tx.raw, opts=opts))
        except ChainError:
            status = self.status(tx.signature)  # e.g. "already processed" after a lost reply
            if status != "unknown":
                return status
            raise
        return self._rpc.wait(tx.signature, self._confirm_timeout_s, self._poll_interval_s)

    def status(self, signature: str) -> TxStatus:
        """getSignatureStatuses, searching history, at this chain's commitment."""
        return self._rpc.status(signature)

    def reconcile(self, tx: PreparedTx) -> Reconciled:
        """Expiry is read before status, so "dropped" can never hide a late landing."""
        expired = False
        if tx.valid_until is not None:
            height = self._rpc.call(lambda c: c.get_block_height(Finalized)).value
            expired = height > tx.valid_until
        status = self.status(tx.signature)
        if status != "unknown":
            return status
        return "dropped" if expired else "pending"

    def fund_creator(self, owner: Pubkey, amount: int, *, memo: str) -> str:
        """Devnet/testnet/localnet only (requestAirdrop): fee SOL, then `amount` tokens."""
        if self.sol_balance(owner) < CREATOR_FEE_LAMPORTS // 2:
            airdrop = self._rpc.call(lambda c: c.request_airdrop(owner, CREATOR_FEE_LAMPORTS))
            landed = self._rpc.wait(
                str(airdrop.value), self._confirm_timeout_s, self._poll_interval_s
            )
            if landed != "landed":
                raise ChainError(f"airdrop to {owner} did not land")
        tx = self.prepare_mint_to(owner, amount, memo=memo)
        if self.send(tx) != "landed":
            raise ChainError(f"grant to {owner} did not land")
        return tx.signature

    def close(self) -> None:
        """Close the HTTP session and stop the private loop."""
        self._rpc.close()

    # --- primitives -------------------------------------------------------------------------

    def _recent_blockhash(self) -> tuple[Hash, int | None]:
        latest = self._rpc.call(lambda c: c.get_latest_blockhash(self._commitment)).value
        return latest.blockhash, latest.last_valid_block_height

    def _deposit_valid_until(self) -> int | None:
        """Over-estimated on purpose: a late "dropped" only delays; an early one could pay twice."""
        height = self._rpc.call(lambda c: c.get_block_height(self._commitment)).value
        return height + 2 * MAX_PROCESSING_AGE

    def _account(self, address: Pubkey) -> Account | None:
        return self._rpc.call(lambda c: c.get_account_info(address, self._commitment)).value

    def _rent_exempt(self, size: int) -> int:
        return int(self._rpc.call(lambda c: c.get_minimum_balance_for_rent_exemption(size)).value)

    def _check_mint(self) -> int:
        account = self._account(self.mint)
        if account is None or account.owner != TOKEN_PROGRAM_ID or len(account.data) < MINT_LEN:
            raise ChainError(f"{self.mint} is not an SPL token mint on {self.url}")
        data = bytes(account.data)
        if tokenops.mint_authority(data) != self.treasury:
            raise ChainError(f"treasury {self.treasury} is not the mint authority of {self.mint}")
        return tokenops.mint_decimals(data)


async def _make_client(url: str, timeout: float) -> AsyncClient:
    """Created on the private loop, which its HTTP session then belongs to."""
    return AsyncClient(url, timeout=timeout)


def _describe(exc: Exception) -> str:
    error = exc.args[0] if exc.args else exc
    return str(getattr(error, "message", error))

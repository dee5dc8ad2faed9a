"""The default backend: the real Solana runtime (LiteSVM) in-process, persisted to a directory.

LiteSVM executes the actual System, SPL Token, Associated Token Account and Memo programs, but
keeps its state in memory. After every executed transaction we write the accounts it touched and
its signature's outcome to one JSON file (temp file + fsync + os.replace), and on start we put
them back with `set_account`. A crash between execute and write loses both together, so the
transaction simply never happened and the caller resends the same signed bytes.

Replay protection after a restart cannot come from LiteSVM (its transaction history is in
memory), so it comes from the persisted signature record: `send` of a recorded signature is a
no-op. Blockhashes: a restored LiteSVM has forgotten the ones it issued, so blockhash checking is
off and each transaction gets 32 random bytes in its blockhash slot. That keeps every prepared
transaction unique (two equal operations never share a signature) and valid forever, so a
transaction prepared before a restart can still be sent after it.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any

from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata
from spl.token.constants import MINT_LEN

from coordinator.chain import tokenops
from coordinator.chain.base import ChainError, PreparedTx, Reconciled, TokenChain, TxStatus
from coordinator.chain.fpu import reset_x87
from coordinator.chain.keys import load_or_create_keypair

STATE_FILE = "chain-state.json"
TREASURY_FILE = "treasury.json"
STATE_VERSION = 1
LAMPORTS_PER_SOL = 1_000_000_000
TREASURY_TOP_UP = 1_000 * LAMPORTS_PER_SOL
TREASURY_LOW_WATER = 10 * LAMPORTS_PER_SOL
CREATOR_FEE_LAMPORTS = LAMPORTS_PER_SOL
_SYSVAR_OWNER = Pubkey.from_string("Sysvar1111111111111111111111111111111111111")


class EmbeddedChain(TokenChain):
    """The farm's token on an in-process chain whose accounts live under `data_dir`.

    On first start it creates the treasury keypair (`treasury.json`, Solana CLI format, 0600)
    and the mint (`decimals`); afterwards it restores them and ignores `decimals`.
    """

    def __init__(self, data_dir: Path, *, decimals: int = 6) -> None:
        self._dir = Path(data_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        super().__init__(load_or_create_keypair(self._dir / TREASURY_FILE))
        self._lock = threading.RLock()
        self._state_path = self._dir / STATE_FILE
        self._accounts: dict[str, dict[str, Any]] = {}
        self._statuses: dict[str, TxStatus] = {}
        if self._state_path.exists():
            self._load()
        else:
            self._create_mint(decimals)

    # --- TokenChain ---------------------------------------------------------------------

    def send(self, tx: PreparedTx) -> TxStatus:
        """Execute now; a signature already recorded is not executed again."""
        return self._execute(VersionedTransaction.from_bytes(tx.raw))

    def status(self, signature: str) -> TxStatus:
        """From the persisted record, so it survives restarts."""
        with self._lock:
            return self._statuses.get(signature, "unknown")

    def reconcile(self, tx: PreparedTx) -> Reconciled:
        """Embedded transactions never expire: unknown means resend the same bytes."""
        status = self.status(tx.signature)
        return "pending" if status == "unknown" else status

    def fund_creator(self, owner: Pubkey, amount: int, *, memo: str) -> str:
        """Give `owner` SOL for deposit fees, then mint `amount` tokens to them."""
        with self._lock:
            if self.sol_balance(owner) < CREATOR_FEE_LAMPORTS // 2:
                self._svm.airdrop(owner, CREATOR_FEE_LAMPORTS)
                self._commit([owner], None, None)
            tx = self.prepare_mint_to(owner, amount, memo=memo)
            if self.send(tx) != "landed":
                raise ChainError(f"grant to {owner} failed")
            return tx.signature

    def close(self) -> None:
        """Nothing to release: every landed transaction is already on disk."""

    # --- primitives -------------------------------------------------------------------------

    def _recent_blockhash(self) -> tuple[Hash, int | None]:
        return Hash(os.urandom(32)), None

    def _deposit_valid_until(self) -> int | None:
        return None

    def _account(self, address: Pubkey) -> Account | None:
        with self._lock:
            return self._svm.get_account(address)

    def _rent_exempt(self, size: int) -> int:
        with self._lock:
            return int(self._svm.minimum_balance_for_rent_exemption(size))

    # --- execution and persistence ------------------------------------------------------------

    def _execute(self, tx: VersionedTransaction) -> TxStatus:
        signature = str(tx.signatures[0])
        with self._lock:
            known = self._statuses.get(signature)
            if known is not None:
                return known
            payer = tx.message.account_keys[0]
            if payer == self.treasury and self.sol_balance(payer) < TREASURY_LOW_WATER:
                self._svm.airdrop(payer, TREASURY_TOP_UP)
            try:
                result = self._svm.send_transaction(tx)
            finally:
                reset_x87()  # else SQLite in this thread reads REALs as NaN (chain/fpu.py)
            if isinstance(result, FailedTransactionMetadata):
                if self._svm.get_transaction(tx.signatures[0]) is None:
                    # Refused before execution (bad signature, unpayable fee): nothing changed.
                    raise ChainError(f"transaction refused: {result.err()}")
                status: TxStatus = "failed"  # executed with an error: the fee was charged
            else:
                status = "landed"
            self._commit(list(tx.message.account_keys), signature, status)
            return status

    def _commit(self, keys: list[Pubkey], signature: str | None, status: TxStatus | None) -> None:
        """Record the touched accounts (and outcome) on disk, or roll memory back to disk."""
        for key in keys:
            account = self._svm.get_account(key)
            if account is None:
                self._accounts.pop(str(key), None)
            elif not account.executable and account.owner != _SYSVAR_OWNER:
                self._accounts[str(key)] = _account_to_json(account)
        if signature is not None and status is not None:
            self._statuses[signature] = status
        try:
            self._write_state()
        except OSError as exc:
            self._load()  # memory must never be ahead of disk
            raise ChainError(f"could not persist chain state: {exc}") from exc

    def _write_state(self) -> None:
        state = {
            "version": STATE_VERSION,
            "mint": str(self.mint),
            "decimals": self.decimals,
            "treasury": str(self.treasury),
            "accounts": self._accounts,
            "signatures": self._statuses,
        }
        tmp = self._state_path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump(state, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._state_path)
        dir_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _load(self) -> None:
        state = json.loads(self._state_path.read_text())
        if state.get("version") != STATE_VERSION:
            raise ChainError(f"{self._state_path}: unsupported version {state.get('version')}")
        if state["treasury"] != str(self.treasury):
            raise ChainError(f"{self._dir / TREASURY_FILE} is not the treasury of this chain state")
        self.mint = Pubkey.from_string(state["mint"])
        self.decimals = int(state["decimals"])
        self._accounts = state["accounts"]
        self._statuses = state["signatures"]
        self._svm = _new_svm()
        for key, data in self._accounts.items():
            self._svm.set_account(Pubkey.from_string(key), _account_from_json(data))

    def _create_mint(self, decimals: int) -> None:
        self._svm = _new_svm()
        mint = Keypair()
        self.mint, self.decimals = mint.pubkey(), decimals
        self._svm.airdrop(self.treasury, TREASURY_TOP_UP)
        rent = self._svm.minimum_balance_for_rent_exemption(MINT_LEN)
        ixs = tokenops.create_mint_ixs(self.treasury, self.mint, decimals, rent)
        blockhash, _ = self._recent_blockhash()
        message = Message.new_with_blockhash(ixs, self.treasury, blockhash)
        if self._execute(VersionedTransaction(message, [self._treasury, mint])) != "landed":
            raise ChainError("could not create the farm's mint")


def _new_svm() -> LiteSVM:
    return LiteSVM().with_blockhash_check(False)


def _account_to_json(account: Account) -> dict[str, Any]:
    return {
        "lamports": account.lamports,
        "owner": str(account.owner),
        "data": base64.b64encode(bytes(account.data)).decode(),
        "executable": account.executable,
        "rent_epoch": account.rent_epoch,
    }


def _account_from_json(data: dict[str, Any]) -> Account:
    return Account(
        lamports=data["lamports"],
        data=base64.b64decode(data["data"]),
        owner=Pubkey.from_string(data["owner"]),
        executable=data["executable"],
        rent_epoch=data["rent_epoch"],
    )

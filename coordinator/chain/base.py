"""The token-chain interface every payout backend implements, and the types it speaks.

Why this shape: the ledger must survive a crash between "sent" and "recorded". So a chain
operation is split into prepare (build + sign; the signature, i.e. the transaction id, is known
here), send (idempotent), and reconcile (did it land, can it still land?). The caller records
`PreparedTx` before `send` and, after a restart, calls `reconcile` and resends the very same
bytes until the answer is final.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from solders.account import Account
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from coordinator.chain import tokenops

TxStatus = Literal["landed", "failed", "unknown"]
"""landed: executed successfully at the backend's commitment. failed: executed with an error
(fee paid, no token effect). unknown: not seen (not sent, in flight, or never going to land)."""

Reconciled = Literal["landed", "failed", "pending", "dropped"]
"""What `reconcile` answers. pending: may still land, resend the same bytes. dropped: its
blockhash expired unseen, so it can never land: it is safe to prepare a replacement."""

T = TypeVar("T")

BOND_VAULT_SEED = "frameproof-bonds"
"""Seed of the bond vault: node operators' bonds wait here (docs/PAYMENTS.md, "Bonds")."""
TREASURY_VAULT_SEED = "frameproof-treasury"
"""Seed of the treasury vault: the treasury's share of slashed bonds."""


class ChainError(Exception):
    """A chain operation was refused or could not be carried out."""


@dataclass(frozen=True)
class PreparedTx:
    """A signed transaction not yet known to have landed; store all four fields before sending.

    `valid_until` is the last block height at which it can still land (None: never expires,
    as on the embedded chain).
    """

    signature: str
    raw: bytes
    description: str
    valid_until: int | None = None


def signed_deposit(message: bytes, creator: Keypair) -> bytes:
    """Creator side of a deposit: sign the message bytes from `TokenChain.build_deposit`."""
    return bytes(VersionedTransaction(Message.from_bytes(message), [creator]))


class TokenChain(ABC):
    """The farm's SPL token on some chain: mint, escrow, burn, refund, balances.

    Amounts are integer base units. `memo` is the caller's operation id: it is written on chain
    (Memo program) so every operation's transaction is distinct and auditable. Thread-safe.
    """

    mint: Pubkey
    decimals: int

    def __init__(self, treasury: Keypair) -> None:
        self._treasury = treasury

    @property
    def treasury(self) -> Pubkey:
        """Mint authority, fee payer for farm transactions, and owner of the escrow."""
        return self._treasury.pubkey()

    @property
    def escrow(self) -> Pubkey:
        """The treasury's associated token account: creators' deposits wait here."""
        return tokenops.ata(self.treasury, self.mint)

    # --- backend primitives -------------------------------------------------------------

    @abstractmethod
    def _recent_blockhash(self) -> tuple[Hash, int | None]:
        """A blockhash for a new transaction and the last block height it stays valid."""

    @abstractmethod
    def _deposit_valid_until(self) -> int | None:
        """An upper bound for the expiry of a deposit message built a short while ago."""

    @abstractmethod
    def _account(self, address: Pubkey) -> Account | None:
        """The account at `address`, None if it does not exist."""

    @abstractmethod
    def _rent_exempt(self, size: int) -> int:
        """Lamports an account of `size` bytes needs to be rent-exempt."""

    @abstractmethod
    def send(self, tx: PreparedTx) -> TxStatus:
        """Submit `tx` and wait (bounded) for it. Resending a landed or failed tx is a no-op.

        Raises ChainError when the backend refuses it outright (bad signature, would fail);
        the tx then has not landed, but a caller that cannot tell should simply `reconcile`.
        """

    @abstractmethod
    def status(self, signature: str) -> TxStatus:
        """What the chain knows about a signature."""

    @abstractmethod
    def reconcile(self, tx: PreparedTx) -> Reconciled:
        """Final or not: landed/failed are final; pending means resend; dropped means replace."""

    @abstractmethod
    def fund_creator(self, owner: Pubkey, amount: int, *, memo: str) -> str:
        """Test/embedded clusters only: SOL for fees plus `amount` tokens minted; the mint tx id."""

    @abstractmethod
    def close(self) -> None:
        """Release connections, threads or files."""

    # --- farm operations ------------------------------------------------------------------

    def prepare_mint_to(self, owner: Pubkey, amount: int, *, memo: str) -> PreparedTx:
        """Emission to a node operator (or a grant); creates `owner`'s ATA in the same tx."""
        ixs = self._checked(
            tokenops.mint_to_ixs, self.treasury, self.mint, self.decimals, owner, amount, memo
        )
        return self._sign_treasury(ixs, f"mint_to {amount} -> {owner} [{memo}]")

    def prepare_burn_from_escrow(self, amount: int, *, memo: str) -> PreparedTx:
        """Burn the USD-equivalent of approved work out of the escrow."""
        ixs = self._checked(
            tokenops.burn_ixs, self.treasury, self.mint, self.decimals, amount, memo
        )
        return self._sign_treasury(ixs, f"burn {amount} from escrow [{memo}]")

    def prepare_refund(self, owner: Pubkey, amount: int, *, memo: str) -> PreparedTx:
        """Escrow back to the creator for work that was never approved."""
        ixs = self._checked(
            tokenops.refund_ixs, self.treasury, self.mint, self.decimals, owner, amount, memo
        )
        return self._sign_treasury(ixs, f"refund {amount} -> {owner} [{memo}]")

    def build_deposit(self, creator: Pubkey, amount: int, *, memo: str) -> bytes:
        """The message the creator signs (see `signed_deposit`): creator ATA -> escrow.

        The creator is fee payer and sole signer, so the coordinator only relays it. On a real
        cluster it must be signed and relayed before its blockhash expires (about a minute).
        """
        blockhash, _ = self._recent_blockhash()
        message = self._checked(self._deposit_message, creator, amount, memo, blockhash)
        return bytes(message)

    def prepare_signed_deposit(
        self, signed_raw: bytes, creator: Pubkey, amount: int, *, memo: str
    ) -> PreparedTx:
        """Accept a creator-signed deposit only if it is exactly the expected transfer.

        The expected message is rebuilt with the tx's own blockhash and compared byte for byte,
        so any change (amount, destination, extra instruction, payer) is refused.
        """
        return self._prepare_signed(signed_raw, lambda blockhash: self._checked(
            self._deposit_message, creator, amount, memo, blockhash), "deposit",
            f"deposit {amount} <- {creator} [{memo}]", into="escrow", signer="creator")

    def _prepare_signed(self, signed_raw: bytes, expected: Callable[[Hash], Message],
                        what: str, description: str, *, into: str,
                        signer: str) -> PreparedTx:
        """A transaction a user signed, accepted only if its message is byte for byte the one
        `expected` builds with the transaction's own blockhash, with one valid signature."""
        try:
            tx = VersionedTransaction.from_bytes(signed_raw)
        except Exception as exc:
            raise ChainError(f"{what} is not a serialized transaction: {exc}") from exc
        message = tx.message
        if not isinstance(message, Message):
            raise ChainError(f"{what} must be a legacy message as the coordinator built it")
        if bytes(message) != bytes(expected(message.recent_blockhash)):
            raise ChainError(f"{what} does not match the expected transfer into {into}")
        if len(tx.signatures) != 1 or not all(tx.verify_with_results()):
            raise ChainError(f"{what} is not validly signed by the {signer}")
        return PreparedTx(str(tx.signatures[0]), bytes(tx), description,
                          self._deposit_valid_until())

    # --- bonds -----------------------------------------------------------------------------

    @property
    def bond_vault(self) -> Pubkey:
        """The treasury's token account holding node operators' bonds."""
        return tokenops.vault_address(self.treasury, BOND_VAULT_SEED)

    @property
    def treasury_vault(self) -> Pubkey:
        """The treasury's token account for its share of slashed bonds."""
        return tokenops.vault_address(self.treasury, TREASURY_VAULT_SEED)

    def ensure_vaults(self) -> None:
        """Create the bond and treasury vaults if they do not exist yet (one transaction)."""
        seeds = [seed for seed, address in ((BOND_VAULT_SEED, self.bond_vault),
                                            (TREASURY_VAULT_SEED, self.treasury_vault))
                 if self._account(address) is None]
        if not seeds:
            return
        rent = self._rent_exempt(tokenops.ACCOUNT_LEN)
        ixs = [ix for seed in seeds
               for ix in tokenops.create_vault_ixs(self.treasury, self.mint, seed, rent)]
        tx = self._sign_treasury(ixs, f"create vaults {', '.join(seeds)}")
        if self.send(tx) != "landed":
            raise ChainError(f"could not create the vaults {', '.join(seeds)}")

    def build_bond(self, node: Pubkey, amount: int, *, memo: str) -> bytes:
        """The message a node operator signs: its ATA -> the bond vault (it pays the fee)."""
        blockhash, _ = self._recent_blockhash()
        return bytes(self._checked(self._bond_message, node, amount, memo, blockhash))

    def prepare_signed_bond(
        self, signed_raw: bytes, node: Pubkey, amount: int, *, memo: str
    ) -> PreparedTx:
        """Accept a node-signed bond only if it is exactly the expected transfer (as deposits)."""
        return self._prepare_signed(signed_raw, lambda blockhash: self._checked(
            self._bond_message, node, amount, memo, blockhash), "bond",
            f"bond {amount} <- {node} [{memo}]", into="the bond vault", signer="node")

    def prepare_from_bonds(self, owner: Pubkey, amount: int, *, memo: str) -> PreparedTx:
        """Bond vault -> `owner` (a returned bond, or a slashed share for a cheated creator)."""
        ixs = self._checked(tokenops.from_vault_ixs, self.treasury, self.mint, self.decimals,
                            self.bond_vault, owner, amount, memo)
        return self._sign_treasury(ixs, f"from bonds {amount} -> {owner} [{memo}]")

    def prepare_forfeit(self, amount: int, *, memo: str) -> PreparedTx:
        """Bond vault -> treasury vault: the treasury's share of a slashed bond."""
        ixs = self._checked(tokenops.vault_transfer_ixs, self.bond_vault, self.treasury,
                            self.mint, self.decimals, self.treasury_vault, amount, memo)
        return self._sign_treasury(ixs, f"forfeit {amount} -> treasury vault [{memo}]")

    def bond_vault_balance(self) -> int:
        """Tokens bonded by node operators (0 before the first bond)."""
        return self._token_account_amount(self.bond_vault)

    def treasury_vault_balance(self) -> int:
        """Tokens the treasury took from slashed bonds."""
        return self._token_account_amount(self.treasury_vault)

    def _token_account_amount(self, address: Pubkey) -> int:
        account = self._account(address)
        return tokenops.token_amount(bytes(account.data)) if account else 0

    def _bond_message(self, node: Pubkey, amount: int, memo: str, blockhash: Hash) -> Message:
        return tokenops.bond_message(node, self.mint, self.decimals, self.bond_vault, amount,
                                     memo, blockhash)

    # --- balances -------------------------------------------------------------------------

    def token_balance(self, owner: Pubkey) -> int:
        """Tokens in `owner`'s ATA (0 when it does not exist)."""
        account = self._account(tokenops.ata(owner, self.mint))
        return tokenops.token_amount(bytes(account.data)) if account else 0

    def escrow_balance(self) -> int:
        """Tokens waiting in escrow."""
        return self.token_balance(self.treasury)

    def supply(self) -> int:
        """Total tokens in existence: emissions minus burns."""
        account = self._account(self.mint)
        if account is None:
            raise ChainError(f"mint {self.mint} does not exist")
        return tokenops.mint_supply(bytes(account.data))

    def sol_balance(self, owner: Pubkey) -> int:
        """Lamports held by `owner` (fees; the treasury also pays ATA rent)."""
        account = self._account(owner)
        return account.lamports if account else 0

    # --- helpers ----------------------------------------------------------------------------

    def _deposit_message(self, creator: Pubkey, amount: int, memo: str, blockhash: Hash) -> Message:
        return tokenops.deposit_message(
            creator, self.mint, self.decimals, self.treasury, amount, memo, blockhash
        )

    @staticmethod
    def _checked(build: Callable[..., T], *args: object) -> T:
        """Run a tokenops builder, turning its input errors into ChainError."""
        try:
            return build(*args)
        except ValueError as exc:
            raise ChainError(str(exc)) from exc

    def _sign_treasury(self, ixs: list[Instruction], description: str) -> PreparedTx:
        blockhash, valid_until = self._recent_blockhash()
        message = Message.new_with_blockhash(ixs, self.treasury, blockhash)
        tx = VersionedTransaction(message, [self._treasury])
        return PreparedTx(str(tx.signatures[0]), bytes(tx), description, valid_until)

"""SPL Token instructions and account decoding shared by every backend.

Pure functions: no I/O, so both backends build byte-identical transactions and the
deposit check can rebuild what it expects and compare bytes.
"""

from __future__ import annotations

import struct

from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import (
    CreateAccountParams,
    CreateAccountWithSeedParams,
    create_account,
    create_account_with_seed,
)
from spl.token import instructions as spl
from spl.token.constants import ACCOUNT_LEN, MINT_LEN, TOKEN_PROGRAM_ID
from spl.token.models import (
    BurnCheckedParams,
    InitializeAccount3Params,
    InitializeMint2Params,
    MintToCheckedParams,
    TransferCheckedParams,
)

MEMO_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
MAX_AMOUNT = 2**64 - 1
MAX_MEMO_BYTES = 200


def ata(owner: Pubkey, mint: Pubkey) -> Pubkey:
    """The associated token account of `owner` for `mint`."""
    return spl.get_associated_token_address(owner, mint)


def memo(text: str) -> Instruction:
    """A Memo instruction: names the caller's operation on chain, making each op's tx unique."""
    data = text.encode()
    if not text or len(data) > MAX_MEMO_BYTES:
        raise ValueError(f"memo must be 1..{MAX_MEMO_BYTES} bytes of UTF-8")
    return Instruction(MEMO_PROGRAM_ID, data, [])


def check_amount(amount: int) -> None:
    """Refuse amounts the token program would truncate or reject late."""
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_AMOUNT:
        raise ValueError(f"amount must be an integer in 1..2**64-1 base units, got {amount!r}")


def create_mint_ixs(payer: Pubkey, mint: Pubkey, decimals: int, rent: int) -> list[Instruction]:
    """Allocate and initialise `mint` with `payer` as mint authority, and open its escrow ATA."""
    return [
        create_account(
            CreateAccountParams(
                from_pubkey=payer,
                to_pubkey=mint,
                lamports=rent,
                space=MINT_LEN,
                owner=TOKEN_PROGRAM_ID,
            )
        ),
        spl.initialize_mint2(
            InitializeMint2Params(
                decimals=decimals, program_id=TOKEN_PROGRAM_ID, mint=mint, mint_authority=payer
            )
        ),
        spl.create_idempotent_associated_token_account(payer, payer, mint),
    ]


def mint_to_ixs(
    treasury: Pubkey, mint: Pubkey, decimals: int, owner: Pubkey, amount: int, note: str
) -> list[Instruction]:
    """Mint to `owner`'s ATA, creating it first if needed (the treasury pays its rent)."""
    check_amount(amount)
    return [
        memo(note),
        spl.create_idempotent_associated_token_account(treasury, owner, mint),
        spl.mint_to_checked(
            MintToCheckedParams(
                program_id=TOKEN_PROGRAM_ID,
                mint=mint,
                dest=ata(owner, mint),
                mint_authority=treasury,
                amount=amount,
                decimals=decimals,
            )
        ),
    ]


def burn_ixs(
    treasury: Pubkey, mint: Pubkey, decimals: int, amount: int, note: str
) -> list[Instruction]:
    """Burn out of the escrow (the treasury's ATA)."""
    check_amount(amount)
    return [
        memo(note),
        spl.burn_checked(
            BurnCheckedParams(
                program_id=TOKEN_PROGRAM_ID,
                mint=mint,
                account=ata(treasury, mint),
                owner=treasury,
                amount=amount,
                decimals=decimals,
            )
        ),
    ]


def transfer_ixs(
    source_owner: Pubkey, mint: Pubkey, decimals: int, dest_owner: Pubkey, amount: int, note: str
) -> list[Instruction]:
    """transfer_checked between two ATAs; `source_owner` must sign."""
    check_amount(amount)
    return [
        memo(note),
        spl.transfer_checked(
            TransferCheckedParams(
                program_id=TOKEN_PROGRAM_ID,
                source=ata(source_owner, mint),
                mint=mint,
                dest=ata(dest_owner, mint),
                owner=source_owner,
                amount=amount,
                decimals=decimals,
            )
        ),
    ]


def refund_ixs(
    treasury: Pubkey, mint: Pubkey, decimals: int, owner: Pubkey, amount: int, note: str
) -> list[Instruction]:
    """Escrow back to `owner`, re-creating their ATA if they closed it since depositing."""
    create = spl.create_idempotent_associated_token_account(treasury, owner, mint)
    memo_ix, transfer = transfer_ixs(treasury, mint, decimals, owner, amount, note)
    return [memo_ix, create, transfer]


def deposit_message(
    creator: Pubkey,
    mint: Pubkey,
    decimals: int,
    treasury: Pubkey,
    amount: int,
    note: str,
    blockhash: Hash,
) -> Message:
    """The creator-paid, creator-signed transfer into escrow; the creator signs its bytes."""
    return Message.new_with_blockhash(
        transfer_ixs(creator, mint, decimals, treasury, amount, note), creator, blockhash
    )


def token_amount(data: bytes) -> int:
    """The `amount` field of an SPL token account (bytes 64..72, little-endian u64)."""
    return struct.unpack_from("<Q", data, 64)[0]


def mint_supply(data: bytes) -> int:
    """The `supply` field of an SPL mint (bytes 36..44)."""
    return struct.unpack_from("<Q", data, 36)[0]


def mint_decimals(data: bytes) -> int:
    """The `decimals` field of an SPL mint (byte 44)."""
    return data[44]


def mint_authority(data: bytes) -> Pubkey | None:
    """The mint authority (a COption<Pubkey> at bytes 0..36), None once it has been revoked."""
    tag = struct.unpack_from("<I", data, 0)[0]
    return Pubkey.from_bytes(data[4:36]) if tag == 1 else None


def vault_address(treasury: Pubkey, seed: str) -> Pubkey:
    """A token account of the treasury's at an address derived from `seed` (not its ATA).

    Bonds and the treasury's own takings live apart from the escrow ATA, so each balance can
    be compared with its own ledger accounts; the treasury alone can move them.
    """
    return Pubkey.create_with_seed(treasury, seed, TOKEN_PROGRAM_ID)


def create_vault_ixs(treasury: Pubkey, mint: Pubkey, seed: str, rent: int) -> list[Instruction]:
    """Allocate the seed-derived account and initialise it as a token account the treasury owns."""
    address = vault_address(treasury, seed)
    return [
        create_account_with_seed(
            CreateAccountWithSeedParams(
                from_pubkey=treasury,
                to_pubkey=address,
                base=treasury,
                seed=seed,
                lamports=rent,
                space=ACCOUNT_LEN,
                owner=TOKEN_PROGRAM_ID,
            )
        ),
        spl.initialize_account3(
            InitializeAccount3Params(
                program_id=TOKEN_PROGRAM_ID, account=address, mint=mint, owner=treasury
            )
        ),
    ]


def vault_transfer_ixs(
    source: Pubkey, source_owner: Pubkey, mint: Pubkey, decimals: int, dest: Pubkey,
    amount: int, note: str,
) -> list[Instruction]:
    """transfer_checked from token account `source` to token account `dest`."""
    check_amount(amount)
    return [
        memo(note),
        spl.transfer_checked(
            TransferCheckedParams(
                program_id=TOKEN_PROGRAM_ID,
                source=source,
                mint=mint,
                dest=dest,
                owner=source_owner,
                amount=amount,
                decimals=decimals,
            )
        ),
    ]


def bond_message(
    node: Pubkey, mint: Pubkey, decimals: int, bond_vault: Pubkey, amount: int, note: str,
    blockhash: Hash,
) -> Message:
    """The node-paid, node-signed transfer of its bond into the bond vault."""
    ixs = vault_transfer_ixs(ata(node, mint), node, mint, decimals, bond_vault, amount, note)
    return Message.new_with_blockhash(ixs, node, blockhash)


def from_vault_ixs(
    treasury: Pubkey, mint: Pubkey, decimals: int, vault: Pubkey, owner: Pubkey, amount: int,
    note: str,
) -> list[Instruction]:
    """A vault's tokens to `owner`'s ATA (created if needed; the treasury pays its rent)."""
    memo_ix, transfer = vault_transfer_ixs(vault, treasury, mint, decimals, ata(owner, mint),
                                           amount, note)
    return [memo_ix, spl.create_idempotent_associated_token_account(treasury, owner, mint),
            transfer]

"""The chain contract, run against both backends on the real SPL Token program (LiteSVM).

`embedded` is LiteSVM in-process; `rpc` is solana-py talking JSON-RPC over loopback to
`TestRpcServer`, which executes the same transactions in its own LiteSVM.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from coordinator.chain import (
    ChainError,
    PreparedTx,
    TokenChain,
    open_chain,
    signed_deposit,
    tokenops,
)
from coordinator.chain.embedded import EmbeddedChain
from coordinator.chain.rpc import RpcChain, cluster_url
from coordinator.chain.testrpc import TestRpcServer


@dataclass
class Farm:
    chain: TokenChain
    server: TestRpcServer | None  # the RPC backend's endpoint, None when embedded


@pytest.fixture(params=["embedded", "rpc"])
def farm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Farm]:
    if request.param == "embedded":
        chain: TokenChain = EmbeddedChain(tmp_path / "chain")
        yield Farm(chain, None)
        chain.close()
        return
    with TestRpcServer() as server:
        treasury = Keypair()
        server.svm.airdrop(treasury.pubkey(), 100 * 10**9)
        chain = RpcChain.create_mint(server.url, treasury, decimals=6, poll_interval_s=0.01)
        yield Farm(chain, server)
        chain.close()


def deposit(chain: TokenChain, creator: Keypair, amount: int, memo: str) -> PreparedTx:
    """What the coordinator does at submit: build, have the creator sign, verify."""
    message = chain.build_deposit(creator.pubkey(), amount, memo=memo)
    return chain.prepare_signed_deposit(
        signed_deposit(message, creator), creator.pubkey(), amount, memo=memo
    )


def test_mint_deposit_burn_refund_add_up(farm: Farm) -> None:
    chain = farm.chain
    node_a, node_b, creator = Keypair().pubkey(), Keypair().pubkey(), Keypair()
    assert (chain.decimals, chain.supply(), chain.escrow_balance()) == (6, 0, 0)

    chain.fund_creator(creator.pubkey(), 1_000_000, memo="grant:1")
    assert chain.send(deposit(chain, creator, 600_000, "job:1:deposit")) == "landed"
    assert chain.send(chain.prepare_burn_from_escrow(250_000, memo="job:1:burn")) == "landed"
    refund = chain.prepare_refund(creator.pubkey(), 350_000, memo="job:1:refund")
    assert chain.send(refund) == "landed"
    for owner, amount, memo in [(node_a, 300, "epoch:1:a"), (node_b, 700, "epoch:1:b")]:
        assert chain.send(chain.prepare_mint_to(owner, amount, memo=memo)) == "landed"

    assert chain.token_balance(creator.pubkey()) == 1_000_000 - 600_000 + 350_000
    assert chain.escrow_balance() == 0
    assert (chain.token_balance(node_a), chain.token_balance(node_b)) == (300, 700)
    assert chain.supply() == 1_000_000 - 250_000 + 1_000
    holders = [creator.pubkey(), node_a, node_b, chain.treasury]
    assert chain.supply() == sum(chain.token_balance(owner) for owner in holders)


def test_forged_or_altered_deposits_are_refused(farm: Farm) -> None:
    chain = farm.chain
    creator, thief = Keypair(), Keypair()
    chain.fund_creator(creator.pubkey(), 1_000, memo="grant:1")
    message = chain.build_deposit(creator.pubkey(), 600, memo="job:7")
    good = signed_deposit(message, creator)

    def refused(raw: bytes, amount: int = 600, memo: str = "job:7") -> None:
        with pytest.raises(ChainError):
            chain.prepare_signed_deposit(raw, creator.pubkey(), amount, memo=memo)

    refused(good, amount=6_000)  # claims more than was signed
    refused(good, memo="job:8")  # signed for another job
    forged_sig = bytearray(good)
    forged_sig[5] ^= 0xFF
    refused(bytes(forged_sig))  # signature does not verify
    amount_at = good.rfind((600).to_bytes(8, "little"))
    tampered = bytearray(good)
    tampered[amount_at] = 0x10  # 600 -> 528 after signing
    refused(bytes(tampered), amount=528)
    # Well signed, but paying the creator's own second wallet instead of the escrow.
    blockhash = Message.from_bytes(message).recent_blockhash
    ixs = tokenops.transfer_ixs(creator.pubkey(), chain.mint, 6, thief.pubkey(), 600, "job:7")
    elsewhere = Message.new_with_blockhash(ixs, creator.pubkey(), blockhash)
    refused(bytes(VersionedTransaction(elsewhere, [creator])))
    # The thief signs the creator's message as fee payer of their own copy.
    thief_copy = chain.build_deposit(thief.pubkey(), 600, memo="job:7")
    refused(signed_deposit(thief_copy, thief))
    refused(b"not a transaction")

    assert chain.token_balance(creator.pubkey()) == 1_000
    assert chain.escrow_balance() == 0
    assert chain.prepare_signed_deposit(good, creator.pubkey(), 600, memo="job:7").signature


def test_resending_a_landed_tx_does_not_apply_twice(farm: Farm) -> None:
    chain, creator, node = farm.chain, Keypair(), Keypair().pubkey()
    chain.fund_creator(creator.pubkey(), 1_000, memo="grant:1")
    payout = chain.prepare_mint_to(node, 40, memo="epoch:3:node")
    escrowed = deposit(chain, creator, 500, "job:2")
    for _ in range(3):
        assert chain.send(payout) == "landed"
        assert chain.send(escrowed) == "landed"
    assert chain.token_balance(node) == 40
    assert (chain.escrow_balance(), chain.supply()) == (500, 1_040)


def test_prepared_tx_is_unknown_until_sent(farm: Farm) -> None:
    chain, node = farm.chain, Keypair().pubkey()
    tx = chain.prepare_mint_to(node, 25, memo="epoch:4:node")
    assert (chain.status(tx.signature), chain.reconcile(tx)) == ("unknown", "pending")
    assert chain.supply() == 0
    assert chain.send(tx) == "landed"
    assert (chain.status(tx.signature), chain.reconcile(tx)) == ("landed", "landed")
    assert chain.token_balance(node) == 25


def test_equal_operations_get_distinct_signatures(farm: Farm) -> None:
    chain, node = farm.chain, Keypair().pubkey()
    first = chain.prepare_mint_to(node, 10, memo="epoch:5:node")
    again = chain.prepare_mint_to(node, 10, memo="epoch:5:node")  # a re-prepared attempt
    assert first.signature != again.signature


def test_a_tx_that_cannot_succeed_moves_nothing(farm: Farm) -> None:
    chain = farm.chain
    overdraw = chain.prepare_burn_from_escrow(1, memo="job:9:burn")
    try:
        status = chain.send(overdraw)  # embedded: executes and fails
    except ChainError:
        status = chain.status(overdraw.signature)  # rpc: refused at preflight
    assert status in ("failed", "unknown")
    assert (chain.supply(), chain.escrow_balance()) == (0, 0)
    with pytest.raises(ChainError):
        chain.prepare_mint_to(Keypair().pubkey(), 0, memo="zero")
    with pytest.raises(ChainError):
        chain.prepare_refund(Keypair().pubkey(), 2**64, memo="too-big")


def test_concurrent_callers_from_worker_threads(farm: Farm) -> None:
    chain, nodes = farm.chain, [Keypair().pubkey() for _ in range(8)]
    errors: list[BaseException] = []

    def pay(i: int) -> None:
        try:
            for epoch in range(3):
                chain.send(chain.prepare_mint_to(nodes[i], 1 + i, memo=f"epoch:{epoch}:{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pay, args=(i,)) for i in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [chain.token_balance(node) for node in nodes] == [3 * (1 + i) for i in range(8)]
    assert chain.supply() == sum(3 * (1 + i) for i in range(8))


# --- embedded only ------------------------------------------------------------------------


def test_embedded_restart_keeps_balances_supply_and_signatures(tmp_path: Path) -> None:
    chain, creator, node = EmbeddedChain(tmp_path), Keypair(), Keypair().pubkey()
    chain.fund_creator(creator.pubkey(), 1_000, memo="grant:1")
    escrowed = deposit(chain, creator, 600, "job:1")
    chain.send(escrowed)
    chain.send(chain.prepare_burn_from_escrow(100, memo="job:1:burn"))
    payout = chain.prepare_mint_to(node, 70, memo="epoch:1:node")
    chain.send(payout)
    later = chain.prepare_mint_to(node, 5, memo="epoch:2:node")  # prepared, never sent

    reopened = EmbeddedChain(tmp_path)
    assert (reopened.mint, reopened.treasury) == (chain.mint, chain.treasury)
    assert reopened.supply() == 1_000 - 100 + 70
    assert (reopened.escrow_balance(), reopened.token_balance(node)) == (500, 70)
    assert reopened.token_balance(creator.pubkey()) == 400
    assert reopened.status(payout.signature) == "landed"
    assert reopened.send(payout) == "landed" and reopened.send(escrowed) == "landed"
    assert reopened.token_balance(node) == 70 and reopened.escrow_balance() == 500
    assert reopened.reconcile(later) == "pending"
    assert reopened.send(later) == "landed"  # signed before the restart, still valid after
    assert reopened.token_balance(node) == 75
    # The creator's fee SOL survived too: they can deposit again after the restart.
    assert reopened.send(deposit(reopened, creator, 400, "job:2")) == "landed"


def test_embedded_crash_between_execute_and_persist_is_resent_once(tmp_path: Path) -> None:
    chain, node = EmbeddedChain(tmp_path), Keypair().pubkey()
    payout = chain.prepare_mint_to(node, 90, memo="epoch:1:node")  # caller records it first
    before = (tmp_path / "chain-state.json").read_bytes()
    chain.send(payout)
    (tmp_path / "chain-state.json").write_bytes(before)  # the write "never happened"

    recovered = EmbeddedChain(tmp_path)
    assert recovered.token_balance(node) == 0
    assert recovered.reconcile(payout) == "pending"  # -> resend the recorded bytes
    assert recovered.send(payout) == "landed"
    assert recovered.send(payout) == "landed"
    assert (recovered.token_balance(node), recovered.supply()) == (90, 90)


def test_embedded_treasury_keypair_is_cli_format_and_private(tmp_path: Path) -> None:
    chain = open_chain(None, data_dir=tmp_path)
    keyfile = tmp_path / "chain" / "treasury.json"
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    secret = json.loads(keyfile.read_text())
    assert len(secret) == 64 and all(0 <= b < 256 for b in secret)
    assert Keypair.from_json(keyfile.read_text()).pubkey() == chain.treasury


def test_embedded_refuses_a_foreign_treasury(tmp_path: Path) -> None:
    EmbeddedChain(tmp_path / "a")
    EmbeddedChain(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "treasury.json", tmp_path / "a" / "treasury.json")
    with pytest.raises(ChainError):
        EmbeddedChain(tmp_path / "a")


# --- rpc only -----------------------------------------------------------------------------


def test_rpc_unsent_tx_is_dropped_after_its_blockhash_expires(tmp_path: Path) -> None:
    with TestRpcServer() as server:
        treasury = Keypair()
        server.svm.airdrop(treasury.pubkey(), 10**10)
        chain = RpcChain.create_mint(server.url, treasury, poll_interval_s=0.01)
        try:
            lost = chain.prepare_mint_to(Keypair().pubkey(), 5, memo="epoch:1:n")
            assert chain.reconcile(lost) == "pending"
            server.expire_blockhashes()
            assert chain.reconcile(lost) == "dropped"  # safe to prepare a replacement
            with pytest.raises(ChainError):
                chain.send(lost)
            assert chain.supply() == 0
        finally:
            chain.close()


def test_rpc_refuses_a_mint_the_treasury_does_not_control() -> None:
    with TestRpcServer() as server:
        owner, stranger = Keypair(), Keypair()
        for key in (owner, stranger):
            server.svm.airdrop(key.pubkey(), 10**10)
        chain = RpcChain.create_mint(server.url, owner, poll_interval_s=0.01)
        chain.close()
        with pytest.raises(ChainError):
            RpcChain(server.url, stranger, chain.mint)
        with pytest.raises(ChainError):
            RpcChain(server.url, owner, Pubkey.new_unique())


def test_cluster_names_map_to_urls() -> None:
    assert cluster_url("devnet") == "https://api.devnet.solana.com"
    assert cluster_url("mainnet-beta") == "https://api.mainnet-beta.solana.com"
    assert cluster_url("localnet") == "http://127.0.0.1:8899"
    assert cluster_url("https://rpc.example.org") == "https://rpc.example.org"
    with pytest.raises(ValueError):
        cluster_url("moonnet")


def test_the_embedded_chain_leaves_sqlite_able_to_read_reals(tmp_path: Path) -> None:
    """LiteSVM leaves x87 registers in use; SQLite (long double) then read 0.5 as NaN and
    built broken indexes in the same thread. The chain clears them after each transaction."""
    chain = EmbeddedChain(tmp_path / "chain")  # creating the mint executes a transaction
    chain.fund_creator(Keypair().pubkey(), 5, memo="fp:x87")
    connection = sqlite3.connect(":memory:")
    assert connection.execute("SELECT 0.5, 0.25 < 1.0").fetchone() == (0.5, 1)

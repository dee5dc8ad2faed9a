"""Identities cost something: bonds, bounded work for new keys, slashing, availability.

Real coordinator processes on loopback, real SPL transfers on the embedded chain, and (for the
cheater) real Blender renders and Proof-of-Render. Each test fails on the code before bonds:
there, every key leased at once, idle keys shared the availability mint, and a caught
cheater lost nothing but its pending pay.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from conftest import SAMPLE_SCENE
from farm_helpers import (
    coordinator_cli,
    settled_receipts,
    submit_sample,
    wait_for,
    wait_until_done,
)
from solders.keypair import Keypair
from test_payments_e2e import GRANT
from test_proof_of_render import node_id_of, start_cheater

from frameproof.client import FarmClient
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb
from render_node.cli import main as render_node

TOKEN = 10**6


def node_cli(farm: LocalFarm, name: str, capsys: pytest.CaptureFixture[str],
             *args: str) -> dict:
    """`render-node ... --json` for node `name`, as its operator would run it."""
    capsys.readouterr()
    code = render_node([*args, "--coordinator", farm.address, "--work-dir",
                        str(farm.root / name), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def ledger_ok(farm: LocalFarm) -> None:
    check = coordinator_cli("ledger", "check", "--data-dir", str(farm.data_dir))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "bonds: ledger" in check.stdout and "MISMATCH" not in check.stdout


def close_epoch(farm: LocalFarm) -> dict[str, int]:
    closed = coordinator_cli("epoch", "close", "--data-dir", str(farm.data_dir), "--json")
    assert closed.returncode == 0, closed.stderr
    return {p["node_id"]: p["minted"] for p in json.loads(closed.stdout)["payouts"]}


def test_bond_and_unbond_round_trip_through_the_cli(farm: LocalFarm,
                                                    capsys: pytest.CaptureFixture[str]):
    farm.start_coordinator(extra_args=("--unbond-cooldown-seconds", "0"))
    capsys.readouterr()
    assert render_node(["airdrop", "25", "--coordinator", farm.address, "--work-dir",
                        str(farm.root / "op")]) == 0
    # One money unit in text, as the creator's commands say it: USD, the tokens in brackets.
    assert re.search(r": \$\d+\.\d{6} \(\d+(\.\d+)? tokens\)$", capsys.readouterr().out.strip())
    bonded = node_cli(farm, "op", capsys, "bond", "--tokens", "12")
    assert bonded["state"] == "bonded" and int(bonded["held"]) == 12 * TOKEN
    assert "token_price_usd" not in bonded, "--json stays as it was"
    assert render_node(["bond", "--coordinator", farm.address, "--work-dir",
                        str(farm.root / "op")]) == 0
    shown = capsys.readouterr().out
    assert re.search(r"bond \$\d+\.\d{6} \(12 tokens\) \(bonded; minimum \$\d+\.\d{6} \(",
                     shown), shown
    assert render_node(["earnings", "--coordinator", farm.address, "--work-dir",
                        str(farm.root / "op")]) == 0
    assert re.search(r"^node \w+: \$0\.000000 \(0 tokens\) minted;", capsys.readouterr().out)
    assert bonded["last_state"] == "landed" and bonded["last_signature"]
    assert bonded["bounded"] is True, "a bond alone does not make a verified record"
    ledger_ok(farm)
    returned = node_cli(farm, "op", capsys, "unbond")
    assert returned["state"] == "returned" and int(returned["returned"]) == 12 * TOKEN
    node = node_id_of(farm, "op")
    with FarmClient(farm.address, Keypair.from_json(
            (farm.root / "op" / "node-keypair.json").read_text())) as client:
        wallet = client.jobs.GetWallet(pb.WalletRequest(), timeout=30)
    assert wallet.pubkey == node and wallet.balance == 25 * TOKEN + GRANT  # GetWallet grants
    ledger_ok(farm)
    # A second unbond has nothing to return; a short wallet cannot bond.
    capsys.readouterr()
    assert render_node(["unbond", "--coordinator", farm.address, "--work-dir",
                        str(farm.root / "op")]) == 1
    assert "no bond" in capsys.readouterr().err
    assert render_node(["bond", "--tokens", "1000000", "--coordinator", farm.address,
                        "--work-dir", str(farm.root / "op")]) == 1
    assert "insufficient balance" in capsys.readouterr().err


def test_fifty_fresh_keys_cannot_take_more_than_a_bounded_share(farm: LocalFarm):
    farm.lease_seconds = 120  # no lease may lapse and be taken again during the test
    farm.start_coordinator(extra_args=("--no-verifier",))
    with farm.client() as creator:
        job = submit_sample(creator, SAMPLE_SCENE, "1-24")
    keys = [Keypair() for _ in range(50)]

    def grab(key: Keypair) -> tuple[int, pb.Bond]:
        """A hostile key: register, then ask for work three times without delivering."""
        with FarmClient(farm.address, key) as client:
            node_id = str(key.pubkey())
            client.nodes.RegisterNode(pb.RegisterNodeRequest(node_id=node_id, name="sybil"),
                                      timeout=30, wait_for_ready=True)
            leases = 0
            for _ in range(3):
                answer = client.nodes.LeaseTask(pb.LeaseTaskRequest(node_id=node_id),
                                                timeout=2.5)
                leases += answer.HasField("lease")
            bond = client.nodes.GetBond(pb.GetBondRequest(node_id=node_id), timeout=30)
        return leases, bond

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(grab, keys))
    per_key = [leases for leases, _ in results]
    assert max(per_key) == 1, "one lease in flight per new identity"
    assert sum(per_key) == 24, "every frame was leased once, one per key"
    assert all(bond.bounded and bond.max_leases == 1 and bond.max_frames_per_job == 4
               and bond.state == "none" for _, bond in results)
    with farm.client() as creator:
        leased = creator.jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), timeout=30)
    assert leased.frames.rendering == 24


def test_an_idle_key_that_merely_connected_gets_no_availability_mint(farm: LocalFarm):
    farm.start_coordinator(extra_args=("--no-verifier",))
    farm.bond_node("idle-bonded")
    for key_file in (farm.root / "idle" / "node-keypair.json",
                     farm.root / "idle-bonded" / "node-keypair.json"):
        key_file.parent.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            key_file.write_text(Keypair().to_json())
        key = Keypair.from_json(key_file.read_text())
        with FarmClient(farm.address, key) as client:
            node_id = str(key.pubkey())
            client.nodes.RegisterNode(pb.RegisterNodeRequest(node_id=node_id, name="idle"),
                                      timeout=30, wait_for_ready=True)
            client.nodes.LeaseTask(pb.LeaseTaskRequest(node_id=node_id), timeout=2.5)
    assert close_epoch(farm) == {}, "nobody proved any capacity: nothing is minted"
    ledger_ok(farm)


def test_a_cheating_node_is_slashed_and_the_creator_receives_its_share(
        farm: LocalFarm, capsys: pytest.CaptureFixture[str]):
    farm.start_coordinator()
    farm.bond_node("cheater")
    start_cheater(farm, "cheater", "blank")
    cheater = node_id_of(farm, "cheater")
    with farm.client() as creator:
        job = submit_sample(creator, SAMPLE_SCENE, "1-3")

        def slashed() -> pb.Bond | None:
            bond = creator.nodes.GetBond(pb.GetBondRequest(node_id=cheater), timeout=30)
            return bond if bond.slashed > 0 and bond.last_state else None

        bond = wait_for(slashed, timeout=240)
        farm.start_node("honest")
        honest = node_id_of(farm, "honest")
        wait_until_done(creator, job.job_id, timeout=300)
        receipts = settled_receipts(creator, job.job_id)
        wallet = creator.jobs.GetWallet(pb.WalletRequest(), timeout=30)
    key = Keypair.from_json((farm.root / "cheater" / "node-keypair.json").read_text())
    with FarmClient(farm.address, key) as client, pytest.raises(grpc.RpcError) as refused:
        client.nodes.Unbond(pb.UnbondRequest(node_id=cheater), timeout=30)
    assert "quarantined" in refused.value.details()
    # Half the 10-token bond is slashed; 80% of that goes to the only cheated creator.
    assert bond.slashed == 5 * TOKEN and bond.held == 5 * TOKEN
    share = 4 * TOKEN
    assert wallet.balance == GRANT - receipts.total_tokens_burned + share
    assert {f.node_id for f in receipts.frames} == {honest}
    ledger_ok(farm)
    minted = close_epoch(farm)
    assert minted.get(cheater, 0) == 0 and minted.get(honest, 0) > 0
    ledger_ok(farm)

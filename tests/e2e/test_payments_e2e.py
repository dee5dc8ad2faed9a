"""Burn-and-mint end to end: a real coordinator, nodes, Blender, and SPL Token transactions."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SAMPLE_SCENE
from farm_helpers import (
    coordinator_cli,
    frames,
    render_node_cli,
    settled_receipts,
    submit_sample,
    wait_until_done,
    wait_until_registered,
)
from solders.keypair import Keypair

from coordinator.chain.keys import save_keypair
from coordinator.chain.rpc import RpcChain
from coordinator.chain.testrpc import TestRpcServer
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb

GRANT = 100 * 10**6  # the new-creator grant: 100 tokens of 6 decimals


def node_earnings(farm: LocalFarm, name: str) -> dict:
    result = render_node_cli("earnings", "--coordinator", farm.address,
                             "--work-dir", str(farm.root / name), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_job_burns_for_each_approved_frame_and_refunds_the_rest(farm: LocalFarm):
    farm.start_coordinator()
    farm.start_node("node")
    with farm.client() as client:
        job = submit_sample(client, SAMPLE_SCENE, "1-3")
        wait_until_done(client, job.job_id)
        receipts = settled_receipts(client, job.job_id)
        wallet = client.jobs.GetWallet(pb.WalletRequest(), timeout=30)
    assert receipts.state == "settled" and receipts.refund_signature
    assert [f.frame for f in receipts.frames] == [1, 2, 3]
    assert all(f.tokens_burned > 0 and f.signature and f.cost_usd > 0 for f in receipts.frames)
    assert receipts.total_tokens_burned == sum(f.tokens_burned for f in receipts.frames)
    assert receipts.total_tokens_burned + receipts.refunded == receipts.escrowed
    assert wallet.balance == GRANT - receipts.total_tokens_burned
    assert wallet.escrow == 0
    running = coordinator_cli("ledger", "check", "--data-dir", str(farm.data_dir))
    assert running.returncode == 0, running.stdout + running.stderr
    assert "MISMATCH" not in running.stdout
    farm.stop()
    stopped = coordinator_cli("ledger", "check", "--data-dir", str(farm.data_dir), "--json")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert json.loads(stopped.stdout)["ok"] is True


def test_a_short_balance_is_refused_at_submit(farm: LocalFarm, capsys):
    from frameproof.cli.main import main as frameproof

    farm.start_coordinator()
    status = frameproof(["--coordinator", farm.address, "--keypair", str(farm.creator_keypair),
                         "submit", str(SAMPLE_SCENE), "--frames", "1", "--max-cost", "1000",
                         # a tiny frame: the coordinator probes it before the escrow
                         "--samples", "4", "--resolution-percentage", "20"])
    assert status == 1
    assert "balance" in capsys.readouterr().err.lower()
    with farm.client() as client:
        assert client.jobs.ListJobs(pb.ListJobsRequest(), timeout=10).jobs == []


def test_an_epoch_mints_to_nodes_pro_rata_to_their_approved_work(farm: LocalFarm):
    farm.start_coordinator()
    farm.start_node("node-a")
    farm.start_node("node-b")
    wait_until_registered(farm, ["node-a", "node-b"])
    with farm.client() as client:
        job = submit_sample(client, SAMPLE_SCENE, "1-6")
        wait_until_done(client, job.job_id)
        settled_receipts(client, job.job_id)
        by_node: dict[str, int] = {}
        for frame in frames(client, job.job_id):
            by_node[frame.node_id] = by_node.get(frame.node_id, 0) + 1
    closed = coordinator_cli("epoch", "close", "--data-dir", str(farm.data_dir), "--json")
    assert closed.returncode == 0, closed.stderr
    summary = json.loads(closed.stdout)
    minted = {payout["node_id"]: payout["minted"] for payout in summary["payouts"]}
    earnings = {name: node_earnings(farm, name) for name in ("node-a", "node-b")}
    for record in earnings.values():
        assert record["total_minted"] == minted[record["node_id"]] > 0
        assert record["epochs"][0]["signature"]
    # More approved work, more tokens: the split follows the credits.
    credits = {r["node_id"]: r["epochs"][0]["credits"] for r in earnings.values()}
    busiest = max(credits, key=credits.get)
    assert minted[busiest] == max(minted.values())
    assert sum(minted.values()) <= summary["emission"]
    assert coordinator_cli("ledger", "check", "--data-dir", str(farm.data_dir)).returncode == 0


def test_a_crash_between_sending_a_burn_and_recording_it_burns_once(farm: LocalFarm):
    farm.start_coordinator(env={"FRAMEPROOF_CRASH_AT": "after-send:burn"})
    port = farm.port
    farm.start_node("node")
    with farm.client() as client:
        job = submit_sample(client, SAMPLE_SCENE, "1-2")
    assert farm.coordinator is not None
    assert farm.coordinator.wait(timeout=180) == 137, "the coordinator should die mid-burn"
    farm.start_coordinator(port=port)
    with farm.client() as client:
        wait_until_done(client, job.job_id)
        receipts = settled_receipts(client, job.job_id)
        wallet = client.jobs.GetWallet(pb.WalletRequest(), timeout=30)
    assert [f.frame for f in receipts.frames] == [1, 2]
    assert receipts.total_tokens_burned + receipts.refunded == receipts.escrowed
    assert wallet.balance == GRANT - receipts.total_tokens_burned, "burned exactly once"
    check = coordinator_cli("ledger", "check", "--data-dir", str(farm.data_dir))
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_same_flow_over_the_rpc_backend(farm: LocalFarm, tmp_path: Path):
    treasury = Keypair()
    keypair_file = tmp_path / "treasury.json"
    save_keypair(treasury, keypair_file)
    with TestRpcServer() as server:
        server.svm.airdrop(treasury.pubkey(), 100 * 10**9)
        chain = RpcChain.create_mint(server.url, treasury, poll_interval_s=0.01)
        mint = str(chain.mint)
        chain.close()
        farm.start_coordinator(extra_args=("--cluster", server.url, "--treasury-keypair",
                                           str(keypair_file), "--mint", mint))
        farm.start_node("node")
        with farm.client() as client:
            job = submit_sample(client, SAMPLE_SCENE, "1-2")
            wait_until_done(client, job.job_id)
            receipts = settled_receipts(client, job.job_id)
            wallet = client.jobs.GetWallet(pb.WalletRequest(), timeout=30)
        assert len(receipts.frames) == 2 and receipts.total_tokens_burned > 0
        assert wallet.balance == GRANT - receipts.total_tokens_burned
        check = coordinator_cli("ledger", "check", "--data-dir", str(farm.data_dir))
        assert check.returncode == 0, check.stdout + check.stderr
        farm.stop()

"""One poisoned record never stalls the money path: it is quarantined, everything else settles.

Real SQLite, the real embedded chain (LiteSVM, SPL Token), the real settlement sweep. Each kind
of record is poisoned the way a bug, a hostile value that got past an older coordinator, or a
damaged row would: a frame whose render time is infinite (the charge overflows), a job whose
task rows do not read back (counting its frames raises), a node whose reputation weight is
infinite (the epoch split overflows). Before quarantine each of these stopped every other
creator's charges and refunds, or the whole epoch's mint.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from sqlalchemy import text

from coordinator.chain import signed_deposit
from coordinator.cli import SAVED_CONFIG
from coordinator.cli import main as coordinator_cli
from coordinator.payments import Payments
from coordinator.server import CoordinatorConfig, open_payments
from coordinator.settlement import Settlement
from coordinator.storage.database import open_database
from coordinator.storage.models import JobRecord, SceneRecord
from coordinator.storage.proof import ProofStore, VerificationResult
from coordinator.storage.quarantine import EPOCH_PARTICIPANT, FRAME_CHARGE, JOB_SETTLE, Quarantine
from coordinator.storage.store import FarmStore, FrameOutputRecord

SCENE = "a" * 64
EPOCH_SECONDS = 3600.0
FRAME_SECONDS = 36.0


@dataclass
class Farm:
    data_dir: Path
    store: FarmStore
    proof: ProofStore
    payments: Payments
    settlement: Settlement

    def node(self) -> str:
        node_id = str(Keypair().pubkey())
        self.store.register_node(node_id, "node", "{}", time.time())
        return node_id

    def job(self, node_id: str | None, frames: list[int], *, seconds: float = FRAME_SECONDS,
            cancel: bool = False) -> str:
        """A creator's funded job; with a node, its frames rendered and approved."""
        creator = Keypair()
        job_id = uuid.uuid4().hex[:16]
        amount = 1_000_000
        self.payments.grant(str(creator.pubkey()))
        message = self.payments.deposit_message(str(creator.pubkey()), amount)
        self.payments.open_escrow(job_id, str(creator.pubkey()), signed_deposit(message, creator),
                                  amount, tier=3)
        now = time.time()
        self.store.create_job(JobRecord(job_id=job_id, scene_id=SCENE,
                                        creator=str(creator.pubkey()), tier=3,
                                        frames_spec=",".join(map(str, frames)),
                                        settings_json="{}", created_at=now, updated_at=now),
                              [[frame] for frame in frames], now)
        if cancel:
            self.store.cancel_job(job_id, now)
            return job_id
        assert node_id is not None
        for _ in frames:
            task = self.store.lease_next_task(node_id, now)
            assert task is not None and task.lease_id and task.job_id == job_id
            self.store.complete_task(task.lease_id, node_id, [FrameOutputRecord(
                frame=task.first_frame, sha256="0" * 64, size=1, extension="png",
                render_seconds=seconds)], now)
        while (check := self.proof.lease_verification("verifier", now, 60.0)) is not None:
            self.proof.finish_verification(check.verification_id, "verifier", VerificationResult(
                passed=True, reason="ok", mode="cheap", pixel_sha256=uuid.uuid4().hex * 2,
                details={}), now)
        return job_id

    def settled(self, job_id: str) -> bool:
        job = self.store.get_job(job_id)
        return job is not None and job.settled

    def sql(self, statement: str, **params: object) -> None:
        with self.payments.engine.begin() as db:
            db.execute(text(statement), params)


@pytest.fixture
def farm(tmp_path: Path, db_url: str) -> Iterator[Farm]:
    engine = open_database(db_url)
    # What `serve --db` saves, so the offline commands (doctor) open the same database.
    (tmp_path / SAVED_CONFIG).write_text(json.dumps({"db_url": db_url}))
    store, proof = FarmStore(engine), ProofStore(engine)
    payments = open_payments(CoordinatorConfig(data_dir=tmp_path, epoch_seconds=EPOCH_SECONDS),
                             engine)
    store.save_scene(SceneRecord(scene_id=SCENE, main_file="scene.blend", info_json="{}",
                                 created_at=time.time()))
    yield Farm(tmp_path, store, proof, payments, Settlement(store, proof, payments))
    payments.chain.close()
    engine.dispose()


def test_poisoned_records_of_every_kind_are_quarantined_and_the_rest_settles(
        farm: Farm, capsys: pytest.CaptureFixture[str]) -> None:
    poisoned_node, honest_node, cheat_weight_node = farm.node(), farm.node(), farm.node()
    # Created first, so today's sweep meets them before anything else.
    infinite = farm.job(poisoned_node, [1], seconds=float("inf"))
    unreadable = farm.job(None, [1, 2], cancel=True)
    farm.sql("UPDATE task SET state = 'garbled' WHERE job_id = :job", job=unreadable)
    honest = farm.job(honest_node, [1, 2])
    refunded = farm.job(None, [1], cancel=True)
    weighted = farm.job(cheat_weight_node, [1])
    farm.proof.standing(cheat_weight_node)  # the row exists once the node was judged
    farm.sql("UPDATE node_standing SET score = :inf WHERE node_id = :node",
             inf=float("inf"), node=cheat_weight_node)

    farm.settlement.sweep()

    assert all(farm.settled(job) for job in (honest, refunded, weighted))
    assert not farm.settled(infinite) and not farm.settled(unreadable)
    receipts = farm.payments.receipts(honest)
    assert len(receipts.frames) == 2 and receipts.refund > 0
    assert receipts.refund_state == "landed"
    assert farm.payments.receipts(refunded).refund == 1_000_000
    held = {(h.kind, h.key): h.reason for h in Quarantine(farm.payments.engine).held()}
    assert "OverflowError" in held[(FRAME_CHARGE, f"{infinite}:1")]
    assert "ValueError" in held[(JOB_SETTLE, unreadable)]

    due = farm.payments.next_epoch_due()
    assert due is not None
    farm.settlement.sweep(due + 1)  # the epoch closes without the node it cannot weigh
    summary = farm.payments.epoch_summary(1)
    paid = {p.node_id: p for p in summary.payouts}
    assert paid[honest_node].work_amount > 0 and paid[honest_node].state == "landed"
    assert cheat_weight_node not in paid
    assert farm.payments.chain.token_balance(Pubkey.from_string(cheat_weight_node)) == 0
    held = {(h.kind, h.key): h.reason for h in Quarantine(farm.payments.engine).held()}
    assert "weight inf" in held[(EPOCH_PARTICIPANT, cheat_weight_node)]

    report = farm.payments.check()
    assert report.ok, report.lines
    assert any("3 record(s) quarantined" in line for line in report.lines), report.lines

    # The operator's view, straight from the data dir while the farm is up.
    assert coordinator_cli(["doctor", "--data-dir", str(farm.data_dir)]) == 1
    shown = capsys.readouterr().out
    for key in (f"{infinite}:1", unreadable, cheat_weight_node):
        assert key in shown
    assert coordinator_cli(["doctor", "--data-dir", str(farm.data_dir), "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)["quarantined"]
    assert {(r["kind"], r["key"]) for r in listed} == {
        (FRAME_CHARGE, f"{infinite}:1"), (JOB_SETTLE, unreadable),
        (EPOCH_PARTICIPANT, cheat_weight_node)}

    # Fixed and released, the frame is charged and its job settles on the next sweep.
    farm.sql("UPDATE frame_result SET render_seconds = 36 WHERE job_id = :job", job=infinite)
    assert coordinator_cli(["doctor", "--data-dir", str(farm.data_dir), "--release",
                            FRAME_CHARGE, f"{infinite}:1"]) == 1  # two are still held
    farm.settlement.sweep()
    assert farm.settled(infinite) and len(farm.payments.receipts(infinite).frames) == 1
    assert farm.payments.check().ok


def test_many_poisoned_frames_do_not_starve_the_charge_queue(farm: Farm) -> None:
    """The sweep charges 100 frames at a time: quarantined ones must not fill the batch."""
    from coordinator import settlement

    node = farm.node()
    stuck = farm.job(node, [1, 2, 3], seconds=float("inf"))
    honest = farm.job(node, [1])
    batch, settlement.CHARGE_BATCH = settlement.CHARGE_BATCH, 2
    try:
        farm.settlement.sweep()  # quarantines two of the three; the batch is full of them
        farm.settlement.sweep()  # the third
        farm.settlement.sweep()
    finally:
        settlement.CHARGE_BATCH = batch
    assert farm.settled(honest)
    assert len(Quarantine(farm.payments.engine).keys(FRAME_CHARGE)) == 3
    assert not farm.settled(stuck)


def test_doctor_on_a_healthy_farm_says_so(farm: Farm, capsys: pytest.CaptureFixture[str]) -> None:
    assert coordinator_cli(["doctor", "--data-dir", str(farm.data_dir)]) == 0
    assert "no quarantined records" in capsys.readouterr().out

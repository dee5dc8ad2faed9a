"""Money follows verified work: a sweep that books what Proof-of-Render decided.

It runs on a timer rather than inside the RPC that approved a frame, so a crash
between "approved" and "charged" only delays a charge: the next sweep (after a
restart too) books it, and every payments call it makes is idempotent.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from decimal import Decimal

from coordinator.bonding import availability
from coordinator.domain.budget import CHARGE_SHORT, may_lease
from coordinator.domain.pricing import (
    claim_mismatch,
    claimed_work_ratio,
    finite_positive,
    frame_work_ms,
    relative_factor,
)
from coordinator.domain.states import TERMINAL_JOB_STATES, TaskState, job_state_from_frames
from coordinator.domain.timeline import Phase
from coordinator.payments import Payments
from coordinator.payments.bonds import Bonds
from coordinator.payments.journal import parse_pubkey
from coordinator.payments.results import EscrowShort, PaymentError
from coordinator.storage import settlement_reads
from coordinator.storage.models import FrameResultRecord, JobRecord
from coordinator.storage.pricing_store import PricingStore
from coordinator.storage.proof import ProofStore
from coordinator.storage.quarantine import (
    EPOCH_PARTICIPANT,
    FRAME_CHARGE,
    JOB_SETTLE,
    ORPHAN_REFUND,
    TRANSIENT,
    Quarantine,
)
from coordinator.storage.store import FarmStore
from coordinator.storage.timeline import TimelineStore

log = logging.getLogger(__name__)

ORPHAN_ESCROW_SECONDS = 60.0  # escrow opened, job never created (crash in between): refund
ORPHAN_SCAN_SECONDS = 30.0  # orphans are rare: look for them now and then, not every sweep
CHARGE_BATCH = 100  # approved frames charged per sweep (plus as many as are quarantined)


class Settlement:
    def __init__(self, store: FarmStore, proof: ProofStore, payments: Payments,
                 on_change: Callable[[str], None] = lambda _job_id: None,
                 on_work: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.proof = proof
        self.payments = payments
        self.on_change = on_change
        self.on_work = on_work  # a paused job resumed: wake the nodes waiting for work
        self.quarantine = Quarantine(payments.engine)
        self.pricing = PricingStore(store.engine)
        self.timeline = TimelineStore(store.engine)
        self._last_orphan_scan = 0.0

    def sweep(self, now: float | None = None) -> None:
        """Charge approved frames, settle ended jobs, refund orphaned escrow, close epochs."""
        now = time.time() if now is None else now
        for step in (self._charge_frames, self._revisit_paused, self._settle_jobs,
                     self._refund_orphans, self._close_epoch):
            try:
                step(now)
            except Exception:  # e.g. the database is down: the other steps still run
                log.exception("settlement step %s failed; the next sweep retries",
                              step.__name__)

    def _charge_frames(self, now: float) -> None:
        # Each frame on its own: one that cannot be charged is quarantined, not retried
        # forever in front of the others (coordinator.storage.quarantine).
        held = self.quarantine.keys(FRAME_CHARGE)
        short: set[str] = set()  # jobs whose escrow ran short this sweep: they pause
        for frame, tier, score in self.store.uncharged_frames(CHARGE_BATCH + len(held)):
            key = f"{frame.job_id}:{frame.frame}"
            if key not in held and frame.job_id not in short \
                    and self._charge_isolated(frame, tier, score, now) is False:
                short.add(frame.job_id)

    def _charge_frame(self, frame: FrameResultRecord, tier: int, score: float,
                      now: float) -> bool:
        """Book one approved frame; False when the escrow cannot cover it (the job pauses).

        Nothing is ever cut short: the frame keeps its image and waits for a top-up. A
        cancelled job's frame the escrow cannot pay is marked unpaid for good (its creator
        never gets it, its node is not credited) so the rest can be refunded.
        """
        work = self._network_work(frame)
        try:
            self.payments.charge_frame(frame.job_id, frame.frame, frame.node_id,
                                       frame.render_seconds, score, tier, work=work)
        except EscrowShort as short:
            job = self.store.get_job(frame.job_id)
            if job is not None and job.cancelled:
                log.warning("cancelled job %s: frame %d is unpaid (%s)", frame.job_id,
                            frame.frame, short)
                self.store.mark_unpaid(frame.job_id, frame.frame)
                self.on_change(frame.job_id)
                return True
            if self.store.pause_job(frame.job_id, CHARGE_SHORT, now, short.cost_tokens):
                log.warning("job %s paused: %s", frame.job_id, short)
                self.on_change(frame.job_id)
            return False
        except PaymentError as error:
            log.error("job %s frame %d cannot be charged: %s", frame.job_id, frame.frame, error)
            return False
        self.store.mark_charged(frame.job_id, frame.frame)
        if work is not None:
            self._compare_claims(frame, score, work, now)
        self.on_change(frame.job_id)
        return True

    def _charge_isolated(self, frame: FrameResultRecord, tier: int, score: float,
                         now: float) -> bool | None:
        """`_charge_frame`, with a frame that raises quarantined (None: it was)."""
        charged = None
        with self.quarantine.isolated(FRAME_CHARGE, f"{frame.job_id}:{frame.frame}", now=now):
            charged = self._charge_frame(frame, tier, score, now)
        return charged

    def _revisit_paused(self, now: float) -> None:
        """Charge paused jobs' waiting frames; resume those the escrow covers again."""
        held = self.quarantine.keys(FRAME_CHARGE)
        for job, _budget in self.store.paused_jobs():
            waiting = self.store.waiting_frames(job.job_id)
            if any(f"{job.job_id}:{frame.frame}" in held for frame, _, _ in waiting):
                continue  # a quarantined frame: the operator looks at it first
            if not all(self._charge_isolated(frame, tier, score, now)
                       for frame, tier, score in waiting):
                continue
            view = self.store.budget_view(job.job_id)
            covered = (job.cancelled or view is None
                       or view.remaining_frames <= view.committed_frames  # none left to lease
                       or may_lease(view, job.chunk_size))
            if covered and self.store.resume_job(job.job_id, now):
                log.info("job %s resumed", job.job_id)
                self.on_change(job.job_id)
                self.on_work()

    def _network_work(self, frame: FrameResultRecord) -> int | None:
        """The frame's work from the job's quote and its node's timing shape (pricing.py).

        None for jobs submitted before quotes existed: those are still priced from claims.
        """
        quote = self.pricing.quote(frame.job_id)
        if quote is None:
            return None
        factor = relative_factor(frame.render_seconds,
                                 self.pricing.node_job_seconds(frame.job_id, frame.node_id))
        return frame_work_ms(quote.ms_per_frame, factor)

    def _compare_claims(self, frame: FrameResultRecord, score: float, work: int,
                        now: float) -> None:
        """Keep the network's measure next to the claims; flag a node whose claims are far off."""
        self.pricing.set_work(frame.job_id, frame.frame, work)
        quote = self.pricing.quote(frame.job_id)
        if quote is None or self.pricing.flagged(frame.node_id, frame.job_id):
            return
        claims = self.pricing.node_job_seconds(frame.job_id, frame.node_id)
        ratio = claimed_work_ratio(claims, score, quote.ms_per_frame)
        if not claim_mismatch(ratio):
            return
        assert ratio is not None
        median = statistics.median(t for t in claims if finite_positive(t))
        reason = (f"claimed {median:.2f} s x score {score:.2f} = {median * score:.2f} "
                  f"reference s per frame (median of {len(claims)} frames); the network "
                  f"measured {quote.ms_per_frame / 1000:.2f} reference s ({ratio:.1f}x)")
        log.warning("node %s, job %s: %s", frame.node_id[:12], frame.job_id, reason)
        self.pricing.flag_claim_mismatch(
            frame.node_id, frame.job_id, frame.frame, reason,
            {"claimed_seconds_median": median, "claimed_score": score,
             "network_reference_seconds": quote.ms_per_frame / 1000, "ratio": ratio}, now)

    def _settle_jobs(self, now: float) -> None:
        jobs = self.store.jobs_ready_to_settle()
        try:
            counts = self.store.frame_counts(job.job_id for job in jobs)
        except TRANSIENT:
            raise
        except Exception:  # one job's tasks do not read back: count each job on its own
            counts = None
        held = self.quarantine.keys(JOB_SETTLE)
        for job in jobs:
            if job.job_id not in held:
                with self.quarantine.isolated(JOB_SETTLE, job.job_id, now=now):
                    self._settle_job(job, self.store.frame_counts([job.job_id])[job.job_id]
                                     if counts is None else counts[job.job_id], now)

    def _settle_job(self, job: JobRecord, counts: dict[TaskState, int], now: float) -> None:
        state = job_state_from_frames(counts, cancelled=job.cancelled)
        waiting = counts.get(TaskState.VERIFYING, 0)
        if state not in TERMINAL_JOB_STATES or waiting:
            return
        if self.store.uncharged_frames_of(job.job_id):
            return  # charge every approved frame before the rest is refunded
        try:
            receipts = self.payments.settle_job(job.job_id)
        except PaymentError as error:
            log.error("job %s cannot be settled yet: %s", job.job_id, error)
            return
        self.store.mark_settled(job.job_id, now)
        settled = time.time()  # the chain's transfers took their time since `now`
        self.timeline.record(job.job_id, [Phase("settlement", now, settled, settled - now)])
        log.info("job %s settled: %d burned, %d refunded", job.job_id,
                 receipts.total_tokens_burned, receipts.refund)
        self.on_change(job.job_id)

    def _refund_orphans(self, now: float) -> None:
        if now - self._last_orphan_scan < ORPHAN_SCAN_SECONDS:
            return
        self._last_orphan_scan = now
        orphans = settlement_reads.orphan_escrows(self.payments.engine,
                                                  now - ORPHAN_ESCROW_SECONDS)
        held = self.quarantine.keys(ORPHAN_REFUND)
        for job_id in orphans:
            if job_id in held:
                continue
            log.warning("escrow of job %s has no job (crash at submit): refunding", job_id)
            with self.quarantine.isolated(ORPHAN_REFUND, job_id, now=now):
                self.payments.settle_job(job_id)

    def _close_epoch(self, now: float) -> None:
        due = self.payments.next_epoch_due()
        if due is None or now < due:
            return
        nodes, weights = screened_participants(self.store, self.proof, self.payments,
                                               self.quarantine, now)
        summary = self.payments.close_epoch_if_due(now, nodes, weights)
        if summary is not None:
            log.info("epoch %d closed: %d minted to %d nodes", summary.epoch,
                     sum(p.amount for p in summary.payouts), len(summary.payouts))


def epoch_participants(store: FarmStore, proof: ProofStore, window: float, now: float,
                       bonds: Bonds) -> tuple[dict[str, float], dict[str, float]]:
    """The availability share's nodes with their weights, and every node's work weight.

    Availability goes only to capacity the network proved: bonded nodes that answered
    through the epoch, weighted by the work verified from them in it (coordinator/bonding.py);
    a key that merely connected gets nothing. The work weight is the node's reputation score;
    a quarantined node weighs nothing: a caught cheater earns nothing, not even for its
    approved frames.
    """
    standings = proof.standings()
    quarantined = {node for node, record in standings.items() if record.quarantined}
    available = availability(store, proof, bonds, window, now)
    weights = {n.node_id: 0.0 if n.node_id in quarantined
               else (standings[n.node_id].score if n.node_id in standings else 0.5)
               for n in store.list_nodes()}
    return available, weights


def screened_participants(store: FarmStore, proof: ProofStore, payments: Payments,
                          quarantine: Quarantine,
                          now: float) -> tuple[dict[str, float], dict[str, float]]:
    """`epoch_participants`, each node checked on its own before the epoch is planned.

    A node the mint could not pay (its id is no public key) or whose weight is not a number
    in [0, 1] would fail the whole epoch's close for every node: it is quarantined instead,
    weighs 0 and is not available, and the others are paid.
    """
    nodes, weights = epoch_participants(store, proof, float(payments.epochs.length_seconds), now,
                                        payments.bonds)
    earners = settlement_reads.open_epoch_earners(payments.engine)
    held = quarantine.keys(EPOCH_PARTICIPANT)
    for node in sorted(set(nodes) | set(weights) | earners):
        if node not in held:
            with quarantine.isolated(EPOCH_PARTICIPANT, node, now=now):
                _check_participant(node, weights.get(node, 1.0))
                continue
            held.add(node)
    return ({n: share for n, share in nodes.items() if n not in held},
            {**weights, **{node: 0.0 for node in held}})


def _check_participant(node: str, weight: float) -> None:
    parse_pubkey(node)
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and 0 <= weight <= 1):
        raise ValueError(f"reputation weight {weight!r} is not a number in [0, 1]")


def usd(value: float) -> Decimal:
    """A wire double as a USD Decimal (micro-dollar precision)."""
    return Decimal(str(round(value, 6)))

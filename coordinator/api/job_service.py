"""JobService: what creators call. Thin: validate, call the store, answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator

import grpc

from coordinator.access import AccessPolicy
from coordinator.api import convert
from coordinator.api.auth import current_caller
from coordinator.api.errors import maps_domain_errors, require_id
from coordinator.api.validation import MAX_JOB_COST_USD
from coordinator.domain.budget import LEASE_SHORT, pause_reason, topup_suggestion
from coordinator.domain.control import (
    check_creator,
    check_steerable,
    check_top_up,
)
from coordinator.domain.errors import InvalidRequest, NotFound, Refused
from coordinator.domain.frames import FrameSpecError, format_frames, parse_frames
from coordinator.domain.jobs import (
    JobRequest,
    check_request,
    check_tier,
    compile_job,
    job_frames,
    reserved_frame_price,
)
from coordinator.domain.pricing import CostEstimate, estimate, tokens_to_usd
from coordinator.domain.states import TERMINAL_JOB_STATES, TaskState
from coordinator.domain.timeline import CREATOR_PHASES, Phase
from coordinator.events import JobEvents
from coordinator.intake import (
    IntakeError,
    MissingBlobsError,
    SceneIntake,
    render_notices,
    scene_range,
)
from coordinator.intake import scene_inspection as inspection_of
from coordinator.payments import Payments
from coordinator.payments.results import InsufficientBalance, PaymentError
from coordinator.probe import Prober, quote_of
from coordinator.settlement import usd
from coordinator.storage.control import ControlError, JobControl, frame_log
from coordinator.storage.interfaces import VerificationStore
from coordinator.storage.models import JobQuoteRecord, JobRecord, PriceProbeRecord
from coordinator.storage.store import FarmStore
from coordinator.storage.timeline import TimelineStore
from coordinator.storage.verification_queue import QueueStanding
from coordinator.warm_blender import SceneSession, WarmBlender
from frameproof.region import EmptyRegion
from frameproof.render_settings import layout
from frameproof.v1 import farm_pb2 as pb
from frameproof.v1 import farm_pb2_grpc

log = logging.getLogger(__name__)

MAX_AIRDROP_TOKENS = 1_000_000
WATCH_POLL_SECONDS = 2.0
DEFAULT_LIST_JOBS = 100  # a creator with years of jobs still gets a small, fast answer
MAX_LIST_JOBS = 1000


@maps_domain_errors
class JobServicer(farm_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        store: FarmStore,
        intake: SceneIntake,
        events: JobEvents,
        access: AccessPolicy,
        payments: Payments,
        *,
        allow_airdrop: bool,
        prober: Prober,
        proof: VerificationStore | None = None,
        timeline: TimelineStore | None = None,
        warm: WarmBlender | None = None,
    ) -> None:
        self.store = store
        self.timeline = timeline or TimelineStore(store.engine)
        self.proof = proof  # where frames stand in the verification queue
        self.intake = intake
        self.events = events
        self.access = access
        self.payments = payments
        self.allow_airdrop = allow_airdrop
        self.prober = prober
        self.warm = warm  # the spare Blender child a new scene's inspection and probe share
        self.control = JobControl(store.engine)

    async def InspectScene(self, request, context):
        scene_id = await require_id(context, request.scene_id, "scene_id")
        async with self._scene_session(scene_id) as session:
            record = await self._accept_scene(scene_id, context, session)
        return pb.InspectSceneResponse(scene=convert.scene_info(record))

    async def SubmitJob(self, request, context):
        scene_id = await require_id(context, request.scene_id, "scene_id")
        wanted = JobRequest(frames=request.frames, chunk_size=request.chunk_size,
                            tier=request.tier, name=request.name)
        check_request(wanted)
        await self._check_settings(request.settings, context)
        phases = [Phase(p.phase, p.started_at, p.ended_at, p.seconds)
                  for p in request.creator_phases if p.phase in CREATOR_PHASES]
        started = time.time()
        async with self._scene_session(scene_id) as session:
            scene = await self._accept_scene(scene_id, context, session)
            inspection = inspection_of(scene)
            frames = job_frames(request.frames, scene_range(inspection))
            job = compile_job(wanted, frames, default_name=scene.main_file)
            settings = convert.effective_settings(request.settings, inspection)
            _check_layout(settings)
            creator = current_caller().pubkey
            inspected = time.time()
            phases.append(Phase("inspection", started, inspected, inspected - started))
            probe = await self._probe(scene_id, settings, frames, session)
        quoted = time.time()
        phases.append(Phase("quote", inspected, quoted, quoted - inspected))
        cost = self._estimate(probe, len(frames), job.tier)
        max_cost = usd(request.max_cost_usd) if request.max_cost_usd > 0 else cost.max_cost_usd
        if not request.signed_deposit:
            raise Refused("no escrow deposit: call PrepareDeposit for the job's maximum "
                          f"cost (${max_cost}) and sign it (frameproof submit does this)")
        job_id = uuid.uuid4().hex[:16]
        try:
            await asyncio.to_thread(self.payments.open_escrow, job_id, creator,
                                    request.signed_deposit,
                                    self.payments.escrow_amount(max_cost), tier=job.tier)
        except InsufficientBalance as error:
            raise Refused(str(error)) from error
        except PaymentError as error:
            raise InvalidRequest(f"escrow refused: {error}") from error
        now = time.time()
        phases.append(Phase("escrow", quoted, now, now - quoted))
        record = JobRecord(
            job_id=job_id,
            name=job.name,
            scene_id=scene_id,
            creator=creator,
            tier=job.tier,
            max_cost_usd=float(max_cost),
            frames_spec=job.frames_spec,
            chunk_size=job.chunk_size,
            settings_json=convert.settings_to_json(settings),
            created_at=now,
            updated_at=now,
        )
        self.prober.store.save_quote(JobQuoteRecord(
            job_id=job_id, probe_key=probe.probe_key, method=probe.method,
            ms_per_frame=probe.ms_per_frame, low_ms_per_frame=probe.low_ms_per_frame,
            high_ms_per_frame=probe.high_ms_per_frame, frames=len(frames),
            cost_usd=float(cost.cost_usd), cost_low_usd=float(cost.cost_low_usd),
            cost_high_usd=float(cost.cost_high_usd), created_at=now))
        # Leases reserve escrow at the quote's price per frame until charges say better.
        frame_price = reserved_frame_price(self.payments.escrow_amount(cost.cost_usd),
                                           len(frames))
        self.store.create_job(record, [list(task) for task in job.tasks], now,
                              frame_price_tokens=frame_price)
        self.events.work_queued()
        await asyncio.to_thread(self.timeline.record, job_id, phases)
        log.info("job %s: %d frames of scene %s", job_id, len(frames), scene_id[:12])
        return pb.SubmitJobResponse(job=self._job_message(job_id))

    async def EstimateJob(self, request, context):
        scene_id = await require_id(context, request.scene_id, "scene_id")
        tier = check_tier(request.tier)
        await self._check_settings(request.settings, context)
        async with self._scene_session(scene_id) as session:
            inspection = inspection_of(await self._accept_scene(scene_id, context, session))
            frames = job_frames(request.frames, scene_range(inspection))
            settings = convert.effective_settings(request.settings, inspection)
            _check_layout(settings)
            probe = await self._probe(scene_id, settings, frames, session)
        cost = self._estimate(probe, len(frames), tier)
        pricing = self.payments.pricing
        return pb.Estimate(
            frames=len(frames),
            reference_seconds_per_frame=cost.quote.ms_per_frame / 1000,
            cost_usd=float(cost.cost_usd),
            max_cost_usd=float(cost.max_cost_usd),
            tokens=cost.max_tokens,
            token_price_usd=float(pricing.token_price_usd),
            decimals=pricing.decimals,
            cost_low_usd=float(cost.cost_low_usd),
            cost_high_usd=float(cost.cost_high_usd),
            reference_seconds_low_per_frame=cost.quote.low_ms_per_frame / 1000,
            reference_seconds_high_per_frame=cost.quote.high_ms_per_frame / 1000,
            method=cost.quote.method,
            probe_frames=json.loads(probe.frames_json),
            note=probe.note,
            notices=render_notices(inspection, settings.samples),
        )

    async def PrepareDeposit(self, request, context):
        if not 0 < request.amount_usd <= MAX_JOB_COST_USD:
            raise InvalidRequest(f"amount_usd must be in (0, {MAX_JOB_COST_USD}]")
        creator = current_caller().pubkey
        await self._grant_once(creator)
        tokens = self.payments.escrow_amount(usd(request.amount_usd))
        if tokens <= 0:
            raise InvalidRequest("the amount is below one token base unit")
        try:
            message = await asyncio.to_thread(self.payments.deposit_message, creator, tokens)
        except PaymentError as error:
            raise Refused(str(error)) from error
        return pb.PrepareDepositResponse(message=message, tokens=tokens)

    async def GetWallet(self, request, context):
        creator = current_caller().pubkey
        await self._grant_once(creator)
        return await self._wallet(creator)

    async def Airdrop(self, request, context):
        if not self.allow_airdrop:
            raise Refused("airdrops exist only on the embedded chain and test clusters")
        limit = MAX_AIRDROP_TOKENS * self.payments.pricing.base_units_per_token
        if not 0 < request.tokens <= limit:
            raise InvalidRequest(f"tokens must be in (0, {limit}] base units")
        creator = current_caller().pubkey
        await asyncio.to_thread(self.payments.airdrop, creator, request.tokens)
        return await self._wallet(creator)

    async def GetReceipts(self, request, context):
        job_id = await self._existing_job_id(request.job_id, context)
        try:
            receipts = await asyncio.to_thread(self.payments.receipts, job_id)
        except PaymentError as error:
            raise NotFound(str(error)) from error
        return pb.Receipts(
            job_id=job_id,
            frames=[pb.FrameReceipt(frame=c.frame, node_id=c.node_id, cost_usd=float(c.cost_usd),
                                    tokens_burned=c.tokens_burned, signature=c.signature or "")
                    for c in receipts.frames],
            total_cost_usd=float(receipts.total_cost_usd),
            total_tokens_burned=receipts.total_tokens_burned,
            escrowed=receipts.deposited,
            refunded=receipts.refund,
            deposit_signature=receipts.deposit_signature or "",
            refund_signature=receipts.refund_signature or "",
            decimals=self.payments.pricing.decimals,
            state=receipts.state,
            refund_state=receipts.refund_state or "",
            token_price_usd=float(self.payments.pricing.token_price_usd),
        )

    async def GetJob(self, request, context):
        return self._job_message(await self._existing_job_id(request.job_id, context))

    async def GetJobTimeline(self, request, context):
        job_id = await self._existing_job_id(request.job_id, context)
        job = self.store.get_job(job_id)
        assert job is not None
        total = sum(self.store.frame_counts([job_id])[job_id].values())
        found = await asyncio.to_thread(self.timeline.timeline, job, total)
        return pb.JobTimeline(
            job_id=job_id, submitted_at=found.submitted_at,
            first_approved_at=found.first_approved_at, done_at=found.done_at,
            phases=[pb.JobPhase(phase=p.name, started_at=p.started_at, ended_at=p.ended_at,
                                seconds=p.seconds) for p in found.phases])

    async def ListJobs(self, request, context):
        caller = current_caller()
        if not 0 <= request.limit <= MAX_LIST_JOBS:
            raise InvalidRequest(
                f"limit must be in [0, {MAX_LIST_JOBS}] (0: {DEFAULT_LIST_JOBS})")
        creator = None if self.access.is_admin(caller) else caller.pubkey
        jobs, total = self.store.list_jobs(creator, request.limit or DEFAULT_LIST_JOBS)
        counts = self.store.frame_counts(job.job_id for job in jobs)
        paused, awaiting = self.store.budget_flags(job.job_id for job in jobs)
        paused |= {job_id for job_id, control in self.control.get(
            job.job_id for job in jobs).items() if control.paused}
        return pb.ListJobsResponse(
            jobs=[convert.job_message(job, counts[job.job_id], None,
                                      paused=job.job_id in paused,
                                      awaiting_charge=job.job_id in awaiting) for job in jobs],
            total=total,
        )

    async def WatchJob(self, request, context):
        job_id = await self._existing_job_id(request.job_id, context)
        last: pb.Job | None = None
        while True:
            changed = self.events.subscribe(job_id)
            job = self._job_message(job_id)
            if last is None or _progress(job) != _progress(last):
                yield job
                last = job
            if job.state in {convert.JOB_STATES[state] for state in TERMINAL_JOB_STATES}:
                return
            await self.events.wait(changed, WATCH_POLL_SECONDS)

    async def CancelJob(self, request, context):
        job_id = await self._existing_job_id(request.job_id, context)
        self.store.cancel_job(job_id, time.time())  # refuses a job already done
        self.events.changed(job_id)
        log.info("job %s cancelled", job_id)
        return self._job_message(job_id)

    async def TopUpJob(self, request, context):
        job_id = await self._existing_job_id(request.job_id, context)
        if not 0 < request.amount_usd <= MAX_JOB_COST_USD:
            raise InvalidRequest(f"amount_usd must be in (0, {MAX_JOB_COST_USD}]")
        if not request.signed_deposit:
            raise InvalidRequest("no deposit: call PrepareDeposit for the amount and sign it "
                                 "(frameproof topup does this)")
        creator = current_caller().pubkey
        job = self.store.get_job(job_id)
        assert job is not None
        check_creator(job_id, job.creator, creator, "top it up")
        check_top_up(job_id, cancelled=job.cancelled, settled=job.settled)
        tokens = self.payments.escrow_amount(usd(request.amount_usd))
        try:
            receipt = await asyncio.to_thread(self.payments.top_up, job_id, creator,
                                              request.signed_deposit, tokens)
        except InsufficientBalance as error:
            raise Refused(str(error)) from error
        except PaymentError as error:
            raise Refused(f"top-up refused: {error}") from error
        log.info("job %s topped up by %d base units", job_id, tokens)
        self.events.changed(job_id)  # the settlement sweep resumes it within a second
        return pb.TopUpResponse(job=self._job_message(job_id), tokens=tokens,
                                deposit_signature=receipt.signature)

    async def ListFrames(self, request, context):
        job_id = await self._existing_job_id(request.job_id, context)
        frames = convert.frame_messages(
            self.store.list_tasks(job_id),
            self.store.list_frame_results(job_id),
            self.store.failures_by_task(job_id),
        )
        return pb.ListFramesResponse(frames=frames)

    # ------------------------------------------------------------ job control

    async def PauseJob(self, request, context):
        """No new frames of the job are leased; frames in flight finish and are kept."""
        job_id = await self._own_live_job(request.job_id, context, "pause")
        if self.control.set_paused(job_id, True, time.time()):
            log.info("job %s paused by its creator", job_id)
        self.events.changed(job_id)
        return self._job_message(job_id)

    async def ResumeJob(self, request, context):
        """Lifts the creator's pause only: a budget pause stays until the escrow covers it."""
        job_id = await self._own_live_job(request.job_id, context, "resume")
        if self.control.set_paused(job_id, False, time.time()):
            log.info("job %s resumed by its creator", job_id)
        self.events.changed(job_id)
        self.events.work_queued()
        return self._job_message(job_id)

    async def SetJobPriority(self, request, context):
        job_id = await self._own_live_job(request.job_id, context, "reprioritise")
        try:
            self.control.set_priority(job_id, request.priority, time.time())
        except ControlError as error:
            raise InvalidRequest(str(error)) from error
        self.events.changed(job_id)
        return self._job_message(job_id)

    async def RequeueFrames(self, request, context):
        job_id = await self._own_live_job(request.job_id, context, "requeue frames of")
        try:
            frames = parse_frames(request.frames)
        except FrameSpecError as error:
            raise InvalidRequest(str(error)) from error
        try:
            queued = self.control.requeue(job_id, frames, time.time())
        except ControlError as error:
            raise Refused(str(error)) from error
        log.info("job %s: frames %s requeued by its creator", job_id, format_frames(queued))
        self.events.changed(job_id)
        self.events.work_queued()
        return pb.RequeueFramesResponse(job=self._job_message(job_id), frames=queued)

    async def GetFrameLog(self, request, context):
        """Blender's output for a frame; only the job's creator reads it (not even admins:
        it may show their scene's names)."""
        job_id = await self._existing_job_id(request.job_id, context)
        job = self.store.get_job(job_id)
        assert job is not None
        check_creator(job_id, job.creator, current_caller().pubkey, "read its logs")
        record = frame_log(self.store.engine, job_id, request.frame)
        if record is None:
            raise NotFound(f"no log for frame {request.frame} of job {job_id} (not "
                           "rendered yet, or not a frame of the job)")
        return pb.FrameLog(job_id=job_id, frame=record.frame, node_id=record.node_id,
                           text=record.text)

    async def _own_live_job(self, job_id: str, context: grpc.aio.ServicerContext,
                            verb: str) -> str:
        """The caller's own job (by id or prefix): only its creator steers it."""
        job_id = await self._existing_job_id(job_id, context)
        job = self.store.get_job(job_id)
        assert job is not None
        check_creator(job_id, job.creator, current_caller().pubkey, f"{verb} it")
        check_steerable(job_id, cancelled=job.cancelled)
        return job_id

    # ------------------------------------------------------------ helpers

    def _estimate(self, probe: PriceProbeRecord, frames: int, tier: int) -> CostEstimate:
        return estimate(self.payments.pricing, quote_of(probe), frames=frames, tier=tier)

    async def _probe(self, scene_id: str, settings: pb.RenderSettings,
                     frames: list[int], session: SceneSession | None) -> PriceProbeRecord:
        """The scene measured at these settings (cached: submit reuses the estimate's)."""
        blend = await self.intake.blend_path(scene_id)
        return await self.prober.probe(scene_id, blend, settings, frames, session=session)

    @contextlib.asynccontextmanager
    async def _scene_session(self, scene_id: str) -> AsyncIterator[SceneSession | None]:
        """One Blender child for this request's work on the scene (inspection, probe), taken
        from the spare on first need and closed at the end (in the background: the answer
        does not wait for Blender to quit); None without a spare."""
        if self.warm is None:
            yield None
            return
        session = SceneSession(self.warm, scene_id)
        try:
            yield session
        finally:
            if session.used:
                threading.Thread(target=session.close, name="scene-session-close",
                                 daemon=True).start()

    async def _grant_once(self, creator: str) -> None:
        """New creators on the embedded chain and test clusters start with a grant."""
        if self.allow_airdrop:
            await asyncio.to_thread(self.payments.grant, creator)

    async def _wallet(self, creator: str) -> pb.Wallet:
        wallet = await asyncio.to_thread(self.payments.wallet, creator)
        pricing = self.payments.pricing
        return pb.Wallet(pubkey=creator, balance=wallet.balance, escrow=wallet.escrow_held,
                         decimals=pricing.decimals,
                         token_price_usd=float(pricing.token_price_usd))

    def _job_message(self, job_id: str) -> pb.Job:
        job = self.store.get_job(job_id)
        assert job is not None
        counts = self.store.frame_counts([job_id])[job_id]
        paused, awaiting = self.store.budget_flags([job_id])
        control = self.control.get([job_id]).get(job_id)
        by_creator = control is not None and control.paused and not job.cancelled
        # Paused for either reason (budget or creator); each is lifted on its own.
        message = convert.job_message(job, counts, self.store.get_scene(job.scene_id),
                                      paused=job_id in paused or by_creator,
                                      awaiting_charge=job_id in awaiting)
        if control is not None:
            message.paused_by_creator = by_creator
            message.priority = control.priority
        if self.proof is not None and counts.get(TaskState.VERIFYING, 0):
            message.verification.CopyFrom(verification_queue(self.proof.queue_standing(job_id)))
        self._add_budget(message, budget_paused=job_id in paused)
        return message

    def _add_budget(self, message: pb.Job, *, budget_paused: bool = True) -> None:
        """Escrowed and charged USD, and a paused job's reason with the top-up it needs."""
        amounts = self.payments.budget(message.job_id)
        if amounts is None:
            return
        pricing = self.payments.pricing
        escrowed = tokens_to_usd(pricing, amounts[0])
        charged = tokens_to_usd(pricing, amounts[1])
        message.escrowed_usd = float(escrowed)
        message.charged_usd = float(charged)
        if message.state != pb.JOB_STATE_PAUSED or not budget_paused:
            return  # not paused, or paused by its creator only (paused_by_creator)
        record = self.store.budget_record(message.job_id)
        view = self.store.budget_view(message.job_id)
        waiting = record.waiting_cost_tokens if record else 0
        suggested = topup_suggestion(view, waiting) if view is not None else max(1, waiting)
        message.paused_reason = pause_reason(
            message.job_id, record.reason if record else LEASE_SHORT, charged, escrowed,
            tokens_to_usd(pricing, suggested))

    async def _existing_job_id(self, job_id: str, context: grpc.aio.ServicerContext) -> str:
        job_id = await require_id(context, job_id, "job_id")
        caller = current_caller()
        try:  # a unique prefix of one of the caller's jobs names it, like git
            job_id = self.control.resolve(
                job_id, None if self.access.is_admin(caller) else caller.pubkey) or job_id
        except ControlError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        job = self.store.get_job(job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id}")
        if not self.access.may_see_job(current_caller(), job):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"job {job_id} belongs to another creator")
        return job_id

    async def _accept_scene(self, scene_id: str, context: grpc.aio.ServicerContext,
                            session: SceneSession | None = None):
        """The scene, if the caller may use it: its files must be the caller's own (uploaded
        or proven), so a scene id learnt elsewhere neither works nor is confirmed to exist."""
        caller = current_caller()
        owner = None if self.access.may_use_any_scene(caller) else caller.pubkey
        try:
            return await self.intake.accept_scene(scene_id, owner, session=session)
        except MissingBlobsError as error:
            raise Refused(str(error)) from error
        except IntakeError as error:
            raise InvalidRequest(str(error)) from error

    async def _check_settings(
        self, settings: pb.RenderSettings, context: grpc.aio.ServicerContext
    ) -> None:
        problems = []
        if settings.samples < 0 or settings.samples > 1_000_000:
            problems.append("samples must be 0 (the scene's own) or 1..1000000")
        for name in ("resolution_x", "resolution_y"):
            if not 0 <= getattr(settings, name) <= 65536:
                problems.append(f"{name} must be 0 (the scene's own) or 1..65536")
        if not 0 <= settings.resolution_percentage <= 1000:
            problems.append("resolution_percentage must be 0 (the scene's own) or 1..1000")
        if settings.HasField("seed") and settings.seed < 0:
            problems.append("seed must be 0 or more (or absent: the scene's own)")
        if settings.output_format not in convert.EXTENSIONS and settings.output_format != 0:
            problems.append("unknown output format")
        try:
            self.intake.check_engine(settings.engine)
        except IntakeError as error:
            problems.append(str(error))
        if problems:
            raise InvalidRequest("; ".join(problems))


def _check_layout(settings: pb.RenderSettings) -> None:
    """Refuse a job whose frames Blender would refuse: a Render Region with no pixel."""
    try:
        layout(settings)
    except EmptyRegion as error:
        raise InvalidRequest(str(error)) from error


def _progress(job: pb.Job) -> tuple:
    return (job.state, job.frames.SerializeToString(), job.verification.SerializeToString())


def verification_queue(standing: QueueStanding) -> pb.VerificationQueue:
    return pb.VerificationQueue(waiting=standing.waiting, in_progress=standing.in_progress,
                                position=standing.position, stuck=standing.stuck,
                                stuck_reason=standing.stuck_reason[:500],
                                verifiers_busy=standing.verifiers_busy)


"""JobService: what creators call. Thin: validate, call the store, answer."""

from __future__ import annotations

import logging
import time
import uuid

import grpc

from coordinator.access import AccessPolicy
from coordinator.api import convert
from coordinator.api.auth import current_caller
from coordinator.api.errors import require_id
from coordinator.domain.frames import chunk_frames, format_frames
from coordinator.domain.states import TERMINAL_JOB_STATES
from coordinator.events import JobEvents
from coordinator.intake import IntakeError, MissingBlobsError, SceneIntake, resolve_frames
from coordinator.intake import scene_inspection as inspection_of
from coordinator.storage.models import JobRecord
from coordinator.storage.store import FarmStore
from frameproof.v1 import farm_pb2 as pb
from frameproof.v1 import farm_pb2_grpc

log = logging.getLogger(__name__)

MAX_CHUNK_SIZE = 1000
MAX_NAME_LENGTH = 200
WATCH_POLL_SECONDS = 2.0


class JobServicer(farm_pb2_grpc.JobServiceServicer):
    def __init__(
        self, store: FarmStore, intake: SceneIntake, events: JobEvents, access: AccessPolicy
    ) -> None:
        self.store = store
        self.intake = intake
        self.events = events
        self.access = access

    async def InspectScene(self, request, context):
        scene_id = await require_id(context, request.scene_id, "scene_id")
        record = await self._accept_scene(scene_id, context)
        return pb.InspectSceneResponse(scene=convert.scene_info(record))

    async def SubmitJob(self, request, context):
        scene_id = await require_id(context, request.scene_id, "scene_id")
        if not 0 <= request.chunk_size <= MAX_CHUNK_SIZE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"chunk_size must be 1..{MAX_CHUNK_SIZE}"
            )
        if request.tier not in (0, 1, 2, 3):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "tier must be 1 (trusted nodes), 2 (priority) or 3 (economy)")
        if len(request.name) > MAX_NAME_LENGTH:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job name is too long")
        await self._check_settings(request.settings, context)
        scene = await self._accept_scene(scene_id, context)
        inspection = inspection_of(scene)
        try:
            frames = resolve_frames(request.frames, inspection)
        except IntakeError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        settings = convert.effective_settings(request.settings, inspection)
        now = time.time()
        job = JobRecord(
            job_id=uuid.uuid4().hex[:16],
            name=request.name or scene.main_file,
            scene_id=scene_id,
            creator=current_caller().pubkey,
            tier=request.tier or 3,
            frames_spec=format_frames(frames),
            chunk_size=request.chunk_size or 1,
            settings_json=convert.settings_to_json(settings),
            created_at=now,
            updated_at=now,
        )
        self.store.create_job(job, chunk_frames(frames, job.chunk_size), now)
        log.info("job %s: %d frames of scene %s", job.job_id, len(frames), scene_id[:12])
        return pb.SubmitJobResponse(job=self._job_message(job.job_id))

    async def GetJob(self, request, context):
        return self._job_message(await self._existing_job_id(request.job_id, context))

    async def ListJobs(self, request, context):
        caller = current_caller()
        jobs = self.store.list_jobs(None if self.access.is_admin(caller) else caller.pubkey)
        counts = self.store.frame_counts(job.job_id for job in jobs)
        return pb.ListJobsResponse(
            jobs=[convert.job_message(job, counts[job.job_id], None) for job in jobs]
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
        self.store.cancel_job(job_id, time.time())
        self.events.changed(job_id)
        log.info("job %s cancelled", job_id)
        return self._job_message(job_id)

    async def ListFrames(self, request, context):
        job_id = await self._existing_job_id(request.job_id, context)
        frames = convert.frame_messages(
            self.store.list_tasks(job_id),
            self.store.list_frame_results(job_id),
            self.store.failures_by_task(job_id),
        )
        return pb.ListFramesResponse(frames=frames)

    # ------------------------------------------------------------ helpers

    def _job_message(self, job_id: str) -> pb.Job:
        job = self.store.get_job(job_id)
        assert job is not None
        counts = self.store.frame_counts([job_id])[job_id]
        return convert.job_message(job, counts, self.store.get_scene(job.scene_id))

    async def _existing_job_id(self, job_id: str, context: grpc.aio.ServicerContext) -> str:
        job_id = await require_id(context, job_id, "job_id")
        job = self.store.get_job(job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id}")
        if not self.access.may_see_job(current_caller(), job):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"job {job_id} belongs to another creator")
        return job_id

    async def _accept_scene(self, scene_id: str, context: grpc.aio.ServicerContext):
        try:
            return await self.intake.accept_scene(scene_id)
        except MissingBlobsError as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except IntakeError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))

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
        if settings.output_format not in convert.EXTENSIONS and settings.output_format != 0:
            problems.append("unknown output format")
        try:
            self.intake.check_engine(settings.engine)
        except IntakeError as error:
            problems.append(str(error))
        if problems:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))


def _progress(job: pb.Job) -> tuple:
    return (job.state, job.frames.SerializeToString())


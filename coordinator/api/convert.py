"""Between stored records and wire messages: the only place that knows both."""

from __future__ import annotations

import json

from google.protobuf.json_format import MessageToDict, ParseDict

from coordinator.domain.states import JobState, TaskState, job_state_from_frames
from coordinator.domain.verdicts import FrameVerdict
from coordinator.intake import render_notices, scene_inspection
from coordinator.storage.models import FrameResultRecord, JobRecord, SceneRecord, TaskRecord
from frameproof.blender.worker import SceneInspection
from frameproof.v1 import farm_pb2 as pb

JOB_STATES = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RENDERING: pb.JOB_STATE_RENDERING,
    JobState.DONE: pb.JOB_STATE_DONE,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
    JobState.PAUSED: pb.JOB_STATE_PAUSED,
}
FRAME_STATES = {
    TaskState.QUEUED: pb.FRAME_STATE_QUEUED,
    TaskState.LEASED: pb.FRAME_STATE_RENDERING,
    TaskState.VERIFYING: pb.FRAME_STATE_VERIFYING,
    TaskState.DONE: pb.FRAME_STATE_DONE,
    TaskState.FAILED: pb.FRAME_STATE_FAILED,
    TaskState.CANCELLED: pb.FRAME_STATE_CANCELLED,
}
EXTENSIONS = {pb.OUTPUT_FORMAT_PNG: "png", pb.OUTPUT_FORMAT_EXR: "exr"}


def settings_to_json(settings: pb.RenderSettings) -> str:
    return json.dumps(MessageToDict(settings, preserving_proto_field_name=True))


def settings_from_json(text: str) -> pb.RenderSettings:
    return ParseDict(json.loads(text), pb.RenderSettings())


def effective_settings(requested: pb.RenderSettings, scene: SceneInspection) -> pb.RenderSettings:
    """Fill every setting the creator left at zero from the scene's own."""
    return pb.RenderSettings(
        engine=requested.engine or scene.engine,
        samples=requested.samples or scene.samples,
        resolution_x=requested.resolution_x or scene.resolution_x,
        resolution_y=requested.resolution_y or scene.resolution_y,
        resolution_percentage=requested.resolution_percentage or scene.resolution_percentage,
        output_format=requested.output_format or pb.OUTPUT_FORMAT_PNG,
        # only an explicit override: absent renders the scene's own seed (and animated seed)
        seed=requested.seed if requested.HasField("seed") else None,
        region=scene_region(scene),
    )


def scene_region(scene: SceneInspection) -> pb.RenderRegion | None:
    """The scene's saved Render Region (rendered as saved), None for whole frames."""
    if not scene.region:
        return None
    min_x, max_x, min_y, max_y = scene.region
    return pb.RenderRegion(min_x=min_x, max_x=max_x, min_y=min_y, max_y=max_y,
                           crop=scene.region_crop)


def extension_of(settings: pb.RenderSettings) -> str:
    return EXTENSIONS[settings.output_format or pb.OUTPUT_FORMAT_PNG]


def scene_info(record: SceneRecord) -> pb.SceneInfo:
    scene = scene_inspection(record)
    return pb.SceneInfo(
        main_file=record.main_file,
        engine=scene.engine,
        frame_start=scene.frame_start,
        frame_end=scene.frame_end,
        resolution_x=scene.resolution_x,
        resolution_y=scene.resolution_y,
        resolution_percentage=scene.resolution_percentage,
        samples=scene.samples,
        camera=scene.camera or "",
        blender_version=scene.file_blender_version,
        seed=scene.seed,
        animated_seed=scene.animated_seed,
        adaptive_sampling=scene.adaptive_sampling,
        adaptive_threshold=scene.adaptive_threshold,
        adaptive_min_samples=scene.adaptive_min_samples,
        denoise=scene.denoise,
        denoiser=scene.denoiser,
        time_limit=scene.time_limit,
        notices=render_notices(scene),
        output_path=scene.output_path,
    )


def job_message(
    job: JobRecord, counts: dict[TaskState, int], scene: SceneRecord | None,
    *, paused: bool = False, awaiting_charge: bool = False,
) -> pb.Job:
    """`paused`: its budget paused the job; `awaiting_charge`: approved frames not paid yet.

    A job is done once its frames are approved *and* charged (its creator may download
    them); a paused job says so until its escrow covers the next frame again.
    """
    state = budget_state(job_state_from_frames(counts, cancelled=job.cancelled),
                         paused=paused and not job.cancelled, awaiting_charge=awaiting_charge)
    message = pb.Job(
        job_id=job.job_id,
        name=job.name,
        scene_id=job.scene_id,
        state=JOB_STATES[state],
        frames=pb.FrameCounts(
            total=sum(counts.values()),
            queued=counts.get(TaskState.QUEUED, 0),
            rendering=counts.get(TaskState.LEASED, 0),
            done=counts.get(TaskState.DONE, 0),
            failed=counts.get(TaskState.FAILED, 0),
            cancelled=counts.get(TaskState.CANCELLED, 0),
            verifying=counts.get(TaskState.VERIFYING, 0),
        ),
        frames_spec=job.frames_spec,
        chunk_size=job.chunk_size,
        settings=settings_from_json(job.settings_json),
        created_unix_ms=int(job.created_at * 1000),
        updated_unix_ms=int(job.updated_at * 1000),
        error=job.error,
        tier=job.tier,
        creator=job.creator,
        max_cost_usd=job.max_cost_usd,
    )
    if scene is not None:
        message.scene.CopyFrom(scene_info(scene))
    return message


def budget_state(state: JobState, *, paused: bool, awaiting_charge: bool) -> JobState:
    """The job's state once money is counted: paused, or not done before it is paid."""
    if paused and state != JobState.CANCELLED:
        return JobState.PAUSED
    if awaiting_charge and state in (JobState.DONE, JobState.FAILED):
        return JobState.RENDERING  # the sweep books the last charges within a second
    return state


def frame_messages(
    tasks: list[TaskRecord], results: list[FrameResultRecord], errors: dict[str, str]
) -> list[pb.Frame]:
    by_frame = {result.frame: result for result in results}
    frames: list[pb.Frame] = []
    for task in tasks:
        for number in range(task.first_frame, task.last_frame + 1):
            frame = pb.Frame(
                frame=number,
                state=FRAME_STATES[TaskState(task.state)],
                node_id=task.node_id or "",
                attempts=task.attempts,
                error=errors.get(task.task_id, "") if task.state != TaskState.DONE else "",
            )
            result = by_frame.get(number)
            if result is not None:
                frame.image.CopyFrom(pb.BlobRef(sha256=result.blob_sha256, size=result.blob_size))
                frame.node_id = result.node_id
                frame.render_seconds = result.render_seconds
                frame.extension = result.extension
                frame.verification = result.verification or "waiting for Proof-of-Render"
                frame.blender_version = result.blender_version
                frame.device = result.device
                frame.receipt_signature = result.receipt_signature
                frame.receipt_proof = result.receipt_proof
                if result.verdict == FrameVerdict.APPROVED and result.charged:
                    frame.state = pb.FRAME_STATE_DONE
                elif result.verdict in (FrameVerdict.APPROVED, FrameVerdict.UNPAID):
                    frame.state = pb.FRAME_STATE_UNPAID  # not served until it is paid
                    frame.verification += ("; never paid: the job was cancelled first"
                                           if result.verdict == FrameVerdict.UNPAID
                                           else "; waiting for its charge")
            frames.append(frame)
    return frames

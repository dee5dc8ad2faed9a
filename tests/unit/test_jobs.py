"""The job compiler: request + scene range -> frames and tasks, or one clear refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.domain.errors import InvalidRequest
from coordinator.domain.jobs import (
    MAX_CHUNK_SIZE,
    JobRequest,
    SceneRange,
    check_request,
    check_tier,
    compile_job,
    job_frames,
    reserved_frame_price,
)

SCENE = SceneRange(1, 250)


def test_defaults_render_the_scene_as_saved() -> None:
    frames = job_frames("", SCENE)
    job = compile_job(JobRequest(), frames, default_name="shot.blend")
    assert job.frames == tuple(range(1, 251)) and job.frames_spec == "1-250"
    assert job.tier == 3 and job.chunk_size == 1 and job.name == "shot.blend"
    assert len(job.tasks) == 250


def test_chunks_never_span_a_gap() -> None:
    frames = job_frames("1-5,10,12-13", SCENE)
    job = compile_job(JobRequest(chunk_size=2, tier=1, name="a"), frames, default_name="x")
    assert job.tasks == ((1, 2), (3, 4), (5,), (10,), (12, 13))
    assert job.frames_spec == "1-5,10,12-13" and job.tier == 1 and job.name == "a"


@pytest.mark.parametrize(("request_", "message"), [
    (JobRequest(chunk_size=MAX_CHUNK_SIZE + 1), "chunk_size must be 1..1000"),
    (JobRequest(chunk_size=-1), "chunk_size must be 1..1000"),
    (JobRequest(tier=4), "tier must be 1 (trusted nodes)"),
    (JobRequest(name="n" * 201), "job name is too long"),
])
def test_bad_requests_are_refused_before_the_scene(request_: JobRequest, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_request(request_)


def test_frames_outside_the_scene_or_malformed_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="outside the scene's range 1-250"):
        job_frames("240-260", SCENE)
    with pytest.raises(InvalidRequest):
        job_frames("1-x", SCENE)
    with pytest.raises(InvalidRequest, match="tier must be 1, 2 or 3"):
        check_tier(7)


@given(st.lists(st.integers(1, 250), min_size=1, unique=True), st.integers(1, 20))
def test_tasks_cover_every_frame_once_in_order(frames: list[int], chunk: int) -> None:
    frames.sort()
    job = compile_job(JobRequest(chunk_size=chunk), frames, default_name="x")
    flat = [frame for task in job.tasks for frame in task]
    assert flat == frames
    for task in job.tasks:
        assert 1 <= len(task) <= chunk
        assert list(task) == list(range(task[0], task[-1] + 1))
    assert job_frames(job.frames_spec, SCENE) == frames  # the stored spec reads back the same


def test_reserved_price_never_exceeds_the_escrow() -> None:
    assert reserved_frame_price(1000, 3) * 3 <= 1000
    assert reserved_frame_price(1000, 0) == 1000

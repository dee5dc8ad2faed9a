"""The request bounds table: complete, documented, and answered without echoing the input."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.message import Message

from coordinator.api import validation
from coordinator.api.validation import FIELDS, problem, request_messages
from frameproof.v1 import farm_pb2 as pb

DOCS = Path(__file__).resolve().parents[2] / "docs" / "API-LIMITS.md"


def test_the_documented_limits_are_current() -> None:
    assert DOCS.read_text() == validation.limits_markdown(), (
        "docs/API-LIMITS.md is stale: python -m coordinator.api.validation > "
        "docs/API-LIMITS.md")


def test_every_override_names_a_request_field() -> None:
    fields = {f"{m.name}.{f.name}" for m in request_messages() for f in m.fields}
    assert set(FIELDS) <= fields, sorted(set(FIELDS) - fields)


HOSTILE: list[tuple[Message, str]] = [
    (pb.SubmitJobRequest(max_cost_usd=float("inf")), "max_cost_usd"),
    (pb.SubmitJobRequest(max_cost_usd=1e300), "max_cost_usd"),
    (pb.SubmitJobRequest(max_cost_usd=float("nan")), "max_cost_usd"),
    (pb.SubmitJobRequest(max_cost_usd=-1.0), "max_cost_usd"),
    (pb.PrepareDepositRequest(amount_usd=1e300), "amount_usd"),
    (pb.SubmitJobRequest(name="n" * 5_000_000), "name"),
    (pb.SubmitJobRequest(name="\x00"), "name"),
    (pb.SubmitJobRequest(settings=pb.RenderSettings(output_format=99)), "settings.output_format"),
    (pb.SubmitJobRequest(signed_deposit=b"d" * 5000), "signed_deposit"),
    (pb.RegisterNodeRequest(capabilities=pb.NodeCapabilities(devices=["CPU"] * 5000)),
     "capabilities.devices"),
    (pb.RegisterNodeRequest(capabilities=pb.NodeCapabilities(devices=["C" * 3_000_000])),
     "capabilities.devices[0]"),
    (pb.RegisterNodeRequest(capabilities=pb.NodeCapabilities(benchmark_score=float("nan"))),
     "capabilities.benchmark_score"),
    (pb.CompleteTaskRequest(outputs=[pb.FrameOutput(render_seconds=float("inf"))]),
     "outputs[0].render_seconds"),
    (pb.CompleteTaskRequest(outputs=[pb.FrameOutput(render_seconds=1e9)]),
     "outputs[0].render_seconds"),
    (pb.CompleteTaskRequest(outputs=[pb.FrameOutput(image=pb.BlobRef(sha256="../x"))]),
     "outputs[0].image.sha256"),
    (pb.GetJobRequest(job_id="../../etc/passwd"), "job_id"),
    (pb.FailTaskRequest(reason="r" * 10_000), "reason"),
    (pb.SubmitVerificationRequest(render_seconds=float("-inf")), "render_seconds"),
    (pb.SubmitVerificationRequest(tiles=[pb.TileCheck(scores={"k" * 100: 1.0})]),
     "tiles[0].scores key"),
    (pb.UploadChunk(offset=-1), "offset"),
    (pb.FindMissingBlobsRequest(blobs=[pb.BlobRef()] * 10_001), "blobs"),
]


@pytest.mark.parametrize(("request_message", "field"), HOSTILE,
                         ids=[f for _, f in HOSTILE])
def test_hostile_fields_are_named_with_their_bound_and_never_echoed(
        request_message: Message, field: str) -> None:
    found = problem(request_message)
    assert found is not None and found.startswith(field + " "), found
    assert len(found) < 200


@pytest.mark.parametrize("request_message", [
    pb.SubmitJobRequest(scene_id="ab" * 32, frames="1-250", max_cost_usd=12.5, tier=2,
                        name="my scene ✓", settings=pb.RenderSettings(
                            engine="CYCLES", samples=128, resolution_x=1920,
                            output_format=pb.OUTPUT_FORMAT_EXR)),
    pb.RegisterNodeRequest(node_id="11111111111111111111111111111111", name="n",
                           capabilities=pb.NodeCapabilities(devices=["CPU", "CUDA"],
                                                            benchmark_score=50.0)),
    pb.SubmitVerificationRequest(tiles=[pb.TileCheck(scores={"ssim": float("nan")})],
                                 pixel_sha256="0" * 64, render_seconds=3.5),
    pb.UploadChunk(data=b"x" * (1024 * 1024), offset=5),
])
def test_ordinary_requests_pass(request_message: Message) -> None:
    assert problem(request_message) is None


def test_stored_records_have_hard_size_limits(db_url: str) -> None:
    """The backstop under the edge: whatever path writes a record, its text is bounded."""
    import json
    import time

    from coordinator.storage.database import open_database
    from coordinator.storage.limits import STORED_LIMITS, TRUNCATED_JSON
    from coordinator.storage.models import JobRecord, NodeRecord, SceneRecord
    from coordinator.storage.store import FarmStore

    engine = open_database(db_url)
    store = FarmStore(engine)
    now = time.time()
    huge = json.dumps({"devices": ["C" * 1024] * 3000})
    store.register_node("node", "é" * 1_000_000, huge, now)
    node = store.get_node("node")
    assert node is not None
    assert len(node.name.encode()) <= STORED_LIMITS[NodeRecord]["name"]
    assert node.capabilities_json == TRUNCATED_JSON  # clipped JSON would not parse
    store.register_node("node", "plain", json.dumps({"devices": ["CPU"]}), now)
    node = store.get_node("node")
    assert node is not None and node.name == "plain" and "CPU" in node.capabilities_json
    store.save_scene(SceneRecord(scene_id="a" * 64, main_file="s.blend", info_json="{}",
                                 created_at=now))
    store.create_job(JobRecord(job_id="j", scene_id="a" * 64, frames_spec="1",
                               settings_json="{}", created_at=now, updated_at=now), [[1]], now)
    store.set_job_error("j", "x" * 5_000_000, now)
    job = store.get_job("j")
    assert job is not None and len(job.error) == STORED_LIMITS[JobRecord]["error"]
    engine.dispose()

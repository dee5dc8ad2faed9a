"""Scene intake through a real coordinator: every bad input gets a clear, specific error."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import SAMPLE_SCENE
from farm_helpers import (
    frames,
    make_scene_variant,
    submit_sample,
    upload_raw_scene,
    wait_until_done,
)

from frameproof.cli.download import download_frames
from frameproof.cli.main import main as frameproof
from frameproof.client import FarmClient
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb
from verifier.compare import load_image


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFarm]:
    with LocalFarm(tmp_path_factory.mktemp("intake")) as farm:
        farm.start_coordinator()
        yield farm


@pytest.fixture
def client(coordinator: LocalFarm) -> Iterator[FarmClient]:
    with coordinator.client() as farm_client:
        yield farm_client


def submit_error(client: FarmClient, scene_id: str, **fields: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        client.jobs.SubmitJob(pb.SubmitJobRequest(scene_id=scene_id, **fields), timeout=120)
    return caught.value


def cli(coordinator: LocalFarm, *args: str) -> int:
    return frameproof(["--coordinator", coordinator.address, "--keypair",
                       str(coordinator.creator_keypair), *map(str, args)])


def test_a_corrupt_blend_is_refused_by_the_packer(coordinator, shared_scenes, capsys):
    assert cli(coordinator, "submit", shared_scenes / "corrupt_only_magic.blend") == 1
    assert "cannot pack" in capsys.readouterr().err


def test_garbage_named_blend_is_refused_by_the_coordinator(client):
    scene_id = upload_raw_scene(client, {"scene.blend": b"BLENDER-v500" + b"\0" * 64},
                                "scene.blend")
    error = submit_error(client, scene_id)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a readable .blend" in error.details()


def test_a_scene_without_camera_is_refused(client, coordinator, shared_scenes, capsys):
    assert cli(coordinator, "submit", shared_scenes / "basic_file.blend") == 1
    assert "no active camera" in capsys.readouterr().err


def test_a_linked_library_is_packed_and_found(coordinator, shared_scenes, capsys):
    # linked_cube.blend links //basic_file.blend: packed along, so the only complaint
    # left is the missing camera, not a missing library.
    assert cli(coordinator, "submit", shared_scenes / "linked_cube.blend") == 1
    err = capsys.readouterr().err
    assert "no active camera" in err and "missing" not in err


def test_missing_dependencies_are_refused_by_the_packer(coordinator, shared_scenes, capsys):
    assert cli(coordinator, "submit", shared_scenes / "doubly_linked.blend") == 1
    assert "material_textures.blend" in capsys.readouterr().err


def test_missing_dependencies_are_refused_by_the_coordinator(client, shared_scenes):
    # The library's file is left out of the upload on purpose.
    main = (shared_scenes / "linked_cube.blend").read_bytes()
    scene_id = upload_raw_scene(client, {"linked_cube.blend": main}, "linked_cube.blend")
    error = submit_error(client, scene_id)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing dependencies" in error.details() and "basic_file.blend" in error.details()


def test_missing_textures_are_refused_by_the_coordinator(client):
    scene_id = upload_raw_scene(client, {"scene.blend": SAMPLE_SCENE.read_bytes()},
                                "scene.blend")
    error = submit_error(client, scene_id)
    assert "missing dependencies" in error.details() and "checker.png" in error.details()


def test_an_unknown_scene_is_a_failed_precondition(client):
    error = submit_error(client, "ab" * 32)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "upload its manifest first" in error.details()


@pytest.mark.parametrize(
    ("frames_spec", "message", "exit_code"),
    [  # 1: the coordinator refused (it knows the scene's range); 2: bad input, caught locally
        ("20-30", "outside the scene's range 1-24", 1),
        ("0", "outside the scene's range 1-24", 1),
        ("5-1", "runs backwards", 2),
        ("1,,2", "empty item", 2),
        ("one-two", "is not a frame number", 2),
    ],
)
def test_wrong_frame_ranges_are_refused(coordinator, frames_spec, message, exit_code, capsys):
    assert cli(coordinator, "submit", SAMPLE_SCENE, "--frames", frames_spec) == exit_code
    assert message in capsys.readouterr().err


def test_an_engine_the_farm_cannot_render_is_refused(coordinator, capsys):
    # The CLI knows the engines and refuses before packing; the coordinator refuses too.
    assert cli(coordinator, "submit", SAMPLE_SCENE, "--engine", "BLENDER_GAME") == 2  # bad input
    assert "not a render engine" in capsys.readouterr().err
    with coordinator.client() as client:
        error = submit_error(client, _sample_scene_id(coordinator),
                             settings=pb.RenderSettings(engine="BLENDER_GAME"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "not supported" in error.details()


def test_bad_settings_are_refused(client, coordinator):
    scene_id = _sample_scene_id(coordinator)
    error = submit_error(client, scene_id, settings=pb.RenderSettings(samples=-3), chunk_size=-1)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "chunk_size" in error.details()
    error = submit_error(client, scene_id, settings=pb.RenderSettings(resolution_x=10**6))
    assert "resolution_x" in error.details()


def test_malformed_ids_are_invalid_arguments(client):
    for call, request in [
        (client.jobs.GetJob, pb.GetJobRequest(job_id="../../etc/passwd")),
        (client.jobs.GetJob, pb.GetJobRequest()),
        (client.jobs.SubmitJob, pb.SubmitJobRequest(scene_id="x" * 500)),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        client.jobs.GetJob(pb.GetJobRequest(job_id="0123456789abcdef"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_resubmitting_a_scene_uploads_no_scene_bytes(farm, capsys):
    farm.start_coordinator()  # a fresh coordinator that has seen no scene yet
    submitted = []
    for frame in ("1", "2"):
        # Tiny frames: each submit has the coordinator probe its frame first.
        assert cli(farm, "submit", SAMPLE_SCENE, "--frames", frame, "--samples", "4",
                   "--resolution-percentage", "20", "--json") == 0
        submitted.append(json.loads(capsys.readouterr().out))
    first, second = submitted
    assert first["uploaded_bytes"] > SAMPLE_SCENE.stat().st_size
    assert second["uploaded_bytes"] == 0
    assert first["scene_id"] == second["scene_id"]


def test_a_scene_saved_with_video_output_renders_png_frames(tmp_path, coordinator):
    scene_dir = tmp_path / "video"
    shutil.copytree(SAMPLE_SCENE.parent / "textures", scene_dir / "textures")
    scene = make_scene_variant(
        SAMPLE_SCENE, scene_dir / "video.blend",
        "scene.render.image_settings.media_type = 'VIDEO'\n"
        "scene.render.image_settings.file_format = 'FFMPEG'\n"
        "scene.render.filepath = '//render/shot_####'",
    )
    node = coordinator.start_node("video-node")
    try:
        with coordinator.client() as client:
            job = submit_sample(client, scene, "3")
            wait_until_done(client, job.job_id)
            files = download_frames(client, job.job_id, tmp_path / "out").files
            assert [f.extension for f in frames(client, job.job_id)] == ["png"]
    finally:
        node.terminate()
        node.wait(30)
    # named after the scene's own output path, with the frames' (PNG) extension
    assert files == [tmp_path / "out" / "render" / "shot_0003.png"]
    assert load_image(files[0]).shape == (36, 64, 3)


def _sample_scene_id(coordinator: LocalFarm) -> str:
    import tempfile

    from frameproof.packing import pack_scene
    from frameproof.transfer import upload_files

    with tempfile.TemporaryDirectory() as work, coordinator.client() as client:
        packed = pack_scene(SAMPLE_SCENE, Path(work))
        manifest = Path(work) / "manifest.json"
        manifest.write_bytes(packed.manifest.to_bytes())
        upload_files(client.blobs, {**packed.files, packed.manifest.scene_id: manifest})
        return packed.manifest.scene_id

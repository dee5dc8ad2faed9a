"""The creator library's failures are typed and one line, and bad input fails before packing.

No farm: an unreachable coordinator is a closed port on loopback; packing is real (BAT).
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest
from solders.keypair import Keypair

from frameproof import creator
from frameproof.cli.main import main
from frameproof.client import Retries
from frameproof.creator import (
    CoordinatorUnavailable,
    Creator,
    CreatorError,
    InvalidRequest,
    JobOptions,
    SceneError,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_SCENE = ROOT / "samples" / "spinning_cube.blend"
NOWHERE = "127.0.0.1:1"  # nothing listens on port 1
# Every call and the upload still go through their retries, on a schedule short enough not
# to wait out the production one (about 3 s a call, 19 s an upload).
QUICK_RETRIES = Retries(attempts=2, initial_backoff_s=0.05, max_backoff_s=0.1)


@pytest.fixture
def offline() -> Creator:
    with Creator.connect(NOWHERE, Keypair(), retries=QUICK_RETRIES) as session:
        yield session


@pytest.mark.parametrize(("options", "says"), [
    (JobOptions(frames="10-1"), "runs backwards"),
    (JobOptions(frames="1-x"), "not a frame number"),
    (JobOptions(frames="1,,3"), "empty item"),
    (JobOptions(chunk=0), "chunk"),
    (JobOptions(tier=4), "tier"),
    (JobOptions(max_cost_usd=-1.0), "max cost"),
    (JobOptions(max_cost_usd=float("nan")), "max cost"),
    (JobOptions(output_format="tiff"), "output format"),
])
def test_bad_options_fail_before_packing_or_calling(offline: Creator, options: JobOptions,
                                                    says: str, tmp_path: Path) -> None:
    """A scene that does not exist would be a SceneError if packing ran, and an unreachable
    coordinator a CoordinatorUnavailable if a call were made: InvalidRequest proves neither."""
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match=says) as caught:
        offline.submit_scene(tmp_path / "absent.blend", options)
    assert "\n" not in str(caught.value)
    assert time.monotonic() - started < 1.0


def test_good_options_pass_validation() -> None:
    JobOptions(frames="1-250", chunk=5, tier=1, max_cost_usd=2.5).validate()
    JobOptions(frames="1,5,10-20").validate()
    JobOptions().validate()  # the scene's own range


def test_a_missing_scene_is_a_scene_error(offline: Creator, tmp_path: Path) -> None:
    with pytest.raises(SceneError, match="does not exist"):
        offline.upload_scene(tmp_path / "absent.blend")
    not_blend = tmp_path / "notes.blend"
    not_blend.write_text("hello")
    with pytest.raises(SceneError, match=r"not a \.blend"):
        offline.upload_scene(not_blend)


def test_unreachable_coordinator_is_typed_not_a_traceback(offline: Creator) -> None:
    """Plain calls and an upload with its retries. (watch waits for a coordinator that is
    away, by design: it is how `frameproof watch` survives a restart.)"""
    for call in (lambda: offline.job("j1"), offline.wallet, lambda: offline.frames("j1"),
                 lambda: offline.upload_scene(SAMPLE_SCENE)):
        with pytest.raises(CoordinatorUnavailable, match=f"cannot reach the coordinator at "
                           f"{NOWHERE}") as caught:
            call()
        assert caught.value.address == NOWHERE
        assert isinstance(caught.value, CreatorError)


def test_an_empty_address_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="address"):
        Creator.connect("  ", Keypair())


def test_cli_reports_a_bad_range_as_a_usage_error_without_packing(capsys, tmp_path) -> None:
    status = main(["--coordinator", NOWHERE, "--keypair", str(tmp_path / "k.json"),
                   "submit", str(tmp_path / "absent.blend"), "--frames", "9-3"])
    error = capsys.readouterr().err
    assert status == 2
    assert "runs backwards" in error and "Traceback" not in error


def test_library_imports_no_blender_no_image_stack_no_cli() -> None:
    """The add-on and the creator's install use it: no bpy, cv2, skimage, numpy, rich,
    argparse or coordinator code."""
    tree = ast.parse(Path(creator.__file__).read_text())
    modules = {alias.name for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert not {m.split(".")[0] for m in modules} & {
        "bpy", "cv2", "skimage", "numpy", "rich", "argparse", "coordinator"}
    assert not [m for m in modules if m == "frameproof.cli" or m.startswith("frameproof.cli.")]
    for word in ("print(", "SystemExit", "sys.exit"):
        assert word not in Path(creator.__file__).read_text()


def test_a_settled_jobs_frames_are_requeued_as_the_same_job_would_render():
    """The new job for a settled job's frames keeps its overrides, tier and chunk; a seed is
    passed only when the creator had set one (the scene's own, animated or not, otherwise)."""
    from frameproof.v1 import farm_pb2 as pb

    job = pb.Job(job_id="0123456789abcdef", name="shot", tier=2, chunk_size=3,
                 frames_spec="1-10", settings=pb.RenderSettings(
                     engine="CYCLES", samples=16, resolution_x=320, resolution_y=180,
                     resolution_percentage=50, output_format=pb.OUTPUT_FORMAT_EXR))
    options = creator.follow_up_options(job, [5, 6, 7, 9], max_cost_usd=0.5)
    assert (options.frames, options.tier, options.chunk, options.max_cost_usd) == (
        "5-7,9", 2, 3, 0.5)
    assert options.name == "shot (requeue of 01234567)"
    assert options.settings() == job.settings and not options.settings().HasField("seed")
    job.settings.seed = 7
    assert creator.follow_up_options(job, [5]).settings().seed == 7

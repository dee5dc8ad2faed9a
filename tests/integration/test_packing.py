"""Packing real third-party scenes (Blender Asset Tracer's own test files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from frameproof.manifest import SceneManifest, sha256_file
from frameproof.packing import PackingError, pack_scene

SCENES = Path(__file__).resolve().parents[2].parent / "shared" / "scenes" / "bat"

needs_scenes = pytest.mark.skipif(not SCENES.is_dir(), reason=f"{SCENES} is absent")


def paths(packed) -> list[str]:
    return [e.path for e in packed.manifest.files]


def check_consistent(packed) -> None:
    """Every manifest entry exists in the pack with its hash, and `files` covers them all."""
    for e in packed.manifest.files:
        on_disk = packed.root / e.path
        assert sha256_file(on_disk) == e.sha256
        assert on_disk.stat().st_size == e.size
        assert sha256_file(packed.files[e.sha256]) == e.sha256
    assert set(packed.files) == {e.sha256 for e in packed.manifest.files}
    assert SceneManifest.from_bytes(packed.manifest.to_bytes()) == packed.manifest


@needs_scenes
def test_linked_library_is_packed(tmp_path):
    messages: list[str] = []
    packed = pack_scene(SCENES / "linked_cube.blend", tmp_path, on_progress=messages.append)
    assert paths(packed) == ["basic_file.blend", "linked_cube.blend"]
    assert packed.manifest.main_file == "linked_cube.blend"
    assert packed.missing == []
    assert messages
    assert list(tmp_path.iterdir()) == [packed.root]  # BAT's scratch folder is gone
    check_consistent(packed)


@needs_scenes
def test_missing_library_is_reported(tmp_path):
    packed = pack_scene(SCENES / "doubly_linked.blend", tmp_path)
    assert packed.missing == ["material_textures.blend"]
    assert "linked_cube.blend" in paths(packed)
    check_consistent(packed)


@needs_scenes
def test_libraries_above_the_blend_are_packed_outside_project(tmp_path):
    packed = pack_scene(SCENES / "subdir" / "doubly_linked_up.blend", tmp_path)
    assert packed.manifest.main_file == "doubly_linked_up.blend"
    outside = [p for p in paths(packed) if p.startswith("_outside_project/")]
    assert {Path(p).name for p in outside} == {"basic_file.blend", "linked_cube.blend"}
    # Nodes must not learn where the creator keeps files: no absolute path in the pack.
    private = {part for part in SCENES.resolve().parts if part != "/"}
    assert all(not private & set(Path(p).parts[1:-1]) for p in outside), outside
    assert all(len(Path(p).parts) == 3 for p in outside), outside
    # BAT rewrote the main file to point at the new location.
    original = sha256_file(SCENES / "subdir" / "doubly_linked_up.blend")
    assert sha256_file(packed.root / "doubly_linked_up.blend") != original
    check_consistent(packed)


@needs_scenes
def test_point_cache_is_packed(tmp_path):
    packed = pack_scene(SCENES / "T55539-particles" / "particle.blend", tmp_path)
    cache = [p for p in paths(packed) if p.startswith("blendcache_particle/")]
    expected = sorted((SCENES / "T55539-particles" / "blendcache_particle").iterdir())
    assert len(cache) == len(expected) > 0
    assert all(p.endswith(".bphys") for p in cache)
    check_consistent(packed)


@needs_scenes
def test_zstd_compressed_blend_packs(tmp_path):
    packed = pack_scene(SCENES / "basic_file_compressed_zstd.blend", tmp_path)
    assert paths(packed) == ["basic_file_compressed_zstd.blend"]
    check_consistent(packed)


@needs_scenes
def test_corrupt_blend_is_a_packing_error(tmp_path):
    with pytest.raises(PackingError, match=r"not a readable \.blend"):
        pack_scene(SCENES / "corrupt_only_magic.blend", tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []  # nothing half-packed left behind


@needs_scenes
def test_packing_twice_gives_the_same_scene_id(tmp_path):
    blend = SCENES / "subdir" / "doubly_linked_up.blend"
    first = pack_scene(blend, tmp_path / "one")
    second = pack_scene(blend, tmp_path / "two")
    assert first.manifest.scene_id == second.manifest.scene_id
    assert first.root != second.root


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.blend", b"this is not a blend file at all", "not a .blend file"),
        ("y.blend", b"BLENDER\0\0\0\0\0", "corrupt"),
        ("z.blend", b"\x28\xb5\x2f\xfd" + b"\x55" * 64, "corrupt"),
        ("g.blend", b"\x1f\x8b" + b"\x55" * 64, "corrupt"),
        ("empty.blend", b"", "not a .blend file"),
        ("scene.txt", b"BLENDER-v300", "does not end in .blend"),
    ],
)
def test_garbage_is_a_packing_error(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(PackingError, match=message):
        pack_scene(tmp_path / name, tmp_path / "work")


def test_absent_file_and_folder_are_packing_errors(tmp_path):
    with pytest.raises(PackingError, match="does not exist"):
        pack_scene(tmp_path / "nope.blend", tmp_path / "work")
    (tmp_path / "dir.blend").mkdir()
    with pytest.raises(PackingError, match="folder"):
        pack_scene(tmp_path / "dir.blend", tmp_path / "work")


@needs_scenes
def test_packed_outside_libraries_resolve_at_their_new_place(tmp_path):
    """Blender, opening the pack, finds the libraries BAT moved under _outside_project/."""
    from frameproof.blender import BlenderWorker

    packed = pack_scene(SCENES / "subdir" / "doubly_linked_up.blend", tmp_path / "pack")
    with BlenderWorker(threads=1) as worker:
        info = worker.inspect(packed.root / packed.manifest.main_file)
    assert any("_outside_project/" in lib for lib in info.libraries), info.libraries
    # the one library that was missing at the source is still the only one missing
    assert len(info.missing) == 1 and "material_textures.blend" in info.missing[0]


def test_a_move_the_copier_finishes_at_once_is_still_counted(tmp_path):
    """BAT's copier thread may move a file before queue_move returns (a CI failure)."""
    import queue
    import shutil

    from frameproof.packing import FileCopier

    class MovesAtOnce(queue.Queue):
        def put(self, item, block=True, timeout=None):  # type: ignore[no-untyped-def]
            src, dst, _action = item
            shutil.move(src, dst)  # the copier thread winning the race
            super().put(item, block, timeout)

    source = tmp_path / "pack-info.txt"
    source.write_text("This is a Blender Asset Tracer pack.\n")
    copier = FileCopier()
    copier.queue = MovesAtOnce()
    copier.queue_move(source, tmp_path / "moved.txt")
    assert copier.total_queued_bytes == len("This is a Blender Asset Tracer pack.\n")
    assert (tmp_path / "moved.txt").exists()


def test_the_copy_queue_lets_its_reader_go_once_closed_and_drained() -> None:
    """BAT's copier polls its queue every 0.5 s and so noticed the end of a pack only at its
    next poll (most of a tiny scene's pack time); closed, a waiting reader gets what is left
    and then leaves at once. BAT's own queue would keep the second get waiting forever."""
    import queue
    import threading

    from frameproof.packing import ClosableQueue

    copies: ClosableQueue = ClosableQueue()
    copies.put((1, "last file"))
    seen: list[object] = []

    def reader() -> None:
        seen.append(copies.get(timeout=None))
        try:
            copies.get(timeout=None)
        except queue.Empty:
            seen.append("ended")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    copies.close()
    thread.join(30)
    assert seen == [(1, "last file"), "ended"]


def test_a_pack_closes_its_copy_queue(tmp_path):
    """The packer's copier is ours (it ends on close), and a pack still holds every file."""
    from frameproof.packing import ClosableQueue, FileCopier

    copier = FileCopier()
    assert isinstance(copier.queue, ClosableQueue)
    source = tmp_path / "scene.blend"
    source.write_bytes(b"BLENDER-v500" + b"\0" * 100)
    copier.start()
    copier.queue_move(source, tmp_path / "out" / "scene.blend")
    copier.done_and_join()
    assert copier.queue.closed and not copier.is_alive()
    assert (tmp_path / "out" / "scene.blend").stat().st_size == 112
    sample = Path(__file__).resolve().parents[2] / "samples" / "spinning_cube.blend"
    check_consistent(pack_scene(sample, tmp_path / "pack"))

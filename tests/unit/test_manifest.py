"""Scene manifests: canonical bytes, hostile input, materialising a scene folder."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from frameproof.manifest import (
    MAX_FILES,
    MAX_SCENE_BYTES,
    ManifestEntry,
    ManifestError,
    SceneManifest,
    materialise,
    sha256_file,
)


def entry(path: str, content: bytes = b"") -> ManifestEntry:
    return ManifestEntry(path=path, sha256=hashlib.sha256(content).hexdigest(), size=len(content))


def doc(files: list[dict], main_file: str = "scene.blend", version: object = 1) -> bytes:
    body = {"version": version, "main_file": main_file, "files": files}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def file_doc(path: str, sha: str = "0" * 64, size: object = 1) -> dict:
    return {"path": path, "sha256": sha, "size": size}


SCENE = SceneManifest(
    main_file="scene.blend",
    files=(entry("textures/wood.png", b"wood"), entry("scene.blend", b"blend"), entry("a b é.txt")),
)


def test_round_trip_and_stable_scene_id():
    data = SCENE.to_bytes()
    again = SceneManifest.from_bytes(data)
    assert again == SCENE
    assert again.scene_id == SCENE.scene_id == hashlib.sha256(data).hexdigest()
    assert [e.path for e in SCENE.files] == ["a b é.txt", "scene.blend", "textures/wood.png"]
    reordered = SceneManifest(main_file="scene.blend", files=tuple(reversed(SCENE.files)))
    assert reordered.scene_id == SCENE.scene_id
    assert SCENE.total_size == 9
    assert json.loads(data)["version"] == 1


def test_non_canonical_bytes_are_refused():
    pretty = json.dumps(json.loads(SCENE.to_bytes()), indent=2).encode()
    with pytest.raises(ManifestError, match="canonical"):
        SceneManifest.from_bytes(pretty)


HOSTILE_PATHS = [
    "../escape.blend",
    "a/../../escape",
    "a/..",
    "/etc/passwd",
    "//server/share",
    "C:/Windows/x",
    "c:relative",
    "a\\b",
    "..\\escape",
    "a//b",
    "./a",
    "a/./b",
    "a/",
    "",
    ".",
    "a\x00b",
    "a\nb",
    "x" * 300,
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_paths_are_refused(path):
    with pytest.raises(ManifestError):
        SceneManifest.from_bytes(doc([file_doc("scene.blend"), file_doc(path)]))
    with pytest.raises(ManifestError):
        SceneManifest(main_file="scene.blend", files=(entry("scene.blend"), entry(path)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (doc([file_doc("scene.blend"), file_doc("scene.blend")]), "listed twice"),
        (doc([file_doc("Scene.blend"), file_doc("scene.blend")]), "listed twice"),
        (doc([file_doc("a"), file_doc("a/b"), file_doc("scene.blend")]), "file and as a folder"),
        (doc([file_doc("other.blend")]), "not one of the scene's files"),
        (doc([file_doc("scene.txt")], main_file="scene.txt"), "must name a .blend"),
        (doc([file_doc("scene.blend", sha="A" * 64)]), "64 lowercase hex"),
        (doc([file_doc("scene.blend", sha="0" * 63)]), "64 lowercase hex"),
        (doc([file_doc("scene.blend", size=-1)]), "must be an int >= 0"),
        (doc([file_doc("scene.blend", size=True)]), "must be an integer"),
        (doc([file_doc("scene.blend", size=1.0)]), "must be an integer"),
        (doc([file_doc("scene.blend", size=MAX_SCENE_BYTES + 1)]), "the limit is"),
        (doc([file_doc("scene.blend")], version=2), "unsupported manifest version"),
        (doc([file_doc("scene.blend")], version="1"), "unsupported manifest version"),
        (b'{"version":1,"version":1}', "repeats a key"),
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"[1,2]", "must be a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid UTF-8 JSON"),
        (b'{"files":[],"main_file":"scene.blend","version":1,"x":0}', "exactly the keys"),
        (b'{"files":[{"path":"scene.blend"}],"main_file":"scene.blend","version":1}', "exactly"),
        (b" " * (8 * 1024**2 + 1), "the limit is"),
    ],
)
def test_malformed_manifests_are_refused_with_a_reason(data, message):
    with pytest.raises(ManifestError, match=message):
        SceneManifest.from_bytes(data)


def test_too_many_files():
    files = [file_doc(f"f{i:05}") for i in range(MAX_FILES)] + [file_doc("scene.blend")]
    with pytest.raises(ManifestError, match=f"the limit is {MAX_FILES}"):
        SceneManifest.from_bytes(doc(sorted(files, key=lambda f: f["path"])))


# ---------------------------------------------------------------- materialise


@pytest.fixture
def blobs(tmp_path: Path) -> dict[str, Path]:
    store = tmp_path / "blobs"
    store.mkdir()
    out = {}
    for content in (b"wood", b"blend", b""):
        sha = hashlib.sha256(content).hexdigest()
        (store / sha).write_bytes(content)
        out[sha] = store / sha
    return out


def test_materialise_lays_out_the_scene_and_is_idempotent(tmp_path, blobs):
    dest = tmp_path / "scenes" / SCENE.scene_id
    main = materialise(SCENE, blobs.__getitem__, dest)
    assert main == dest / "scene.blend"
    assert main.read_bytes() == b"blend"
    assert (dest / "textures" / "wood.png").read_bytes() == b"wood"
    assert sha256_file(dest / "a b é.txt") == hashlib.sha256(b"").hexdigest()
    assert os.path.samefile(main, blobs[hashlib.sha256(b"blend").hexdigest()])  # hard link
    assert sorted(p.name for p in dest.parent.iterdir()) == [SCENE.scene_id]  # no temp left

    assert materialise(SCENE, lambda sha: pytest.fail("must not read blobs again"), dest) == main


def test_materialise_rebuilds_an_incomplete_folder(tmp_path, blobs):
    dest = tmp_path / "scene"
    (dest / "textures").mkdir(parents=True)
    (dest / "textures" / "wood.png").write_bytes(b"wo")  # truncated
    materialise(SCENE, blobs.__getitem__, dest)
    assert (dest / "textures" / "wood.png").read_bytes() == b"wood"


def test_materialise_refuses_symlinks_in_dest(tmp_path, blobs):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "scene"
    dest.mkdir()
    (dest / "textures").symlink_to(outside)
    with pytest.raises(ManifestError, match="symlink"):
        materialise(SCENE, blobs.__getitem__, dest)
    assert list(outside.iterdir()) == []

    link = tmp_path / "link"
    link.symlink_to(outside)
    with pytest.raises(ManifestError, match="symlink"):
        materialise(SCENE, blobs.__getitem__, link)


def test_materialise_checks_blob_sizes(tmp_path, blobs):
    wrong = SceneManifest(
        main_file="scene.blend", files=(ManifestEntry("scene.blend", "f" * 64, 3),)
    )
    (tmp_path / "fff").write_bytes(b"12345")
    with pytest.raises(ManifestError, match="manifest says 3"):
        materialise(wrong, lambda sha: tmp_path / "fff", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()

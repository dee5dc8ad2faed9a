"""Scene manifests: the list of files a scene is made of.

A manifest is itself stored as a blob, and the scene id is the sha256 of its
canonical bytes, so the same scene always has the same id. Manifests arrive
from untrusted creators: `from_bytes` refuses anything that could make a node
write outside its scene folder, and anything that is not in canonical form (so
that the blob's sha256 and the scene id can never disagree).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_FILES = 10_000
MAX_SCENE_BYTES = 20 * 1024**3
MAX_MANIFEST_BYTES = 8 * 1024**2
MAX_PATH_CHARS = 1024
MAX_COMPONENT_BYTES = 255  # what ext4, APFS and NTFS accept for one name
MANIFEST_VERSION = 1

_SHA256 = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")


class ManifestError(ValueError):
    """A manifest is malformed, hostile or does not fit the limits."""


def is_sha256(value: object) -> bool:
    """True for a 64-character lowercase hex string (the only form we accept)."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative POSIX path inside the scene
    sha256: str
    size: int


@dataclass(frozen=True)
class SceneManifest:
    """A validated scene: constructing one with a hostile path raises ManifestError."""

    main_file: str
    files: tuple[ManifestEntry, ...]

    def __post_init__(self) -> None:
        files = tuple(sorted(self.files, key=lambda e: e.path))
        object.__setattr__(self, "files", files)
        _validate(self.main_file, files)

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, files sorted by path, no whitespace, UTF-8."""
        doc = {
            "version": MANIFEST_VERSION,
            "main_file": self.main_file,
            "files": [{"path": e.path, "sha256": e.sha256, "size": e.size} for e in self.files],
        }
        return json.dumps(
            doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> SceneManifest:
        """Parse and validate an untrusted manifest blob."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES} bytes"
            )
        try:
            doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ManifestError(f"manifest is not valid UTF-8 JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ManifestError("manifest must be a JSON object")
        version = doc.get("version")
        if type(version) is not int or version != MANIFEST_VERSION:
            raise ManifestError(
                f"unsupported manifest version {version!r}; this build reads version "
                f"{MANIFEST_VERSION}"
            )
        if set(doc) != {"version", "main_file", "files"}:
            raise ManifestError(
                "manifest must have exactly the keys 'files', 'main_file' and 'version'; "
                f"got {sorted(doc)}"
            )
        raw_files = doc["files"]
        if not isinstance(raw_files, list):
            raise ManifestError("manifest 'files' must be a list")
        if len(raw_files) > MAX_FILES:
            raise ManifestError(f"scene has {len(raw_files)} files; the limit is {MAX_FILES}")
        entries = tuple(_entry_from_json(i, raw) for i, raw in enumerate(raw_files))
        main_file = doc["main_file"]
        if not isinstance(main_file, str):
            raise ManifestError("manifest 'main_file' must be a string")
        manifest = cls(main_file=main_file, files=entries)
        if manifest.to_bytes() != data:
            raise ManifestError(
                "manifest is not in canonical form (sorted keys, files sorted by path, "
                "no whitespace); build it with SceneManifest.to_bytes()"
            )
        return manifest

    @property
    def scene_id(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.files)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ManifestError(f"manifest repeats a key in one object: {sorted(keys)}")
    return dict(pairs)


def _entry_from_json(index: int, raw: object) -> ManifestEntry:
    if not isinstance(raw, dict) or set(raw) != {"path", "sha256", "size"}:
        raise ManifestError(
            f"file #{index} must be an object with exactly 'path', 'sha256' and 'size'"
        )
    path, sha, size = raw["path"], raw["sha256"], raw["size"]
    if not isinstance(path, str):
        raise ManifestError(f"file #{index}: 'path' must be a string")
    if type(size) is not int:
        raise ManifestError(f"file {path!r}: 'size' must be an integer")
    if not isinstance(sha, str):
        raise ManifestError(f"file {path!r}: 'sha256' must be a string")
    return ManifestEntry(path=path, sha256=sha, size=size)


def check_relative_path(path: str) -> None:
    """Refuse any path that is not a plain relative POSIX path inside the scene."""
    if not isinstance(path, str) or not path:
        raise ManifestError(f"file path {path!r} is empty or not a string")
    if len(path) > MAX_PATH_CHARS:
        raise ManifestError(f"file path {path[:60]!r}... is longer than {MAX_PATH_CHARS} chars")
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise ManifestError(f"file path {path!r} contains NUL or control characters")
    if "\\" in path:
        raise ManifestError(f"file path {path!r} contains a backslash; use '/' separators")
    if path.startswith("/"):
        raise ManifestError(f"file path {path!r} is absolute; paths must be relative")
    parts = path.split("/")
    if _DRIVE.match(parts[0]):
        raise ManifestError(f"file path {path!r} starts with a drive letter")
    for part in parts:
        if part in ("", "."):
            raise ManifestError(f"file path {path!r} has an empty or '.' component")
        if part == "..":
            raise ManifestError(f"file path {path!r} has a '..' component")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise ManifestError(f"file path {path!r} has a name over {MAX_COMPONENT_BYTES} bytes")


def _validate(main_file: str, files: tuple[ManifestEntry, ...]) -> None:
    if len(files) > MAX_FILES:
        raise ManifestError(f"scene has {len(files)} files; the limit is {MAX_FILES}")
    seen: dict[str, str] = {}
    dirs: set[str] = set()
    total = 0
    for entry in files:
        check_relative_path(entry.path)
        if not is_sha256(entry.sha256):
            raise ManifestError(
                f"file {entry.path!r}: sha256 {entry.sha256!r} is not 64 lowercase hex digits"
            )
        if type(entry.size) is not int or entry.size < 0:
            raise ManifestError(f"file {entry.path!r}: size {entry.size!r} must be an int >= 0")
        # Case-folded so that a scene cannot hold two files that collide on
        # case-insensitive filesystems (macOS, Windows nodes).
        key = entry.path.casefold()
        if key in seen:
            raise ManifestError(f"file path {entry.path!r} is listed twice (as {seen[key]!r})")
        seen[key] = entry.path
        parts = key.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        total += entry.size
    clash = dirs & seen.keys()
    if clash:
        raise ManifestError(f"{seen[min(clash)]!r} is listed both as a file and as a folder")
    if total > MAX_SCENE_BYTES:
        raise ManifestError(f"scene is {total} bytes; the limit is {MAX_SCENE_BYTES} bytes")
    if not isinstance(main_file, str) or not main_file.endswith(".blend"):
        raise ManifestError(f"main_file {main_file!r} must name a .blend file")
    if main_file not in seen.values():
        raise ManifestError(f"main_file {main_file!r} is not one of the scene's files")


def materialise(manifest: SceneManifest, blob_path: Callable[[str], Path], dest: Path) -> Path:
    """Lay the scene out under dest and return the main .blend path.

    Built in a temporary sibling and renamed into place, so dest is either
    absent or complete: a node that crashes mid-way never renders a half scene.
    Files are hard links to the blobs where possible (no copy of a 5 GB cache);
    the blob store keeps its files read-only so a renderer cannot alter them.
    """
    dest = Path(dest)
    main = dest / manifest.main_file
    if _is_complete(manifest, dest):
        return main
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        for entry in manifest.files:
            _place(entry, blob_path(entry.sha256), tmp / entry.path)
        if os.path.lexists(dest):
            # Incomplete or stale (never ours: we only rename complete trees).
            trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, trash / "scene")
            shutil.rmtree(trash)
        try:
            os.rename(tmp, dest)
        except OSError:
            # Another process materialised the same scene at the same time.
            if not _is_complete(manifest, dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return main


def _place(entry: ManifestEntry, source: Path, target: Path) -> None:
    actual = os.stat(source).st_size
    if actual != entry.size:
        raise ManifestError(
            f"blob {entry.sha256} for {entry.path!r} is {actual} bytes; manifest says {entry.size}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # other filesystem, link count limit, no hard links
        shutil.copyfile(source, target)


def _is_complete(manifest: SceneManifest, dest: Path) -> bool:
    """True if dest holds every file with its size.

    Raises if a symlink sits on any manifest path: a node must never write or
    read through one, even though a rebuild would replace it.
    """
    if dest.is_symlink():
        raise ManifestError(f"refusing to materialise into {dest}: it is a symlink")
    if not dest.is_dir():
        return False
    complete = True
    for entry in manifest.files:
        current = dest
        for part in entry.path.split("/"):
            current = current / part
            try:
                st = current.lstat()
            except (FileNotFoundError, NotADirectoryError):
                complete = False
                break
            if stat.S_ISLNK(st.st_mode):
                raise ManifestError(
                    f"refusing to materialise into {dest}: {current} is a symlink, which "
                    "could point outside the scene folder"
                )
        else:
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                complete = False
    return complete

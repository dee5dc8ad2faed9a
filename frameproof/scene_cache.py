"""Scenes on the node, cached by content: a scene's files are fetched once, shared by jobs."""

from __future__ import annotations

import shutil
from pathlib import Path

from frameproof.manifest import SceneManifest, materialise
from frameproof.transfer import download_blob
from frameproof.v1 import farm_pb2_grpc


class SceneCache:
    """`root/blobs/<sha256>` holds file contents; `root/scenes/<scene_id>/` lays a scene out."""

    def __init__(self, root: Path, blobs: farm_pb2_grpc.BlobStoreStub) -> None:
        self.root = root
        self.blobs = blobs
        # Blobs whose bytes this process has hashed: a cached blob is checked once per run
        # (catching damage from before), not on every task (a 5 GB scene took seconds each).
        self._verified: set[str] = set()
        (root / "blobs").mkdir(parents=True, exist_ok=True)

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def fetch(self, scene_id: str) -> Path:
        """Return the scene's main .blend, downloading only the files not cached yet."""
        self._blob(scene_id)
        manifest = SceneManifest.from_bytes(self.blob_path(scene_id).read_bytes())
        replaced = [self._blob(entry.sha256) for entry in manifest.files]
        dest = self.root / "scenes" / scene_id
        if any(replaced) and dest.is_dir():
            shutil.rmtree(dest)  # it may hold hard links to the damaged copies
        return materialise(manifest, self.blob_path, dest)

    def _blob(self, sha256: str) -> bool:
        """Make sure the blob is here and sound; True if a cached copy had to be replaced."""
        path = self.blob_path(sha256)
        if sha256 in self._verified and path.is_file():
            return False
        before = _inode(path)
        download_blob(self.blobs, sha256, path)  # hashes a cached copy, fetches a missing one
        self._verified.add(sha256)
        return before is not None and before != _inode(path)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None

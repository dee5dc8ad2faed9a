"""Scenes on the node, cached by content: a scene's files are fetched once, shared by jobs."""

from __future__ import annotations

from pathlib import Path

from frameproof.manifest import SceneManifest, materialise
from frameproof.transfer import download_blob
from frameproof.v1 import farm_pb2_grpc


class SceneCache:
    """`root/blobs/<sha256>` holds file contents; `root/scenes/<scene_id>/` lays a scene out."""

    def __init__(self, root: Path, blobs: farm_pb2_grpc.BlobStoreStub) -> None:
        self.root = root
        self.blobs = blobs
        (root / "blobs").mkdir(parents=True, exist_ok=True)

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def fetch(self, scene_id: str) -> Path:
        """Return the scene's main .blend, downloading only the files not cached yet."""
        manifest_path = download_blob(self.blobs, scene_id, self.blob_path(scene_id))
        manifest = SceneManifest.from_bytes(manifest_path.read_bytes())
        for entry in manifest.files:
            download_blob(self.blobs, entry.sha256, self.blob_path(entry.sha256))
        return materialise(manifest, self.blob_path, self.root / "scenes" / scene_id)

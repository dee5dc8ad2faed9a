"""Scene intake: a scene is inspected in a Blender child before any job may use it.

Everything a creator can get wrong is caught here, with a message that says what
to fix: not a .blend, corrupt, no camera, an engine the farm cannot render,
missing dependencies, frames outside the scene.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path

from coordinator.blobstore import BlobNotFound, BlobStore, InvalidSha256, check_sha256
from coordinator.domain.jobs import SceneRange
from coordinator.storage.models import SceneRecord
from coordinator.storage.owners import BlobOwners
from coordinator.storage.store import FarmStore
from coordinator.warm_blender import SceneSession
from frameproof.blender.worker import BlenderError, SceneInspection, inspect_scene
from frameproof.manifest import ManifestError, SceneManifest, materialise

SUPPORTED_ENGINES = ("CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH")
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
# Inspecting opens the file and reads settings: generous limits that a bomb still hits (the
# same memory limit as the probe's, which may inspect and probe in one child).
INSPECT_MEMORY_BYTES = 4 * 2**30
INSPECT_CPU_SECONDS = 120.0


class IntakeError(ValueError):
    """The scene or the request cannot be rendered; the message says why."""


class MissingBlobsError(IntakeError):
    """The scene's files have not all been uploaded yet."""


class SceneIntake:
    """Loads, lays out and inspects scenes; remembers what passed."""

    def __init__(
        self,
        store: FarmStore,
        blobs: BlobStore,
        scenes_dir: Path,
        *,
        engines: tuple[str, ...] = SUPPORTED_ENGINES,
        inspect_timeout: float = 120.0,
        owners: BlobOwners | None = None,
    ) -> None:
        self.owners = owners
        self.store = store
        self.blobs = blobs
        self.scenes_dir = scenes_dir
        self.engines = engines
        self.inspect_timeout = inspect_timeout

    async def accept_scene(self, scene_id: str, owner: str | None = None, *,
                           session: SceneSession | None = None) -> SceneRecord:
        """Return the scene's inspection record, inspecting it on first sight.

        With an ``owner`` (every creator but an admin), the scene must be theirs first: they
        uploaded (or proved they hold) the manifest and every file it lists. A manifest they
        do not own is "unknown", word for word as one that was never uploaded.

        ``session``: the request's Blender child for this scene (started ahead of need, and
        the probe's next); without one, a fresh child inspects.
        """
        if owner is not None and self.owners is not None:
            await asyncio.to_thread(self._require_owner, scene_id, owner)
        known = self.store.get_scene(scene_id)
        if known is not None:
            return known
        manifest = self._load_manifest(scene_id)
        lacking = [entry.path for entry in manifest.files if not self.blobs.has(entry.sha256)]
        if lacking:
            raise MissingBlobsError(
                f"{len(lacking)} file(s) of the scene were never uploaded, e.g. {lacking[0]}"
            )
        scene_dir = self.scenes_dir / scene_id
        blend = await asyncio.to_thread(materialise, manifest, self.blobs.path, scene_dir)
        log_path = self.scenes_dir / f"{scene_id}.inspect.log"
        try:
            if session is None:
                inspection = await asyncio.to_thread(
                    inspect_scene, blend, timeout=self.inspect_timeout,
                    memory_limit_bytes=INSPECT_MEMORY_BYTES, cpu_seconds=INSPECT_CPU_SECONDS,
                    log_path=log_path)
            else:
                inspection = await asyncio.to_thread(self._inspect_in, session, scene_id,
                                                     blend, log_path)
        except BlenderError as error:
            raise IntakeError(f"{manifest.main_file}: {error}") from error
        self._check_renderable(manifest.main_file, inspection)
        record = SceneRecord(
            scene_id=scene_id,
            main_file=manifest.main_file,
            info_json=json.dumps(asdict(inspection)),
            created_at=time.time(),
        )
        self.store.save_scene(record, [scene_id, *(entry.sha256 for entry in manifest.files)])
        return record

    def _inspect_in(self, session: SceneSession, scene_id: str, blend: Path,
                    log_path: Path) -> SceneInspection:
        worker = session.worker(scene_id, log_path=log_path, cpu_seconds=INSPECT_CPU_SECONDS)
        return worker.inspect(blend, timeout=self.inspect_timeout)

    def _require_owner(self, scene_id: str, owner: str) -> None:
        assert self.owners is not None
        _check_scene_id(scene_id)
        if not self.owners.owns(owner, scene_id):
            raise MissingBlobsError(_unknown_scene(scene_id))
        manifest = self._load_manifest(scene_id)
        owned = self.owners.owned(owner, (entry.sha256 for entry in manifest.files))
        lacking = [entry.path for entry in manifest.files if entry.sha256 not in owned]
        if lacking:
            raise MissingBlobsError(
                f"{len(lacking)} file(s) of the scene were never uploaded by you, e.g. "
                f"{lacking[0]}; upload them (frameproof submit does)"
            )

    async def blend_path(self, scene_id: str) -> Path:
        """The accepted scene's main .blend on this machine, laid out again if it was removed."""
        manifest = self._load_manifest(scene_id)
        return await asyncio.to_thread(materialise, manifest, self.blobs.path,
                                       self.scenes_dir / scene_id)

    def _load_manifest(self, scene_id: str) -> SceneManifest:
        _check_scene_id(scene_id)
        try:
            data = self.blobs.read_bytes(scene_id, limit=MAX_MANIFEST_BYTES)
        except BlobNotFound as error:
            raise MissingBlobsError(_unknown_scene(scene_id)) from error
        try:
            return SceneManifest.from_bytes(data)
        except ManifestError as error:
            raise IntakeError(f"scene {scene_id} has an invalid manifest: {error}") from error

    def _check_renderable(self, main_file: str, scene: SceneInspection) -> None:
        if scene.missing:
            shown = ", ".join(scene.missing[:5])
            raise IntakeError(f"{main_file}: missing dependencies: {shown}")
        if not scene.camera:
            raise IntakeError(
                f"{main_file}: the scene has no active camera; set one (Scene properties > "
                "Camera) and save"
            )
        if scene.engine not in self.engines:
            raise IntakeError(
                f"{main_file}: render engine {scene.engine} is not supported here; "
                f"use one of {', '.join(self.engines)}"
            )

    def check_engine(self, engine: str) -> None:
        if engine and engine not in self.engines:
            raise IntakeError(
                f"render engine {engine!r} is not supported; use one of {', '.join(self.engines)}"
            )


def _check_scene_id(scene_id: str) -> None:
    try:
        check_sha256(scene_id)
    except InvalidSha256 as error:
        raise IntakeError(f"scene_id must be a sha256 (64 lowercase hex digits): "
                          f"{error}") from error


def _unknown_scene(scene_id: str) -> str:
    """Said alike for a scene never uploaded and one someone else uploaded."""
    return f"scene {scene_id} is unknown: upload its manifest first"


def render_notices(scene: SceneInspection, samples: int = 0) -> list[str]:
    """What the farm renders differently from the saved file, one sentence each.

    The farm renders the scene as saved; only what cannot be reproduced on another machine
    or would run the scene's Python is changed, and the creator is told at submit.
    """
    notices: list[str] = []
    if scene.engine == "CYCLES" and scene.time_limit > 0:
        notices.append(
            f"the scene's time limit ({scene.time_limit:g} s) depends on each machine's speed "
            f"and cannot be reproduced: the farm ignores it and renders the full "
            f"{samples or scene.samples} samples per frame (use --samples to render fewer)"
        )
    if scene.freestyle_scripts:
        notices.append(
            "Freestyle in Python-scripting mode is turned off: the farm runs no scripts from "
            "a scene (the parameter-editor mode renders as saved)"
        )
    if scene.stamp_burned:
        notices.append(
            "the burned-in stamp shows only frame, frame range, camera, lens, scene, marker "
            "and note: date, time, render time, memory, host and file name differ per machine "
            "and are left out"
        )
    if scene.render_region and scene.region is None:  # inspected before regions rendered
        notices.append(
            "the scene's Render Region is not used: the farm renders, checks and charges "
            "whole frames (crop them after download)"
        )
    return notices


def scene_inspection(record: SceneRecord) -> SceneInspection:
    return SceneInspection(**json.loads(record.info_json))


def scene_range(scene: SceneInspection) -> SceneRange:
    """The frames the saved scene renders, for the job compiler."""
    return SceneRange(scene.frame_start, scene.frame_end)

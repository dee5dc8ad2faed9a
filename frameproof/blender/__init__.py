"""Blender layer: untrusted scenes are opened and rendered only in a child process.

Importing this package never imports ``bpy``; see :mod:`frameproof.blender.worker`.
"""

from frameproof.blender.worker import (
    BlenderCrashed,
    BlenderError,
    BlenderTimeout,
    BlenderWorker,
    RenderResult,
    RenderSettings,
    SceneInspection,
    inspect_scene,
)

__all__ = [
    "BlenderCrashed",
    "BlenderError",
    "BlenderTimeout",
    "BlenderWorker",
    "RenderResult",
    "RenderSettings",
    "SceneInspection",
    "inspect_scene",
]

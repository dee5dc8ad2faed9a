"""Frameproof in Blender: estimate, submit, follow and download a render from Render Properties.

A thin layer over the creator library (frameproof.creator): the extension built by
`make addon` bundles it and its dependencies as wheels (blender_manifest.toml's `wheels`);
otherwise the add-on preference "frameproof site-packages" names a folder where
`pip install frameproof` put it. Network calls run in threads (background.py); a
bpy.app.timers timer hands their results to the UI and polls the submitted job.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from . import background

POLL_INTERVAL_S = 2.0  # how often the panel asks the coordinator how the job is doing
TICK_S = 0.25
DEFAULT_COORDINATOR = "127.0.0.1:50051"

_watched: dict[str, str] = {}  # scene name -> job id being followed
_last_poll: dict[str, float] = {}


def creator_library() -> Any:
    """Import frameproof.creator, from the bundled wheels or the folder the preferences name."""
    folder = _preferences().site_packages if _preferences() else ""
    if folder and folder not in sys.path:
        sys.path.append(bpy.path.abspath(folder))
    try:
        from frameproof import creator
    except ImportError as error:
        raise RuntimeError(
            f"the frameproof package is missing ({error}): install the extension built by "
            "`make addon` (it bundles frameproof), or `pip install frameproof` into a "
            "Python 3.11 and set this add-on's preference to its site-packages folder"
        ) from None
    return creator


class FrameproofPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    keypair: StringProperty(  # type: ignore[valid-type]
        name="Keypair", subtype="FILE_PATH",
        description="Your Solana keypair; empty: $FRAMEPROOF_KEYPAIR or "
                    "~/.config/solana/id.json (created if absent)")
    site_packages: StringProperty(  # type: ignore[valid-type]
        name="frameproof site-packages", subtype="DIR_PATH",
        description="Only if this extension was installed without its wheels: a "
                    "site-packages folder holding `pip install frameproof` for Python 3.11")

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.prop(self, "keypair")
        self.layout.prop(self, "site_packages")


def _preferences() -> FrameproofPreferences | None:
    addon = bpy.context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


class FrameproofSettings(bpy.types.PropertyGroup):
    coordinator: StringProperty(  # type: ignore[valid-type]
        name="Coordinator", default=os.environ.get("FRAMEPROOF_COORDINATOR",
                                                   DEFAULT_COORDINATOR),
        description="HOST:PORT of the Frameproof coordinator")
    use_scene_range: BoolProperty(  # type: ignore[valid-type]
        name="Scene's frame range", default=True,
        description="Render the scene's own frame range")
    frame_start: IntProperty(name="Start", default=1, min=0)  # type: ignore[valid-type]
    frame_end: IntProperty(name="End", default=250, min=0)  # type: ignore[valid-type]
    tier: EnumProperty(  # type: ignore[valid-type]
        name="Tier", default="3",
        items=[("1", "Trusted", "Tier 1: trusted nodes only"),
               ("2", "Priority", "Tier 2: priority"),
               ("3", "Economy", "Tier 3: economy")])
    max_cost: FloatProperty(  # type: ignore[valid-type]
        name="Maximum cost (USD)", default=0.0, min=0.0, precision=4,
        description="Escrowed at submit; 0: the top of the estimate's range")
    # What the farm said, shown in the panel.
    estimate: StringProperty(name="Estimate")  # type: ignore[valid-type]
    job_id: StringProperty(name="Job")  # type: ignore[valid-type]
    job_state: StringProperty(name="State")  # type: ignore[valid-type]
    progress: FloatProperty(  # type: ignore[valid-type]
        name="Progress", min=0.0, max=100.0, subtype="PERCENTAGE")
    message: StringProperty(name="Message")  # type: ignore[valid-type]
    downloaded: StringProperty(name="Downloaded to")  # type: ignore[valid-type]


def frames_spec(scene: bpy.types.Scene) -> str:
    settings = scene.frameproof
    if settings.use_scene_range:
        return f"{scene.frame_start}-{scene.frame_end}"
    return f"{settings.frame_start}-{settings.frame_end}"


def job_options(scene: bpy.types.Scene, creator: Any) -> Any:
    settings = scene.frameproof
    return creator.JobOptions(
        frames=frames_spec(scene), tier=int(settings.tier), max_cost_usd=settings.max_cost,
        name=f"{Path(bpy.data.filepath).stem}: {scene.name}")


def _connect(creator: Any, address: str) -> Any:
    from frameproof.identity import creator_keypair_path, load_or_create_keypair

    prefs = _preferences()
    explicit = Path(bpy.path.abspath(prefs.keypair)) if prefs and prefs.keypair else None
    try:
        keypair = load_or_create_keypair(creator_keypair_path(explicit))
    except ValueError as error:
        raise creator.InvalidRequest(str(error)) from None
    return creator.Creator.connect(address, keypair)


def _saved_blend(operator: bpy.types.Operator) -> Path | None:
    """The .blend as saved now: the farm renders the file, not what is in memory."""
    if not bpy.data.filepath:
        operator.report({"ERROR"}, "Save the .blend first: the farm renders the saved file")
        return None
    if bpy.data.is_dirty:
        bpy.ops.wm.save_mainfile()
    return Path(bpy.data.filepath)


def _prepare(operator: bpy.types.Operator, context: bpy.types.Context) -> tuple[Any, Any,
                                                                                 Path] | None:
    """Check everything on the UI thread, before any packing or network."""
    try:
        creator = creator_library()
    except RuntimeError as error:
        operator.report({"ERROR"}, str(error))
        return None
    options = job_options(context.scene, creator)
    try:
        options.validate()
    except creator.CreatorError as error:
        operator.report({"ERROR"}, str(error))
        return None
    blend = _saved_blend(operator)
    if blend is None:
        return None
    return creator, options, blend


def _settings_of(scene_name: str) -> FrameproofSettings | None:
    scene = bpy.data.scenes.get(scene_name)
    return scene.frameproof if scene is not None else None


def _describe(error: BaseException) -> str:
    """The library's errors are one line for a person; anything else says what it is."""
    if type(error).__module__.startswith("frameproof"):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _estimate_text(estimate: Any, max_cost: float | None = None) -> str:
    text = (f"{estimate.frames} frames: about ${estimate.cost_usd:.4f} "
            f"(${estimate.cost_low_usd:.4f}..${estimate.cost_high_usd:.4f})")
    if max_cost is not None:
        text += f", escrowed ${max_cost:.4f}"
    return text


def _redraw() -> None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()


class FRAMEPROOF_OT_estimate(bpy.types.Operator):
    """Pack and upload the saved scene; the coordinator measures what it would cost"""

    bl_idname = "frameproof.estimate"
    bl_label = "Estimate"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not background.busy("send")

    def execute(self, context: bpy.types.Context) -> set[str]:
        prepared = _prepare(self, context)
        if prepared is None:
            return {"CANCELLED"}
        creator, options, blend = prepared
        address, scene_name = context.scene.frameproof.coordinator, context.scene.name

        def work() -> Any:
            with _connect(creator, address) as session:
                scene = session.upload_scene(blend)
                return session.estimate(scene.scene_id, options)

        def done(estimate: Any, error: BaseException | None) -> None:
            settings = _settings_of(scene_name)
            if settings is None:
                return
            if error is not None:
                settings.message = f"Estimate failed: {_describe(error)}"
            else:
                settings.estimate = _estimate_text(estimate)
                settings.message = ""
            _redraw()

        context.scene.frameproof.message = "Estimating (packing and uploading the scene)..."
        background.start("send", work, done)
        _ensure_timer()
        return {"FINISHED"}


class FRAMEPROOF_OT_submit(bpy.types.Operator):
    """Pack and upload the saved scene, escrow the maximum cost and start the job"""

    bl_idname = "frameproof.submit"
    bl_label = "Submit"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not background.busy("send")

    def execute(self, context: bpy.types.Context) -> set[str]:
        prepared = _prepare(self, context)
        if prepared is None:
            return {"CANCELLED"}
        creator, options, blend = prepared
        address, scene_name = context.scene.frameproof.coordinator, context.scene.name

        def work() -> Any:
            with _connect(creator, address) as session:
                return session.submit_scene(blend, options)[0]

        def done(submission: Any, error: BaseException | None) -> None:
            settings = _settings_of(scene_name)
            if settings is None:
                return
            if error is not None:
                settings.message = f"Submit failed: {_describe(error)}"
            else:
                job = submission.job
                settings.job_id = job.job_id
                settings.estimate = _estimate_text(submission.estimate, submission.max_cost_usd)
                settings.progress = 0.0
                settings.downloaded = ""
                settings.message = f"Job {job.job_id}: {job.frames.total} frames submitted"
                follow(scene_name, job.job_id)
            _redraw()

        context.scene.frameproof.message = "Submitting (packing and uploading the scene)..."
        background.start("send", work, done)
        _ensure_timer()
        return {"FINISHED"}


class FRAMEPROOF_OT_download(bpy.types.Operator):
    """Download the job's finished frames into //frameproof/<job>/ next to the .blend"""

    bl_idname = "frameproof.download"
    bl_label = "Download Frames"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(context.scene.frameproof.job_id) and not background.busy("download")

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not bpy.data.filepath:
            self.report({"ERROR"}, "Save the .blend first: frames go next to it")
            return {"CANCELLED"}
        try:
            creator = creator_library()
        except RuntimeError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        settings = context.scene.frameproof
        job_id, address, scene_name = settings.job_id, settings.coordinator, context.scene.name
        out_dir = Path(bpy.path.abspath(f"//frameproof/{job_id}"))

        def work() -> Any:
            with _connect(creator, address) as session:
                return session.download(job_id, out_dir)

        def done(result: Any, error: BaseException | None) -> None:
            settings = _settings_of(scene_name)
            if settings is None:
                return
            if error is not None:
                settings.message = f"Download failed: {_describe(error)}"
            else:
                settings.downloaded = str(out_dir)
                settings.message = (f"{len(result.files)} frames in {out_dir}"
                                    + (f"; {result.not_ready} not rendered yet"
                                       if result.not_ready else ""))
            _redraw()

        settings.message = "Downloading frames..."
        background.start("download", work, done)
        _ensure_timer()
        return {"FINISHED"}


class FRAMEPROOF_OT_cancel(bpy.types.Operator):
    """Cancel the job: unverified frames are not charged, the rest of the escrow is refunded"""

    bl_idname = "frameproof.cancel"
    bl_label = "Cancel Job"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        settings = context.scene.frameproof
        return bool(settings.job_id) and settings.job_state in ("", "queued", "rendering", "paused")

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            creator = creator_library()
        except RuntimeError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        settings = context.scene.frameproof
        job_id, address, scene_name = settings.job_id, settings.coordinator, context.scene.name

        def work() -> Any:
            with _connect(creator, address) as session:
                return session.cancel(job_id)

        def done(job: Any, error: BaseException | None) -> None:
            settings = _settings_of(scene_name)
            if settings is not None:
                settings.message = (f"Cancel failed: {_describe(error)}" if error
                                    else f"Job {job_id} cancelled")
                _redraw()

        background.start("cancel", work, done)
        _ensure_timer()
        return {"FINISHED"}


def follow(scene_name: str, job_id: str) -> None:
    """Poll this job from the timer until it ends."""
    _watched[scene_name] = job_id
    _last_poll.pop(scene_name, None)
    _ensure_timer()


def _poll(scene_name: str, job_id: str) -> None:
    settings = _settings_of(scene_name)
    if settings is None:
        _watched.pop(scene_name, None)
        return
    creator = creator_library()
    address = settings.coordinator

    def work() -> Any:
        with _connect(creator, address) as session:
            return session.job(job_id)

    def done(job: Any, error: BaseException | None) -> None:
        settings = _settings_of(scene_name)
        if settings is None or _watched.get(scene_name) != job_id:
            return
        if error is not None:
            settings.message = f"Cannot follow job {job_id}: {_describe(error)}"
            if not isinstance(error, creator.CoordinatorUnavailable):
                _watched.pop(scene_name, None)  # unreachable: keep trying; refused: stop
        else:
            frames = job.frames
            settings.job_state = creator.pb.JobState.Name(job.state).removeprefix(
                "JOB_STATE_").lower()
            settings.progress = 100.0 * (frames.done + frames.failed) / max(frames.total, 1)
            settings.message = (f"{settings.job_state}: {frames.done}/{frames.total} done, "
                                f"{frames.rendering} rendering, {frames.verifying} verifying"
                                + (f", {frames.failed} failed" if frames.failed else ""))
            if creator.job_ended(job):
                _watched.pop(scene_name, None)
        _redraw()

    background.start(f"poll:{scene_name}", work, done)


def tick() -> float | None:
    """The timer: hand finished calls to the UI, poll followed jobs; None stops it when idle."""
    pending = background.pump()
    now = time.monotonic()
    for scene_name, job_id in list(_watched.items()):
        if now - _last_poll.get(scene_name, 0.0) >= POLL_INTERVAL_S and \
                not background.busy(f"poll:{scene_name}"):
            _last_poll[scene_name] = now
            _poll(scene_name, job_id)
    return TICK_S if pending or _watched else None


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_S)


class RENDER_PT_frameproof(bpy.types.Panel):
    bl_label = "Frameproof Render Farm"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        scene = context.scene
        settings = scene.frameproof
        layout.use_property_split = True
        layout.prop(settings, "coordinator")
        layout.prop(settings, "use_scene_range")
        if settings.use_scene_range:
            layout.label(text=f"Frames {scene.frame_start}-{scene.frame_end}")
        else:
            row = layout.row(align=True)
            row.prop(settings, "frame_start")
            row.prop(settings, "frame_end")
        layout.prop(settings, "tier")
        layout.prop(settings, "max_cost")
        if bpy.data.is_dirty or not bpy.data.filepath:
            layout.label(text="The .blend is saved before packing", icon="INFO")
        row = layout.row(align=True)
        row.operator(FRAMEPROOF_OT_estimate.bl_idname, icon="INFO")
        row.operator(FRAMEPROOF_OT_submit.bl_idname, icon="RENDER_ANIMATION")
        if settings.estimate:
            layout.label(text=settings.estimate)
        if settings.job_id:
            box = layout.box()
            box.label(text=f"Job {settings.job_id}")
            box.prop(settings, "progress", slider=True)
            row = box.row(align=True)
            row.operator(FRAMEPROOF_OT_download.bl_idname, icon="IMPORT")
            row.operator(FRAMEPROOF_OT_cancel.bl_idname, icon="CANCEL")
            if settings.downloaded:
                box.label(text=settings.downloaded)
        if settings.message:
            layout.label(text=settings.message)


CLASSES = (
    FrameproofPreferences,
    FrameproofSettings,
    FRAMEPROOF_OT_estimate,
    FRAMEPROOF_OT_submit,
    FRAMEPROOF_OT_download,
    FRAMEPROOF_OT_cancel,
    RENDER_PT_frameproof,
)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.frameproof = PointerProperty(type=FrameproofSettings)


def unregister() -> None:
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    _watched.clear()
    del bpy.types.Scene.frameproof
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)

"""Blender child process: the only place where ``bpy`` is imported.

Run as ``python -m frameproof.blender.child --cmd-fd R --reply-fd W [--memory-limit-bytes N]``.
Scenes are untrusted, so Blender lives in its own process with resource limits; it stays alive
across frames so that a warm frame costs milliseconds instead of a Blender start-up.

Protocol: one JSON object per line on the command fd, one JSON reply per line on the reply fd.
Blender's own chatter goes to stdout/stderr, which the parent sends to a log file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import select
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

# Blender names of the engines we accept in settings overrides.
ENGINES = ("CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH")
GPU_DEVICES = ("CUDA", "OPTIX", "HIP", "METAL", "ONEAPI")
# Builtins a simple driver expression may need; no __import__, open, getattr, eval, ...
SAFE_DRIVER_BUILTINS = ("abs", "bool", "float", "int", "len", "max", "min", "pow", "round", "sum")
# No command for this long after a render with a fixed thread count: free the Cycles session
# kept for the next frame (see Child.release_fixed_session). A node's next lease of the same
# job usually comes sooner and still finds the session warm.
IDLE_RELEASE_SECONDS = 2.0


def set_limits(memory_limit_bytes: int | None) -> None:
    """Cap memory and disable core dumps before Blender is loaded.

    RLIMIT_AS is used: bpy 5.0.1 with Cycles (CPU) imports and renders under a 2 GiB
    address-space cap on this machine, so the stricter limit does not break it.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_limit_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))


def limit_cpu(budget: float | None) -> None:
    """Give the next command `budget` CPU seconds (all threads together); None: no limit.

    The persistent child renders many frames, so the limit moves with the CPU time already
    used. The kernel sends SIGXCPU past it and the child dies; the parent reports it. Only
    this trusted code sets it: a scene runs no Python, so it cannot raise its own limit.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if not budget:
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + budget) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


class Child:
    """Command handlers; keeps one opened .blend (with its applied settings) between frames."""

    def __init__(self) -> None:
        import bpy  # imported only after the limits are in place

        self.bpy = bpy
        self.loaded_key: str | None = None
        self.region: dict[str, Any] | None = None  # the loaded job's Render Region
        self.fixed_session = False  # a Cycles session rendered with fixed threads is kept
        bpy.context.preferences.filepaths.use_scripts_auto_execute = False
        self._harden_driver_namespace()

    # -- safety ---------------------------------------------------------------------------

    def _harden_driver_namespace(self) -> None:
        """Leave drivers nothing dangerous to reach, even if one were ever evaluated.

        Blender already refuses non-trivial driver expressions when auto-exec is off; this is
        the second wall: no ``bpy`` and only a handful of harmless builtins in the namespace.
        """
        import builtins

        ns = self.bpy.app.driver_namespace
        ns.pop("bpy", None)
        ns["__builtins__"] = {name: getattr(builtins, name) for name in SAFE_DRIVER_BUILTINS}

    def open(self, blend: str) -> None:
        """Open an untrusted .blend without running any of its scripts."""
        bpy = self.bpy
        self.loaded_key = None
        if not os.path.isfile(blend):
            raise ValueError(f"no such .blend file: {blend}")
        try:
            bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False, use_scripts=False)
        except RuntimeError as exc:
            reason = str(exc).strip().removeprefix("Error: ")
            reason = re.sub(r'^Loading ".*?" failed: ', "", reason)
            raise ValueError(f"not a readable .blend file: {blend}: {reason}") from None
        if bpy.context.preferences.filepaths.use_scripts_auto_execute:
            raise RuntimeError("script auto-execution got enabled; refusing to continue")
        self._harden_driver_namespace()

    # -- commands -------------------------------------------------------------------------

    def ping(self, _msg: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "blender_version": self.bpy.app.version_string}

    def log(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send Blender's output (this process's stdout and stderr) to ``msg["path"]``,
        appended: a child started before its scene was known gets that scene's log."""
        fd = os.open(msg["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        return {"ok": True}

    def inspect(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.open(msg["blend"])
        bpy = self.bpy
        scene = bpy.context.scene
        render = scene.render
        return {
            "ok": True,
            "scene": {
                "engine": render.engine,
                "frame_start": scene.frame_start,
                "frame_end": scene.frame_end,
                "resolution_x": render.resolution_x,
                "resolution_y": render.resolution_y,
                "resolution_percentage": render.resolution_percentage,
                "samples": scene_samples(scene),
                "camera": scene.camera.name if scene.camera else None,
                "file_blender_version": ".".join(str(v) for v in bpy.data.version),
                "libraries": [lib.filepath for lib in bpy.data.libraries],
                "missing": self.missing_dependencies(),
                "output_media_type": render.image_settings.media_type,
                # read, never expanded or run: downloads name frames after it
                "output_path": str(render.filepath)[:1024],
                "scripts_blocked": bool(bpy.app.autoexec_fail),
                **scene_facts(scene),
            },
        }

    def missing_dependencies(self) -> list[str]:
        """Human-readable list of external files the scene needs but that do not exist."""
        bpy = self.bpy
        missing: list[str] = []
        for lib in bpy.data.libraries:
            path = self.abspath(lib.filepath)
            if lib.packed_file is None and (lib.is_missing or not os.path.exists(path)):
                missing.append(f"library {lib.filepath} ({path}): file not found")
        for image in bpy.data.images:
            if image.source not in {"FILE", "SEQUENCE", "MOVIE", "TILED"} or image.packed_files:
                continue
            path = self.abspath(image.filepath, image.library)
            if image.source == "TILED":
                paths = [path.replace("<UDIM>", str(t.number)) for t in image.tiles]
            else:
                paths = [path]
            if not all(os.path.exists(p) for p in paths):
                missing.append(f"image {image.name!r}: {image.filepath} ({path}): file not found")
        for kind, coll in (
            ("sound", bpy.data.sounds),
            ("font", bpy.data.fonts),
            ("movie clip", bpy.data.movieclips),
            ("volume", bpy.data.volumes),
            ("cache file", bpy.data.cache_files),
        ):
            for item in coll:
                if not item.filepath or item.filepath == "<builtin>":
                    continue
                if getattr(item, "packed_file", None) is not None:
                    continue
                path = self.abspath(item.filepath, item.library)
                if not os.path.exists(path):
                    missing.append(
                        f"{kind} {item.name!r}: {item.filepath} ({path}): file not found"
                    )
        return missing

    def abspath(self, path: str, library: Any = None) -> str:
        """Absolute path of ``path`` as written in ``library`` (None: the main .blend).

        On load Blender rewrites every library's own path relative to the main file (even an
        indirect one), while data inside a library keeps paths relative to that library;
        ``bpy.path.abspath(..., library=...)`` handles both.
        """
        return os.path.normpath(self.bpy.path.abspath(path, library=library))

    def load(self, msg: dict[str, Any]) -> Any:
        """The job's scene with its settings applied (kept loaded for the next frames)."""
        bpy = self.bpy
        settings = msg.get("settings") or {}
        key = json.dumps([msg["blend"], settings, msg.get("device", "CPU")], sort_keys=True)
        if key != self.loaded_key:
            self.open(msg["blend"])
            apply_settings(bpy.context.scene, settings)
            set_device(bpy, bpy.context.scene, msg.get("device", "CPU"))
            self.region = settings.get("region") or None
            self.loaded_key = key
        return bpy.context.scene

    def strategy(self, msg: dict[str, Any]) -> dict[str, Any]:
        """How tiles of this job are reproduced (:func:`tile_strategy`)."""
        scene = self.load(msg)
        seed = int(scene.cycles.seed) if scene.render.engine == "CYCLES" else 0
        return {"ok": True, "strategy": tile_strategy(scene, self.region), "seed": seed}

    def render(self, msg: dict[str, Any]) -> dict[str, Any]:
        bpy = self.bpy
        scene = self.load(msg)
        if scene.camera is None:
            raise ValueError("the scene has no active camera: nothing to render")
        render = scene.render
        threads = int(msg.get("threads") or 0)
        render.threads_mode = "FIXED" if threads > 0 else "AUTO"
        if threads > 0:
            render.threads = threads
        strategy = ""
        if msg.get("tile") is not None:
            strategy = tile_strategy(scene, self.region)
            set_border(render, tile_border(render, msg["tile"], strategy), crop=False)
        elif msg.get("border") is not None:
            set_border(render, msg["border"])
        else:  # the frame as the creator's Blender renders it: their Render Region, if any
            set_region(render, self.region)
        output = msg["output"]
        render.filepath = output
        render.use_file_extension = False  # write exactly the name the parent gave us
        verifiable = noisy_pass_verifiable(scene, self.region)
        passes = msg.get("passes") if verifiable else None
        if passes:
            store_denoising_passes(scene)
        # The verifier's reference for a noisy pass: the same render with the denoiser off
        # (measured bit-identical to the Noisy Image pass, guides included); its written frame
        # is then the noisy pass as the scene's view transform shows it.
        noisy = bool(msg.get("noisy_pass")) and verifiable
        saved_size = (render.resolution_x, render.resolution_y, render.resolution_percentage)
        scene.frame_set(int(msg["frame"]))
        start = time.perf_counter()
        try:
            if noisy:
                scene.cycles.use_denoising = False
            if msg.get("size"):  # the probe's downscaled frame; the scene keeps its own size
                render.resolution_x, render.resolution_y = (int(v) for v in msg["size"])
                render.resolution_percentage = 100
            bpy.ops.render.render(write_still=True)
        finally:
            if noisy:
                scene.cycles.use_denoising = True
            render.resolution_x, render.resolution_y, render.resolution_percentage = saved_size
            self.fixed_session = threads > 0 and bool(render.use_persistent_data)
        seconds = time.perf_counter() - start
        if not os.path.isfile(output):
            raise RuntimeError(f"Blender reported success but wrote no file at {output}")
        if passes:
            save_passes(bpy, scene, passes)
        width, height = image_size(bpy, output)
        return {"ok": True, "seconds": seconds, "width": width, "height": height,
                "strategy": strategy, "passes": bool(passes)}

    def release_fixed_session(self) -> None:
        """Free the Cycles session kept for the next frame; the scene stays open.

        bpy 5.0.1: while a session rendered with a fixed thread count is kept (persistent
        data), one of Blender's TBB workers spins in sched_yield until the session is freed:
        a whole core for as long as the child waits (~0.95 CPU s per idle second with
        --threads 1 on this 2-core machine; none with the automatic count). The next frame
        syncs the scene again.
        """
        if not self.fixed_session:
            return
        render = self.bpy.context.scene.render
        render.use_persistent_data = False  # frees the session and its threads' arena
        render.use_persistent_data = True
        self.fixed_session = False

    def denoise(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Re-run the scene's own denoiser on a node's passes file and write the frame.

        The compositor's Denoise node, with the scene's prefilter, quality and guide passes,
        on the Noisy Image, Denoising Albedo and Denoising Normal of ``msg["passes"]``:
        measured bit-identical to the denoised frame Cycles wrote on the same build and
        device (bench/noisy_pass_study.py). Only the compositor runs (no Render Layers node:
        nothing is path traced). The scene is modified, so it is not kept loaded.
        """
        bpy = self.bpy
        scene = self.load(msg)
        self.loaded_key = None  # the compositor set-up below is not the job's scene
        if not noisy_pass_verifiable(scene, self.region):
            raise ValueError("this scene's frames are not checked on their noisy pass")
        cycles = scene.cycles
        image = bpy.data.images.load(msg["passes"], check_existing=False)
        tree = bpy.data.node_groups.new("frameproof_denoise", "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        scene.compositing_node_group = tree
        scene.render.use_compositing = True
        source = tree.nodes.new("CompositorNodeImage")
        source.image = image
        sockets = {s.name: s for s in source.outputs}
        missing = [name for name in denoise_inputs(cycles) if name not in sockets]
        if missing:
            raise ValueError(f"the passes file lacks {', '.join(missing)}")
        node = tree.nodes.new("CompositorNodeDenoise")
        node.inputs["HDR"].default_value = True
        node.inputs["Prefilter"].default_value = PREFILTERS[cycles.denoising_prefilter]
        node.inputs["Quality"].default_value = QUALITIES[cycles.denoising_quality]
        tree.links.new(sockets["Noisy Image"], node.inputs["Image"])
        for name, socket in (("Denoising Albedo", "Albedo"), ("Denoising Normal", "Normal")):
            if name in denoise_inputs(cycles):
                tree.links.new(sockets[name], node.inputs[socket])
        group_output = tree.nodes.new("NodeGroupOutput")
        tree.links.new(node.outputs["Image"], group_output.inputs["Image"])
        set_border(scene.render, None)
        output = msg["output"]
        scene.render.filepath = output
        scene.render.use_file_extension = False
        scene.frame_set(int(msg["frame"]))
        start = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        if msg.get("noisy_output"):  # the noisy pass as the scene's view shows it, as PNG
            tree.links.new(sockets["Noisy Image"], group_output.inputs["Image"])
            scene.render.filepath = msg["noisy_output"]
            apply_settings(scene, {"output_format": "PNG"})
            bpy.ops.render.render(write_still=True)
        seconds = time.perf_counter() - start
        if not os.path.isfile(output):
            raise RuntimeError(f"Blender reported success but wrote no file at {output}")
        width, height = image_size(bpy, output)
        return {"ok": True, "seconds": seconds, "width": width, "height": height}


def scene_samples(scene: Any) -> int:
    """Samples per pixel as the scene's own engine understands them."""
    engine = scene.render.engine
    if engine == "CYCLES":
        return int(scene.cycles.samples)
    if engine.startswith("BLENDER_EEVEE"):
        return int(scene.eevee.taa_render_samples)
    return 1


# Burned-in stamp fields that are the same on every machine; the others (date, time, render
# time, memory, host, file name) differ per machine and would leak the node's paths.
REPRODUCIBLE_STAMP_FIELDS = (
    "use_stamp_frame", "use_stamp_frame_range", "use_stamp_camera", "use_stamp_lens",
    "use_stamp_scene", "use_stamp_marker", "use_stamp_note", "use_stamp_labels",
)
# Margin (px) a tile of a denoised (or volume) scene is rendered with: the denoiser sees
# the neighbours.
DENOISE_MARGIN = 64
# Margin (px) of every other tile: adaptive sampling's convergence test looks at neighbouring
# pixels. Measured at 512 samples, seed 7, threshold 0.01: a bare tile had 98.3-99.2% of
# pixels equal (max 6 levels); with 4 px or more, every pixel equal.
TILE_MARGIN = 8


def apply_settings(scene: Any, settings: dict[str, Any]) -> None:
    """Apply the creator's explicit overrides; everything else renders as saved.

    Only what security or reproducibility needs is changed, and the creator is told at submit
    (``coordinator.intake.render_notices``): a wall-clock time limit (its sample count would
    depend on the machine: the full samples are rendered), Freestyle in Python-scripting mode
    (it would run the scene's Python), metadata stamps that leak paths, dates and host names.
    """
    render = scene.render
    engine = settings.get("engine") or ""
    if engine:
        if engine not in ENGINES:
            raise ValueError(f"unsupported engine {engine!r}; expected one of {ENGINES}")
        render.engine = engine
    samples = int(settings.get("samples") or 0)
    if samples > 0:
        if render.engine == "CYCLES":
            scene.cycles.samples = samples
        elif render.engine.startswith("BLENDER_EEVEE"):
            scene.eevee.taa_render_samples = samples
    for name in ("resolution_x", "resolution_y", "resolution_percentage"):
        value = int(settings.get(name) or 0)
        if value > 0:
            setattr(render, name, value)
    if render.engine == "CYCLES":
        scene.cycles.time_limit = 0.0  # wall-clock: the sample count would depend on the machine
        seed = settings.get("seed")
        if seed is not None:  # only an explicit creator override; the saved seed otherwise
            scene.cycles.seed = int(seed)
    if freestyle_runs_python(scene):
        render.use_freestyle = False
    render.use_persistent_data = True  # keep Cycles' scene data between frames of a warm child
    for prop in render.bl_rna.properties:  # no dates, paths, host names in pixels or metadata
        name = prop.identifier
        if name.startswith("use_stamp_") and name not in REPRODUCIBLE_STAMP_FIELDS:
            setattr(render, name, False)
    image = render.image_settings
    image.media_type = "IMAGE"  # bpy 5.0: must precede file_format (scene may output video)
    fmt = (settings.get("output_format") or "PNG").upper()
    if fmt == "PNG":
        image.file_format = "PNG"
        image.color_mode = "RGBA"
        image.color_depth = "8"
        image.compression = 15
    elif fmt == "EXR":
        image.file_format = "OPEN_EXR"
        image.color_mode = "RGBA"
        image.color_depth = "32"
        image.exr_codec = "ZIP"
    else:
        raise ValueError(f"unsupported output format {fmt!r}; expected PNG or EXR")


def freestyle_runs_python(scene: Any) -> bool:
    """Freestyle in Python-scripting mode runs the scene's style modules (text blocks)."""
    if not scene.render.use_freestyle:
        return False
    return any(layer.use_freestyle and layer.freestyle_settings.mode == "SCRIPT"
               for layer in scene.view_layers)


def denoises(scene: Any) -> bool:
    """The final image is denoised (Cycles' render denoiser)."""
    return scene.render.engine == "CYCLES" and bool(scene.cycles.use_denoising)


# Cycles' denoiser settings as the compositor's Denoise node spells them.
PREFILTERS = {"NONE": "None", "FAST": "Fast", "ACCURATE": "Accurate"}
QUALITIES = {"HIGH": "High", "BALANCED": "Balanced", "FAST": "Fast"}
# Node types a compositor may hold and still leave the final frame as Cycles wrote it.
PLAIN_COMPOSITOR_NODES = {"R_LAYERS", "COMPOSITE", "GROUP_OUTPUT", "VIEWER"}


def noisy_pass_verifiable(scene: Any, region: dict[str, Any] | None = None) -> bool:
    """The final frame is OpenImageDenoise's output of the noisy pass and nothing else.

    Then a node returns its passes (:func:`save_passes`) and the verifier checks the noisy pass
    tile by tile, like a scene without a denoiser, and re-runs the denoiser on it. Other
    denoisers (OptiX) and frames that a compositor, several view layers, Freestyle, stamps or
    a volume shape are verified as before (``padded``, ``close``, ``whole``), and so are frames
    of a Render Region (``region``, the job's): the re-run denoiser composites whole frames.
    """
    if region or not denoises(scene) or str(scene.cycles.denoiser) != "OPENIMAGEDENOISE":
        return False
    if render_uses_whole_frame(scene) or has_volume(scene):
        return False
    if sum(1 for layer in scene.view_layers if layer.use) != 1:
        return False
    tree = getattr(scene, "compositing_node_group", None)
    if scene.render.use_compositing and tree is not None and any(
            node.type not in PLAIN_COMPOSITOR_NODES for node in tree.nodes):
        return False
    return str(scene.cycles.denoising_prefilter) in PREFILTERS and \
        str(scene.cycles.denoising_quality) in QUALITIES


def denoise_inputs(cycles: Any) -> list[str]:
    """Passes the scene's denoiser reads (its ``denoising_input_passes``)."""
    guides = {"RGB": [], "RGB_ALBEDO": ["Denoising Albedo"],
              "RGB_ALBEDO_NORMAL": ["Denoising Albedo", "Denoising Normal"]}
    return ["Noisy Image", *guides.get(str(cycles.denoising_input_passes), [])]


def store_denoising_passes(scene: Any) -> None:
    """Keep the denoiser's inputs in the render result (measured: the final frame does not
    change, bench/noisy_pass_study.py)."""
    for layer in scene.view_layers:
        if layer.use:
            layer.cycles.denoising_store_passes = True


def save_passes(bpy: Any, scene: Any, path: str) -> None:
    """Write the render result's passes (Noisy Image, Denoising Albedo/Normal/Depth, Combined)
    as a float32 multilayer EXR, then restore the job's own output settings."""
    image = scene.render.image_settings
    saved = {name: getattr(image, name) for name in
             ("media_type", "file_format", "color_mode", "color_depth", "exr_codec")}
    try:
        image.media_type = "MULTI_LAYER_IMAGE"
        image.file_format = "OPEN_EXR_MULTILAYER"
        image.color_depth = "32"
        image.exr_codec = "ZIP"
        bpy.data.images["Render Result"].save_render(filepath=path, scene=scene)
    finally:
        for name in ("media_type", "file_format", "color_mode", "color_depth", "exr_codec"):
            # a setting not valid for the job's format (exr_codec on PNG) stays as it was
            with contextlib.suppress(TypeError, ValueError):
                setattr(image, name, saved[name])
    if not os.path.isfile(path):
        raise RuntimeError("Blender wrote no passes file")


def tile_strategy(scene: Any, region: dict[str, Any] | None = None) -> str:
    """How a tile of this scene is reproduced exactly or closely (see :func:`tile_border`).

    ``tile``: a border render of the tile (with a few pixels of margin for adaptive sampling) is
    bit-identical to the full frame's region.
    ``noisy``: a denoised scene whose final frame is the denoiser's output of its noisy pass
    alone (OpenImageDenoise, one view layer, no compositing, no volume): tiles of the noisy
    pass are reproduced like ``tile`` and the denoiser is re-run on the node's passes.
    ``padded``: other denoised scenes; the denoiser sees neighbours, so the tile is rendered
    with a margin and is close, not identical. ``close``: Cycles scenes with a volume: a tile
    with a margin is now and then a level off on a few pixels (measured: fog tiles >= 99.8%
    equal, max 1 level), while whole frames are bit-identical. ``whole``: Freestyle lines and
    burned-in stamps are laid out over the whole frame, and EEVEE tiles differ from the frame by
    up to 22 levels even with a 64-px margin (screen-space effects) about as much as a quarter-
    sample render does, while EEVEE whole frames are bit-identical: only a full render
    reproduces them. So does an 8-bit frame cropped to the scene's Render Region with dither
    on: the dither is hashed by position in the file written, so a tile rendered in the whole
    frame is up to 2 levels off the cropped file (measured: 36% of pixels equal), while the
    cropped region rendered again is identical.

    ``region``: the job's Render Region (``RenderSettings.region`` as a dict), or None.
    """
    if render_uses_whole_frame(scene) or scene.render.engine.startswith("BLENDER_EEVEE"):
        return "whole"
    if (region and region.get("crop") and scene.render.dither_intensity > 0
            and scene.render.image_settings.file_format != "OPEN_EXR"):
        return "whole"
    if noisy_pass_verifiable(scene, region):
        return "noisy"
    if denoises(scene):
        return "padded"
    if has_volume(scene):
        return "close"
    return "tile"


def has_volume(scene: Any) -> bool:
    """A world or a visible object's material has something linked to its Volume output."""
    def linked(tree: Any) -> bool:
        if tree is None:
            return False
        return any(node.type in ("OUTPUT_MATERIAL", "OUTPUT_WORLD") and
                   any(socket.name == "Volume" and socket.is_linked for socket in node.inputs)
                   for node in tree.nodes)

    world = scene.world
    if world is not None and getattr(world, "use_nodes", True) and linked(world.node_tree):
        return True
    for obj in scene.objects:
        if obj.type == "VOLUME":
            return True
        for slot in getattr(obj, "material_slots", ()):
            material = slot.material
            if material is not None and material.use_nodes and linked(material.node_tree):
                return True
    return False


def render_uses_whole_frame(scene: Any) -> bool:
    return bool(scene.render.use_freestyle or scene.render.use_stamp)


def scene_facts(scene: Any) -> dict[str, Any]:
    """The saved settings intake reports to the creator (all kept as saved, except as noted)."""
    cycles = scene.cycles if scene.render.engine == "CYCLES" else None
    facts: dict[str, Any] = {
        "dither": float(scene.render.dither_intensity),
        "freestyle": bool(scene.render.use_freestyle),
        "freestyle_scripts": freestyle_runs_python(scene),
        "stamp_burned": bool(scene.render.use_stamp),
        "render_region": bool(scene.render.use_border),
        "region": ([float(scene.render.border_min_x), float(scene.render.border_max_x),
                    float(scene.render.border_min_y), float(scene.render.border_max_y)]
                   if scene.render.use_border else None),
        "region_crop": bool(scene.render.use_border and scene.render.use_crop_to_border),
    }
    if cycles is not None:
        facts.update(
            seed=int(cycles.seed),
            animated_seed=bool(cycles.use_animated_seed),
            adaptive_sampling=bool(cycles.use_adaptive_sampling),
            adaptive_threshold=float(cycles.adaptive_threshold),
            adaptive_min_samples=int(cycles.adaptive_min_samples),
            denoise=bool(cycles.use_denoising),
            denoiser=str(cycles.denoiser) if cycles.use_denoising else "",
            time_limit=float(cycles.time_limit),
        )
    return facts


def set_device(bpy: Any, scene: Any, device: str) -> None:
    """Select the Cycles device. GPU kinds are best effort (not exercised in our CPU-only CI)."""
    if device == "CPU":
        if scene.render.engine == "CYCLES":
            scene.cycles.device = "CPU"
        return
    if device not in GPU_DEVICES:
        raise ValueError(f"unsupported device {device!r}; expected CPU or one of {GPU_DEVICES}")
    if scene.render.engine != "CYCLES":
        return
    prefs = bpy.context.preferences.addons["cycles"].preferences
    prefs.compute_device_type = device
    prefs.refresh_devices()
    found = [d for d in prefs.devices if d.type == device]
    if not found:
        raise ValueError(f"no {device} device available on this machine")
    for dev in prefs.devices:
        dev.use = dev.type == device
    scene.cycles.device = "GPU"


def tile_border(render: Any, tile: list[int], strategy: str) -> list[float] | None:
    """Blender border (fractions, Y up) for a pixel tile ``[x, y, w, h]`` (top-left origin).

    The tile is widened by :data:`TILE_MARGIN` (``padded``, ``close``:
    :data:`DENOISE_MARGIN`) on every side, inside the frame; ``whole`` renders the frame.
    Blender truncates ``fraction x size``, so a quarter pixel is added to every edge.
    """
    if strategy == "whole":
        return None
    scale = render.resolution_percentage / 100
    width, height = int(render.resolution_x * scale), int(render.resolution_y * scale)
    x, y, w, h = (int(v) for v in tile)
    if not (w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height):
        raise ValueError(f"tile {tile!r} is not inside the {width}x{height} frame")
    margin = DENOISE_MARGIN if strategy in ("padded", "close") else TILE_MARGIN
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(width, x + w + margin), min(height, y + h + margin)
    x, y, w, h = x0, y0, x1 - x0, y1 - y0
    return [(x + 0.25) / width, min((x + w + 0.25) / width, 1.0),
            (height - (y + h) + 0.25) / height, min((height - y + 0.25) / height, 1.0)]


def set_border(render: Any, border: list[float] | None, *, crop: bool = True) -> None:
    """Render only a region (for tile re-renders).

    ``crop=False`` keeps the frame's size with the region in place: Blender's dither is hashed
    by pixel position, so only then do a tile's 8-bit pixels equal the full frame's (measured:
    a cropped tile of a dithered scene had 33-41% of pixels equal, max 2 levels; uncropped,
    all equal).
    """
    if border is None:
        render.use_border = False
        render.use_crop_to_border = False
        return
    min_x, max_x, min_y, max_y = (float(v) for v in border)
    if not (0.0 <= min_x < max_x <= 1.0 and 0.0 <= min_y < max_y <= 1.0):
        raise ValueError(f"invalid border {border!r}: need 0 <= min < max <= 1 on both axes")
    render.use_border = True
    render.use_crop_to_border = crop
    render.border_min_x, render.border_max_x = min_x, max_x
    render.border_min_y, render.border_max_y = min_y, max_y


def set_region(render: Any, region: dict[str, Any] | None) -> None:
    """Render the job's Render Region (``RenderSettings.region`` as a dict), or whole frames."""
    if not region:
        set_border(render, None)
        return
    set_border(render, [float(region.get(k) or 0.0) for k in ("min_x", "max_x", "min_y",
                                                                 "max_y")],
               crop=bool(region.get("crop")))


def image_size(bpy: Any, path: str) -> tuple[int, int]:
    """Size of the file Blender actually wrote (authoritative even for EXR and borders)."""
    image = bpy.data.images.load(path, check_existing=False)
    try:
        width, height = image.size
    finally:
        bpy.data.images.remove(image)
    return int(width), int(height)


def commands_freeing_idle(commands: IO[str], child: Child,
                          idle_seconds: float = IDLE_RELEASE_SECONDS) -> Iterator[str]:
    """The command lines; a child left waiting `idle_seconds` after a fixed-thread render
    frees that render's session (Child.release_fixed_session) and waits on."""
    while True:
        if child.fixed_session and not select.select([commands], [], [], idle_seconds)[0]:
            try:
                child.release_fixed_session()
            except Exception as exc:  # a warm session is only an optimisation: keep serving
                print(f"could not free the idle render session: {exc}", file=sys.stderr)
        line = commands.readline()
        if not line:
            return
        yield line


def serve(child: Child, commands: Iterable[str], replies: IO[str]) -> None:
    """Answer commands until ``quit`` or until the parent closes the command pipe."""
    handlers = {"ping": child.ping, "log": child.log, "inspect": child.inspect,
                "render": child.render, "strategy": child.strategy, "denoise": child.denoise}
    for line in commands:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "quit":
                reply: dict[str, Any] = {"ok": True}
                replies.write(json.dumps(reply) + "\n")
                replies.flush()
                return
            handler = handlers.get(cmd)
            if handler is None:
                reply = {"ok": False, "error": f"unknown command {cmd!r}"}
            else:
                limit_cpu(msg.get("cpu_seconds"))
                reply = handler(msg)
        except Exception as exc:  # report any scene/command failure; stay alive
            reply = {"ok": False, "error": str(exc).strip() or type(exc).__name__}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cmd-fd", type=int, required=True)
    parser.add_argument("--reply-fd", type=int, required=True)
    parser.add_argument("--memory-limit-bytes", type=int, default=None)
    args = parser.parse_args(argv)
    set_limits(args.memory_limit_bytes)
    commands = open(args.cmd_fd, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    replies = open(args.reply_fd, "w", encoding="utf-8")  # noqa: SIM115
    child = Child()
    serve(child, commands_freeing_idle(commands, child), replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())

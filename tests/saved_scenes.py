"""Scenes saved with the settings a creator uses (seed, adaptive sampling, denoiser, ...).

Built from the sample scene in a bpy child process, so the pytest process never imports bpy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "spinning_cube.blend"

BUILDER = textwrap.dedent(
    """
    import json, sys, bpy
    src, out, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    bpy.ops.wm.open_mainfile(filepath=src, load_ui=False, use_scripts=False)
    scene = bpy.context.scene
    render, cycles = scene.render, scene.cycles
    render.resolution_x, render.resolution_y = options["size"]
    render.resolution_percentage = 100
    cycles.samples = options["samples"]
    cycles.seed = options["seed"]
    cycles.use_animated_seed = options.get("animated_seed", False)
    cycles.use_adaptive_sampling = options.get("adaptive", True)
    cycles.adaptive_threshold = options.get("adaptive_threshold", 0.01)
    cycles.adaptive_min_samples = options.get("adaptive_min_samples", 0)
    cycles.use_denoising = options.get("denoise", False)
    if cycles.use_denoising:
        cycles.denoiser = "OPENIMAGEDENOISE"
        cycles.denoising_prefilter = options.get("prefilter", "ACCURATE")
    cycles.time_limit = options.get("time_limit", 0.0)
    render.dither_intensity = options.get("dither", 1.0)
    for key, value in options.get("extra", {}).items():  # "cycles.x" or "render.x"
        owner, name = key.split(".")
        setattr({"cycles": cycles, "render": render}[owner], name, value)
    if options.get("freestyle"):
        render.use_freestyle = True
        layer = scene.view_layers[0]
        layer.use_freestyle = True
        layer.freestyle_settings.mode = options["freestyle"]
    if options.get("stamp"):
        render.use_stamp = True
        render.use_stamp_date = True
        render.use_stamp_frame = True
    if options.get("compositor"):  # a creator's compositing: brightness/contrast on the frame
        tree = bpy.data.node_groups.new("creator_compositing", "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        scene.compositing_node_group = tree
        render.use_compositing = True
        layers = tree.nodes.new("CompositorNodeRLayers")
        grade = tree.nodes.new("CompositorNodeBrightContrast")
        grade.inputs["Contrast"].default_value = 20.0
        output = tree.nodes.new("NodeGroupOutput")
        tree.links.new(layers.outputs["Image"], grade.inputs["Image"])
        tree.links.new(grade.outputs["Image"], output.inputs["Image"])
    scene.frame_start, scene.frame_end = 1, options.get("frames", 24)
    bpy.ops.wm.save_as_mainfile(filepath=out, copy=True)
    """
)


def build_saved_scene(out: Path, *, size: tuple[int, int] = (160, 90), samples: int = 16,
                      seed: int = 7, **options: object) -> Path:
    """Save the sample scene at ``out`` with a creator's settings (textures beside it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    textures = out.parent / "textures"
    if not textures.exists():
        textures.symlink_to(SAMPLE.parent / "textures")
    opts = {"size": list(size), "samples": samples, "seed": seed, **options}
    subprocess.run([sys.executable, "-c", BUILDER, str(SAMPLE), str(out), json.dumps(opts)],
                   check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return out


REFERENCE = textwrap.dedent(
    """
    import sys, bpy
    blend, out_dir, *frames = sys.argv[1:]
    bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False, use_scripts=False)
    scene = bpy.context.scene
    scene.render.image_settings.media_type = "IMAGE"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    for frame in frames:
        scene.frame_set(int(frame))
        scene.render.filepath = f"{out_dir}/ref_{int(frame):06d}.png"
        bpy.ops.render.render(write_still=True)
    """
)


def render_as_saved(blend: Path, out_dir: Path, frames: list[int]) -> dict[int, Path]:
    """The creator's own F12 render: plain bpy, the file's settings untouched (PNG output)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", REFERENCE, str(blend), str(out_dir),
                    *(str(f) for f in frames)],
                   check=True, timeout=900, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return {f: out_dir / f"ref_{f:06d}.png" for f in frames}

"""Build the Frameproof sample scene from scratch: ``python samples/build_sample.py [OUT.blend]``.

The scene is small, deterministic and self-contained except for one external texture
(``//textures/checker.png``, relative and NOT packed) so that packing and inspection have a
real dependency to find. Run it with a Python that has ``bpy`` installed.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import bpy
import numpy as np

HERE = Path(__file__).resolve().parent
TEXTURE_REL = "textures/checker.png"


def write_checker(path: Path, size: int = 64, squares: int = 8) -> None:
    """Write an 8x8 two-colour checker PNG with bpy itself (no extra dependency)."""
    cell = size // squares
    yy, xx = np.mgrid[0:size, 0:size]
    on = ((yy // cell + xx // cell) % 2).astype(bool)
    rgba = np.empty((size, size, 4), dtype=np.float32)
    rgba[on] = (0.9, 0.55, 0.1, 1.0)
    rgba[~on] = (0.1, 0.2, 0.6, 1.0)
    img = bpy.data.images.new("checker_tmp", size, size, alpha=True)
    img.pixels.foreach_set(rgba.ravel())
    path.parent.mkdir(parents=True, exist_ok=True)
    img.filepath_raw = str(path)
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)


def build(out: Path) -> None:
    """Create the scene in an empty file and save it compressed at ``out``."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    texture = out.parent / TEXTURE_REL
    write_checker(texture)

    scene = bpy.context.scene
    scene.name = "SpinningCube"
    scene.frame_start, scene.frame_end = 1, 24
    render = scene.render
    render.engine = "CYCLES"
    render.resolution_x, render.resolution_y, render.resolution_percentage = 320, 180, 100
    render.fps = 24
    render.dither_intensity = 0.0
    render.use_stamp = False
    render.filepath = "//render/frame_"
    render.image_settings.media_type = "IMAGE"
    render.image_settings.file_format = "PNG"
    cycles = scene.cycles
    cycles.samples = 16
    cycles.seed = 0
    cycles.use_animated_seed = False
    cycles.use_denoising = False  # denoised tiles never match the full frame
    cycles.time_limit = 0.0
    cycles.device = "CPU"

    world = bpy.data.worlds.new("World")
    bg = world.node_tree.nodes["Background"]
    bg.inputs["Color"].default_value = (0.05, 0.05, 0.07, 1.0)
    scene.world = world

    bpy.ops.mesh.primitive_plane_add(size=12, location=(0, 0, 0))
    bpy.context.object.name = "Ground"

    bpy.ops.mesh.primitive_cube_add(size=2, location=(0, 0, 1.2))
    cube = bpy.context.object
    cube.name = "Cube"
    cube.data.materials.append(checker_material(texture))
    cube.rotation_euler = (0, 0, 0)
    cube.keyframe_insert("rotation_euler", frame=1)
    cube.rotation_euler = (0, 0, math.radians(90))
    cube.keyframe_insert("rotation_euler", frame=24)

    bpy.ops.object.light_add(type="SUN", location=(4, -4, 8))
    sun = bpy.context.object
    sun.name = "Sun"
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))

    bpy.ops.object.camera_add(location=(6.5, -6.5, 4.5))
    camera = bpy.context.object
    camera.name = "Camera"
    direction = cube.location - camera.location
    camera.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera

    out.parent.mkdir(parents=True, exist_ok=True)
    bpy.context.preferences.filepaths.save_version = 0  # no spinning_cube.blend1 backup
    bpy.ops.wm.save_as_mainfile(filepath=str(out), compress=True, relative_remap=False)


def checker_material(texture: Path) -> bpy.types.Material:
    """Principled material whose colour comes from the external checker texture."""
    mat = bpy.data.materials.new("Checker")
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    image = bpy.data.images.load(str(texture))
    image.filepath = "//" + TEXTURE_REL  # relative to the .blend, never packed
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Closest"
    links.new(tex.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    return mat


if __name__ == "__main__":
    target = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE / "spinning_cube.blend"
    build(target)
    print(f"wrote {target}")

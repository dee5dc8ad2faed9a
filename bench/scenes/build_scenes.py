"""Build the benchmark's extra scenes with bpy: ``python bench/scenes/build_scenes.py OUT_DIR``.

Writes, into OUT_DIR (generated at run time, nothing binary is committed):

- ``glossy_orbit.blend``: a second scene unlike the sample one: a camera orbiting three
  spheres (glossy metal, rough dielectric, emissive) on a noise-textured floor under an area
  light, so noise, reflections and camera motion differ from the spinning cube.
- ``spinning_cube.blend`` and ``glossy_orbit.blend`` as creators save them: adaptive sampling
  on (threshold 0.01) and Blender's default dither (1.0).
- ``<scene>_denoised.blend`` for both scenes: the same with Cycles' OpenImageDenoise on: the
  denoised jobs, and what the "low samples + denoiser" cheats render with.

Run it in its own process before the benchmark starts its Blender worker (one Blender at a time).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import bpy

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "spinning_cube.blend"


def build_glossy_orbit(out: Path) -> None:
    """Create the second scene from an empty file (Cycles, 16 samples, 320x180, frames 1-24)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.name = "GlossyOrbit"
    scene.frame_start, scene.frame_end = 1, 24
    render = scene.render
    render.engine = "CYCLES"
    render.resolution_x, render.resolution_y, render.resolution_percentage = 320, 180, 100
    render.dither_intensity = 0.0
    cycles = scene.cycles
    cycles.samples = 16
    cycles.seed = 0
    cycles.use_denoising = False
    cycles.time_limit = 0.0
    cycles.device = "CPU"

    world = bpy.data.worlds.new("World")
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.25, 0.3, 0.4, 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.6
    scene.world = world

    bpy.ops.mesh.primitive_plane_add(size=20, location=(0, 0, 0))
    bpy.context.object.data.materials.append(floor_material())
    specs = [
        ((-2.2, 0, 1), principled("Metal", (0.9, 0.6, 0.3), metallic=1.0, roughness=0.15)),
        ((0, 1.5, 1), principled("Plastic", (0.2, 0.5, 0.9), metallic=0.0, roughness=0.45)),
        ((2.2, 0, 1), emission("Glow", (1.0, 0.3, 0.5), 4.0)),
    ]
    for location, mat in specs:
        bpy.ops.mesh.primitive_uv_sphere_add(
            radius=1, location=location, segments=48, ring_count=24
        )
        bpy.ops.object.shade_smooth()
        bpy.context.object.data.materials.append(mat)

    bpy.ops.object.light_add(type="AREA", location=(0, -3, 6))
    light = bpy.context.object
    light.data.energy = 600.0
    light.data.size = 3.0

    bpy.ops.object.empty_add(location=(0, 0, 0))
    pivot = bpy.context.object
    bpy.ops.object.camera_add(location=(0, -9, 4))
    camera = bpy.context.object
    camera.rotation_euler = (math.radians(72), 0, 0)
    camera.parent = pivot
    pivot.rotation_euler = (0, 0, 0)
    pivot.keyframe_insert("rotation_euler", frame=1)
    pivot.rotation_euler = (0, 0, math.radians(60))
    pivot.keyframe_insert("rotation_euler", frame=24)
    scene.camera = camera
    save(out)


def principled(
    name: str, color: tuple[float, float, float], *, metallic: float, roughness: float
) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Metallic"].default_value = metallic
    bsdf.inputs["Roughness"].default_value = roughness
    return mat


def emission(name: str, color: tuple[float, float, float], strength: float) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Emission Color"].default_value = (*color, 1.0)
    bsdf.inputs["Emission Strength"].default_value = strength
    return mat


def floor_material() -> bpy.types.Material:
    """A procedural noise floor: texture detail everywhere, so few tiles are flat."""
    mat = bpy.data.materials.new("Floor")
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 6.0
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color = (0.05, 0.08, 0.05, 1.0)
    ramp.color_ramp.elements[1].color = (0.7, 0.75, 0.6, 1.0)
    links.new(noise.outputs["Fac"], ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    return mat


def save(out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    bpy.context.preferences.filepaths.save_version = 0
    bpy.ops.wm.save_as_mainfile(filepath=str(out), compress=True, relative_remap=True)


def as_creators_save(src: Path, out: Path, *, denoise: bool) -> None:
    """Save ``src`` with what creators' files have on: adaptive sampling (threshold 0.01) and
    Blender's default dither; OpenImageDenoise when ``denoise``. The farm renders it as saved."""
    bpy.ops.wm.open_mainfile(filepath=str(src), load_ui=False, use_scripts=False)
    scene = bpy.context.scene
    scene.cycles.use_adaptive_sampling = True
    scene.cycles.adaptive_threshold = 0.01
    scene.render.dither_intensity = 1.0
    scene.cycles.use_denoising = denoise
    if denoise:
        scene.cycles.denoiser = "OPENIMAGEDENOISE"
    save(out)


def main(out_dir: Path) -> None:
    glossy = out_dir / "glossy_orbit_built.blend"
    build_glossy_orbit(glossy)
    for name, src in (("glossy_orbit", glossy), ("spinning_cube", SAMPLE)):
        as_creators_save(src, out_dir / f"{name}.blend", denoise=False)
        as_creators_save(src, out_dir / f"{name}_denoised.blend", denoise=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())

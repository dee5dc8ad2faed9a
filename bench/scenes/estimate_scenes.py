"""Scenes for the estimate benchmark: ``python bench/scenes/estimate_scenes.py OUT_DIR``.

Tiny Cycles scenes (160x90, frames 1-6) whose cost per pixel-sample differs by far more
than 4x, each for a reason the old pixels x samples estimate could not see:

- ``plain``: a diffuse cube on a plane, two bounces: the cheap end;
- ``fog``: the camera inside a scattering volume, lit by a spot light (Proof-of-Render checks
  volume scenes in close mode, docs/VERIFICATION.md);
- ``skin``: five subdivided heads in random-walk subsurface scattering;
- ``glass``: a stack of glass spheres with 48 transmission bounces;
- ``dense``: three 1.3-million-triangle meshes (scene sync and BVH are a large fixed cost);
- ``textures``: a 2048x2048 image texture saved beside the .blend plus a procedural bump
  network (shader cost; the image is a dependency the packer must carry);
- ``growing``: frame 1 shows one sphere, frame 6 twenty glossy ones: a frame's cost changes
  along the animation, which the probe's first/middle/last frames must catch.

Generated at run time by bpy in a child process; nothing binary is committed.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import bpy

RESOLUTION = (160, 90)
FRAMES = (1, 6)


def fresh(samples: int, *, bounces: int = 8) -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.render.resolution_x, scene.render.resolution_y = RESOLUTION
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = FRAMES
    cycles = scene.cycles
    cycles.samples = samples
    cycles.use_denoising = False
    cycles.max_bounces = bounces
    cycles.device = "CPU"
    world = bpy.data.worlds.new("World")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.2, 0.22, 0.25, 1)
    scene.world = world
    return scene


def material(name: str, color: tuple[float, float, float], *, rough: float = 0.5,
             metal: float = 0.0, glass: float = 0.0, ior: float = 1.45) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Roughness"].default_value = rough
    bsdf.inputs["Metallic"].default_value = metal
    bsdf.inputs["Transmission Weight"].default_value = glass
    bsdf.inputs["IOR"].default_value = ior
    return mat


def camera(scene: bpy.types.Scene, location: tuple[float, float, float],
           rotation: tuple[float, float, float]) -> None:
    bpy.ops.object.camera_add(location=location, rotation=rotation)
    scene.camera = bpy.context.object


def ground(size: float = 30.0) -> None:
    bpy.ops.mesh.primitive_plane_add(size=size)
    bpy.context.object.data.materials.append(material("ground", (0.6, 0.6, 0.6)))


def sun(energy: float = 3.0) -> None:
    bpy.ops.object.light_add(type="SUN", location=(0, 0, 10), rotation=(0.5, 0.2, 0.6))
    bpy.context.object.data.energy = energy


def animate_spin(obj: bpy.types.Object) -> None:
    obj.rotation_euler = (0, 0, 0)
    obj.keyframe_insert("rotation_euler", frame=FRAMES[0])
    obj.rotation_euler = (0, 0, math.radians(90))
    obj.keyframe_insert("rotation_euler", frame=FRAMES[1])


def save(path: Path) -> None:
    bpy.context.preferences.filepaths.save_version = 0
    bpy.ops.wm.save_as_mainfile(filepath=str(path), relative_remap=True)


def plain(out: Path) -> None:
    scene = fresh(16, bounces=2)
    ground()
    bpy.ops.mesh.primitive_cube_add(location=(0, 0, 1))
    bpy.context.object.data.materials.append(material("cube", (0.8, 0.3, 0.2)))
    animate_spin(bpy.context.object)
    sun()
    camera(scene, (0, -8, 4), (math.radians(65), 0, 0))
    save(out)


def fog(out: Path) -> None:
    scene = fresh(16, bounces=8)
    scene.cycles.volume_bounces = 4
    ground()
    bpy.ops.mesh.primitive_cube_add(location=(0, 0, 1))
    bpy.context.object.data.materials.append(material("cube", (0.8, 0.8, 0.8)))
    animate_spin(bpy.context.object)
    bpy.ops.mesh.primitive_cube_add(size=24, location=(0, 0, 4))
    volume = bpy.data.materials.new("fog")
    volume.use_nodes = True
    nodes = volume.node_tree.nodes
    nodes.remove(nodes["Principled BSDF"])
    scatter = nodes.new("ShaderNodeVolumePrincipled")
    scatter.inputs["Density"].default_value = 0.15
    volume.node_tree.links.new(scatter.outputs[0], nodes["Material Output"].inputs["Volume"])
    bpy.context.object.data.materials.append(volume)
    bpy.ops.object.light_add(type="SPOT", location=(2, -3, 7), rotation=(0.5, 0.2, 0.3))
    bpy.context.object.data.energy = 3000.0
    camera(scene, (0, -8, 4), (math.radians(65), 0, 0))
    save(out)


def skin(out: Path) -> None:
    scene = fresh(16, bounces=8)
    ground()
    wax = material("wax", (0.9, 0.75, 0.6), rough=0.4)
    bsdf = wax.node_tree.nodes["Principled BSDF"]
    bsdf.subsurface_method = "RANDOM_WALK"
    bsdf.inputs["Subsurface Weight"].default_value = 1.0
    bsdf.inputs["Subsurface Radius"].default_value = (1.0, 0.5, 0.3)
    bsdf.inputs["Subsurface Scale"].default_value = 0.5
    for i in range(5):
        bpy.ops.mesh.primitive_monkey_add(size=1.4, location=((i - 2) * 1.5, 0, 1))
        bpy.ops.object.shade_smooth()
        bpy.context.object.modifiers.new("smooth", "SUBSURF").levels = 2
        bpy.context.object.data.materials.append(wax)
    animate_spin(bpy.context.object)
    bpy.ops.object.light_add(type="AREA", location=(0, -3, 5))
    bpy.context.object.data.energy = 600.0
    camera(scene, (0, -8, 3), (math.radians(75), 0, 0))
    save(out)


def glass(out: Path) -> None:
    scene = fresh(16, bounces=48)
    cycles = scene.cycles
    cycles.transmission_bounces = cycles.glossy_bounces = 48
    cycles.transparent_max_bounces = 48
    cycles.caustics_reflective = cycles.caustics_refractive = True
    ground()
    clear = material("glass", (1.0, 1.0, 1.0), rough=0.0, glass=1.0, ior=1.5)
    for i in range(12):
        bpy.ops.mesh.primitive_uv_sphere_add(radius=0.9, location=(
            (i % 4 - 1.5) * 1.1, (i // 4) * 0.9 - 0.9, 1 + (i % 3) * 0.5),
            segments=32, ring_count=16)
        bpy.ops.object.shade_smooth()
        bpy.context.object.data.materials.append(clear)
    bpy.ops.object.light_add(type="AREA", location=(0, -2, 6))
    bpy.context.object.data.energy = 800.0
    animate_spin(bpy.context.object)
    camera(scene, (0, -7, 3), (math.radians(72), 0, 0))
    save(out)


def dense(out: Path) -> None:
    scene = fresh(8, bounces=4)
    ground()
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=8, radius=1.5, location=(0, 0, 1.5))
    sphere = bpy.context.object
    displace = sphere.modifiers.new("displace", "DISPLACE")
    texture = bpy.data.textures.new("bumps", "CLOUDS")
    texture.noise_scale = 0.3
    displace.texture = texture
    displace.strength = 0.4
    bpy.ops.object.modifier_apply(modifier="displace")  # ~1.3 M triangles, stored in the file
    for i, x in enumerate((-3.2, 3.2)):
        copy = sphere.copy()
        copy.data = sphere.data.copy()
        copy.location = (x, 0.5 * i, 1.5)
        scene.collection.objects.link(copy)
    sphere.data.materials.append(material("clay", (0.7, 0.5, 0.4)))
    animate_spin(sphere)
    sun()
    camera(scene, (0, -10, 4), (math.radians(70), 0, 0))
    save(out)


def textures(out: Path) -> None:
    scene = fresh(16, bounces=4)
    size = 2048
    image = bpy.data.images.new("albedo", size, size)
    row = [((x * 7) % 256) / 255 for x in range(size)]
    pixels = []
    for y in range(size):
        shade = ((y * 13) % 256) / 255
        for value in row:
            pixels.extend((value, shade, 0.5 * (value + shade), 1.0))
    image.pixels.foreach_set(pixels)
    image.filepath_raw = str(out.with_name("textures_albedo.png"))
    image.file_format = "PNG"
    image.save()
    mat = bpy.data.materials.new("textured")
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = bpy.data.images.load(str(out.with_name("textures_albedo.png")))
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    bump_in = None
    for i in range(6):  # a chain of procedural textures: expensive shading per sample
        noise = nodes.new("ShaderNodeTexNoise")
        noise.inputs["Scale"].default_value = 3.0 + i * 4
        noise.inputs["Detail"].default_value = 15.0
        voronoi = nodes.new("ShaderNodeTexVoronoi")
        links.new(noise.outputs["Fac"], voronoi.inputs["Scale"])
        mix = nodes.new("ShaderNodeMath")
        links.new(voronoi.outputs["Distance"], mix.inputs[0])
        if bump_in is not None:
            links.new(bump_in, mix.inputs[1])
        bump_in = mix.outputs[0]
    bump = nodes.new("ShaderNodeBump")
    links.new(bump_in, bump.inputs["Height"])
    links.new(bump.outputs["Normal"], bsdf.inputs["Normal"])
    bpy.ops.mesh.primitive_plane_add(size=30)
    bpy.context.object.data.materials.append(mat)
    bpy.ops.mesh.primitive_cube_add(location=(0, 0, 1), size=2.5)
    bpy.context.object.data.materials.append(mat)
    animate_spin(bpy.context.object)
    sun()
    camera(scene, (0, -8, 4), (math.radians(65), 0, 0))
    save(out)


def growing(out: Path) -> None:
    scene = fresh(16, bounces=12)
    ground()
    shiny = material("shiny", (0.9, 0.9, 0.9), rough=0.05, metal=1.0)
    for i in range(20):
        bpy.ops.mesh.primitive_uv_sphere_add(radius=0.6, location=(
            (i % 5 - 2) * 1.3, (i // 5) * 1.3 - 1, 0.6), segments=32, ring_count=16)
        obj = bpy.context.object
        obj.data.materials.append(shiny)
        appears = FRAMES[0] + round(i * (FRAMES[1] - FRAMES[0]) / 19)
        for frame, hidden in ((FRAMES[0], i > 0), (appears, False)):
            obj.hide_render = hidden
            obj.keyframe_insert("hide_render", frame=frame)
    sun()
    camera(scene, (0, -9, 5), (math.radians(60), 0, 0))
    save(out)


BUILDERS = {"plain": plain, "fog": fog, "skin": skin, "glass": glass, "dense": dense,
            "textures": textures, "growing": growing}


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, build in BUILDERS.items():
        build(out_dir / f"{name}.blend")


if __name__ == "__main__":
    main(Path(sys.argv[sys.argv.index("--") + 1] if "--" in sys.argv else sys.argv[1]))

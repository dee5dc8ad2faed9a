"""Scenes whose tiles are not exactly reproducible by a border render: a fog volume (Cycles)
and EEVEE. Built from the sample scene in a bpy child process (the pytest process never
imports bpy)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from saved_scenes import SAMPLE

BUILDER = textwrap.dedent(
    """
    import json, sys, bpy
    src, out, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    bpy.ops.wm.open_mainfile(filepath=src, load_ui=False, use_scripts=False)
    scene = bpy.context.scene
    render = scene.render
    render.resolution_x, render.resolution_y = options["size"]
    render.resolution_percentage = 100
    render.engine = options["engine"]
    if options["engine"] == "CYCLES":
        scene.cycles.samples = options["samples"]
        scene.cycles.seed = options.get("seed", 0)
        scene.cycles.use_denoising = False
    else:
        scene.eevee.taa_render_samples = options["samples"]
    if options.get("fog"):
        # An object volume around camera and cube (a world volume would swallow the sun).
        bpy.ops.mesh.primitive_cube_add(size=30.0, location=(0.0, 0.0, 0.0))
        box = bpy.context.active_object
        box.name = "Fog"
        material = bpy.data.materials.new("Fog")
        material.use_nodes = True
        nodes, links = material.node_tree.nodes, material.node_tree.links
        for node in [n for n in nodes if n.type != "OUTPUT_MATERIAL"]:
            nodes.remove(node)
        output = next(n for n in nodes if n.type == "OUTPUT_MATERIAL")
        scatter = nodes.new("ShaderNodeVolumeScatter")
        scatter.inputs["Density"].default_value = options["fog"]
        links.new(scatter.outputs["Volume"], output.inputs["Volume"])
        box.data.materials.append(material)
    scene.frame_start, scene.frame_end = 1, 24
    bpy.ops.wm.save_as_mainfile(filepath=out, copy=True)
    """
)


def build_scene(out: Path, *, engine: str, size: tuple[int, int] = (160, 90),
                samples: int = 16, fog: float = 0.0, seed: int = 0) -> Path:
    """Save the sample scene at ``out`` rendered by ``engine``, with a fog box of density
    ``fog`` when non-zero (textures beside it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    textures = out.parent / "textures"
    if not textures.exists():
        textures.symlink_to(SAMPLE.parent / "textures")
    opts = {"size": list(size), "samples": samples, "engine": engine, "fog": fog, "seed": seed}
    subprocess.run([sys.executable, "-c", BUILDER, str(SAMPLE), str(out), json.dumps(opts)],
                   check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return out

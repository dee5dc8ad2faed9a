"""bpy child for bench/noisy_pass_study.py: renders and compositor denoiser re-runs.

Run as ``python noisy_pass_child.py JOBS.json``; never imported by the parent (it imports bpy).
Scene Python is never run (``use_scripts=False``). Each job writes a multilayer EXR (every
pass, float32) and/or a PNG as the node writes it, and prints one JSON line with its seconds.
"""

import json
import sys
import time

import bpy


def open_scene(blend: str, job: dict):
    bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False, use_scripts=False)
    scene = bpy.context.scene
    scene.frame_set(job.get("frame", 1))
    scene.render.threads_mode = "FIXED"
    scene.render.threads = job.get("threads", 1)
    return scene


def save(scene, exr: str | None, png: str | None) -> None:
    result = bpy.data.images["Render Result"]
    settings = scene.render.image_settings
    if exr:
        settings.media_type = "MULTI_LAYER_IMAGE"
        settings.file_format = "OPEN_EXR_MULTILAYER"
        settings.color_depth = "32"
        settings.exr_codec = "ZIP"
        result.save_render(filepath=exr, scene=scene)
    if png:
        settings.media_type = "IMAGE"
        settings.file_format = "PNG"
        settings.color_mode = "RGB"
        settings.color_depth = "8"
        result.save_render(filepath=png, scene=scene)


def render(job: dict) -> None:
    scene = open_scene(job["blend"], job)
    cycles, layer = scene.cycles, scene.view_layers[0]
    cycles.use_denoising = job.get("denoise", cycles.use_denoising)
    layer.cycles.denoising_store_passes = job.get("store_passes", False)
    for key, value in job.get("cycles", {}).items():
        setattr(cycles, key, value)
    if job.get("border"):
        x0, y0, x1, y1 = job["border"]
        r = scene.render
        r.use_border, r.use_crop_to_border = True, True
        r.border_min_x, r.border_min_y, r.border_max_x, r.border_max_y = x0, y0, x1, y1
    bpy.ops.render.render()
    save(scene, job.get("exr"), job.get("png"))


def denoise(job: dict) -> None:
    """The compositor's Denoise node on the passes of a node's multilayer EXR."""
    scene = open_scene(job["blend"], job)
    tree = bpy.data.node_groups.new("verify_denoise", "CompositorNodeTree")
    tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    scene.compositing_node_group = tree
    scene.render.use_compositing = True
    image = tree.nodes.new("CompositorNodeImage")
    image.image = bpy.data.images.load(job["passes"])
    out = {s.name: s for s in image.outputs}
    node = tree.nodes.new("CompositorNodeDenoise")
    node.inputs["HDR"].default_value = True
    node.inputs["Prefilter"].default_value = job["prefilter"]
    node.inputs["Quality"].default_value = job["quality"]
    tree.links.new(out[job.get("noisy", "Noisy Image")], node.inputs["Image"])
    if job.get("guides", True):
        tree.links.new(out["Denoising Albedo"], node.inputs["Albedo"])
        tree.links.new(out["Denoising Normal"], node.inputs["Normal"])
    group_out = tree.nodes.new("NodeGroupOutput")
    tree.links.new(node.outputs["Image"], group_out.inputs["Image"])
    bpy.ops.render.render()
    save(scene, job.get("exr"), job.get("png"))


def main() -> None:
    with open(sys.argv[1]) as spec:
        jobs = json.load(spec)
    for job in jobs:
        t0, c0 = time.perf_counter(), time.process_time()
        {"render": render, "denoise": denoise}[job["kind"]](job)
        print("JOB " + json.dumps({"name": job["name"], "wall_s": time.perf_counter() - t0,
                                   "cpu_s": time.process_time() - c0}), flush=True)


main()

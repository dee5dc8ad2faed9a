"""Render frames with plain bpy, independently of Frameproof's code: the tests' reference.

Usage: python tests/reference_render.py SCENE.blend OUT_DIR SAMPLES PERCENT FRAME [FRAME...]
"""

import sys

import bpy

scene_path, out_dir, samples, percent, *frames = sys.argv[1:]
bpy.ops.wm.open_mainfile(filepath=scene_path, load_ui=False, use_scripts=False)
scene = bpy.context.scene
scene.cycles.samples = int(samples)
scene.render.resolution_percentage = int(percent)
scene.render.image_settings.media_type = "IMAGE"
scene.render.image_settings.file_format = "PNG"
for frame in frames:
    scene.frame_set(int(frame))
    scene.render.filepath = f"{out_dir}/ref_{int(frame):06d}.png"
    bpy.ops.render.render(write_still=True)

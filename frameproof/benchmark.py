"""Node score: how fast a machine renders a fixed reference scene, relative to the reference.

In the spirit of OctaneBench: everyone renders the same scene with the same settings, and the
score is `REFERENCE_SECONDS / measured_seconds` (1.0 = the reference machine, 2.0 = twice as
fast). A node's own score is only a hint (routing, display): prices come from the network's
measurements (coordinator/domain/pricing.py). The coordinator runs this benchmark on its own
machine to convert its probe renders into reference seconds.

The scene is built procedurally with bpy (no .blend asset to ship or tamper with) in a child
Python, then rendered through `BlenderWorker`, the same path a real job takes. A tiny border
render first warms up Cycles (kernel load), so the timed render measures path tracing.

Run it: `render-node benchmark` (or `python -m frameproof.benchmark`); see docs/PRICING.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from frameproof.blender.worker import BlenderWorker, RenderSettings

RESOLUTION = (320, 180)
SAMPLES = 24
SEED = 7
REFERENCE_SECONDS = 2.72
"""Timed render of the reference scene on the reference machine (the 2-vCPU build box where
this module was written, bpy 5.0.1, CPU): median of three runs of
`python -m frameproof.benchmark` (2.81, 2.64, 2.71 s); see docs/PAYMENTS.md."""
REFERENCE_PIXEL_SAMPLES = RESOLUTION[0] * RESOLUTION[1] * SAMPLES


@dataclass(frozen=True)
class BenchmarkResult:
    """What a node reports: its score and the measurement it came from."""

    score: float
    seconds: float
    reference_seconds: float
    pixel_samples_per_second: float
    blender_version: str
    device: str


def score_from_seconds(seconds: float, reference_seconds: float = REFERENCE_SECONDS) -> float:
    """1.0 at the reference time; proportional to speed. Refuses a non-positive time."""
    if seconds <= 0:
        raise ValueError(f"benchmark time must be positive, got {seconds!r}")
    return reference_seconds / seconds


def build_reference_scene(path: Path, *, timeout: float = 60.0) -> Path:
    """Write the reference .blend at `path`, built by bpy in a child Python."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    subprocess.run(
        [sys.executable, "-m", "frameproof.benchmark", "--build", str(path)],
        check=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return path


def run_benchmark(*, device: str = "CPU", threads: int = 0) -> BenchmarkResult:
    """Build, warm up, render and time the reference scene; about 5 s on the reference box."""
    settings = RenderSettings(
        engine="CYCLES",
        samples=SAMPLES,
        resolution_x=RESOLUTION[0],
        resolution_y=RESOLUTION[1],
        resolution_percentage=100,
        seed=SEED,
    )
    with tempfile.TemporaryDirectory(prefix="fp-bench-") as tmp:
        blend = build_reference_scene(Path(tmp) / "reference.blend")
        with BlenderWorker(threads=threads, device=device) as worker:
            worker.render_frame(blend, 1, Path(tmp) / "warm.png", settings,
                                border=(0.0, 0.1, 0.0, 0.1))
            result = worker.render_frame(blend, 1, Path(tmp) / "ref.png", settings)
    return BenchmarkResult(
        score=score_from_seconds(result.seconds),
        seconds=result.seconds,
        reference_seconds=REFERENCE_SECONDS,
        pixel_samples_per_second=REFERENCE_PIXEL_SAMPLES / result.seconds,
        blender_version=result.blender_version,
        device=device,
    )


def _build(path: str) -> None:  # pragma: no cover - runs in the child with bpy
    """The reference scene: ground, six spheres (diffuse, glossy, glass), sun, area light."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = SAMPLES
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.seed = SEED
    scene.render.resolution_x, scene.render.resolution_y = RESOLUTION
    scene.frame_start = scene.frame_end = 1
    world = bpy.data.worlds.new("World")
    world.color = (0.05, 0.06, 0.08)
    scene.world = world

    def material(name: str, color: tuple[float, float, float], rough: float,
                 metal: float = 0.0, glass: float = 0.0) -> bpy.types.Material:
        mat = bpy.data.materials.new(name)
        mat.use_nodes = True
        bsdf = mat.node_tree.nodes["Principled BSDF"]
        bsdf.inputs["Base Color"].default_value = (*color, 1.0)
        bsdf.inputs["Roughness"].default_value = rough
        bsdf.inputs["Metallic"].default_value = metal
        bsdf.inputs["Transmission Weight"].default_value = glass
        return mat

    bpy.ops.mesh.primitive_plane_add(size=40)
    bpy.context.object.data.materials.append(material("ground", (0.6, 0.6, 0.6), 0.5))
    looks = [((0.8, 0.1, 0.1), 0.4, 0.0, 0.0), ((0.9, 0.9, 0.9), 0.05, 1.0, 0.0),
             ((1.0, 1.0, 1.0), 0.0, 0.0, 1.0), ((0.1, 0.5, 0.9), 0.3, 0.0, 0.0),
             ((0.9, 0.7, 0.2), 0.2, 1.0, 0.0), ((0.2, 0.8, 0.3), 0.6, 0.0, 0.0)]
    for i, (color, rough, metal, glass) in enumerate(looks):
        bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0, location=(-5 + 2.1 * i, (i % 2) * 2, 1),
                                             segments=48, ring_count=24)
        bpy.ops.object.shade_smooth()
        bpy.context.object.data.materials.append(material(f"m{i}", color, rough, metal, glass))
    bpy.ops.object.light_add(type="SUN", location=(0, 0, 10), rotation=(0.6, 0.2, 0.8))
    bpy.context.object.data.energy = 3.0
    bpy.ops.object.light_add(type="AREA", location=(3, -4, 5))
    bpy.context.object.data.energy = 800.0
    bpy.context.object.data.size = 3.0
    bpy.ops.object.camera_add(location=(0, -12, 5), rotation=(1.2, 0.0, 0.0))
    scene.camera = bpy.context.object
    bpy.ops.wm.save_as_mainfile(filepath=path)


def main(argv: list[str] | None = None) -> int:
    """`--build PATH` (child side) or run the benchmark and print its result as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--build"]:
        _build(args[1])
        return 0
    print(json.dumps(asdict(run_benchmark()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

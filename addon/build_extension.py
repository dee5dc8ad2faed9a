"""Build the Blender extension zip: the add-on plus frameproof and its dependencies as wheels.

Blender's extension system installs the wheels a manifest lists (`wheels = [...]`) into its
own site-packages when the extension is installed; its Python is 3.11 (Blender 4.2 to 5.0),
so the wheels are for CPython 3.11 on each platform asked for.

    python addon/build_extension.py                        # this machine's platform
    python addon/build_extension.py --platform windows-x64 --platform macos-arm64
    python addon/build_extension.py --frameproof-only      # a Python that has the rest

The frameproof wheel is built from this checkout without build isolation (this Python needs
setuptools and grpcio-tools, as `.[dev]` has); the other wheels come from the package index
through pip.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADDON = Path(__file__).resolve().parent / "frameproof_blender"
# What frameproof.creator imports, with the pins of pyproject.toml's base dependencies.
DEPENDENCIES = ("grpcio==1.85.1", "protobuf>=7.35.1,<8", "solders==0.29.*",
                "blender-asset-tracer>=1.23,<2", "zstandard>=0.22", "typing_extensions")
# Blender's platform names -> pip's platform tags (newest first).
PLATFORM_TAGS = {
    "linux-x64": ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    "linux-arm64": ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64",
                    "manylinux2014_aarch64"),
    "macos-arm64": ("macosx_11_0_arm64", "macosx_11_0_universal2", "macosx_10_9_universal2"),
    "macos-x64": ("macosx_10_9_x86_64", "macosx_10_12_x86_64", "macosx_10_9_universal2"),
    "windows-x64": ("win_amd64",),
}
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")
PACKAGES = ("proto", "frameproof", "coordinator", "render_node", "verifier")


def host_platform() -> str:
    machine = platform.machine().lower()
    arch = "arm64" if machine in ("arm64", "aarch64") else "x64"
    system = {"darwin": "macos", "win32": "windows"}.get(sys.platform, "linux")
    return f"{system}-{arch}"


def frameproof_wheel(out: Path) -> Path:
    """Build frameproof's wheel from a clean copy of the checkout (gRPC code generated)."""
    with tempfile.TemporaryDirectory(prefix="frameproof-src-") as work:
        source = Path(work)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for name in SOURCES:
            shutil.copy2(ROOT / name, source / name)
        for name in PACKAGES:
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        shutil.rmtree(source / "frameproof" / "v1", ignore_errors=True)  # the hook makes it
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                        "--no-build-isolation", "--wheel-dir", str(out), str(source)],
                       check=True, cwd=work)
    (wheel,) = out.glob("frameproof-*.whl")
    return wheel


def dependency_wheels(out: Path, blender_platform: str) -> list[Path]:
    before = set(out.glob("*.whl"))
    tags = [arg for tag in PLATFORM_TAGS[blender_platform] for arg in ("--platform", tag)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.11", *tags,
                    "--dest", str(out), *DEPENDENCIES], check=True)
    return sorted(set(out.glob("*.whl")) - before)


def with_top_level_keys(manifest: str, keys: str) -> str:
    """Insert keys before the manifest's first [table] (after it they would belong to it)."""
    head, table, rest = manifest.partition("\n[")
    return f"{head}\n{keys}{table}{rest}"


def build(out_zip: Path, platforms: list[str], *, frameproof_only: bool = False) -> Path:
    """Write the extension zip; return its path."""
    with tempfile.TemporaryDirectory(prefix="frameproof-ext-") as work:
        wheel_dir = Path(work) / "wheels"
        wheel_dir.mkdir()
        wheels = [frameproof_wheel(wheel_dir)]
        if not frameproof_only:
            for name in platforms:
                wheels += dependency_wheels(wheel_dir, name)
        listed = "wheels = [\n" + "".join(
            f'  "./wheels/{wheel.name}",\n' for wheel in sorted(set(wheels))) + "]\n"
        if not frameproof_only:
            listed += "platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]\n"
        manifest = with_top_level_keys((ADDON / "blender_manifest.toml").read_text(), listed)
        out_zip.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out_zip, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(ADDON.rglob("*")):
                relative = path.relative_to(ADDON).as_posix()
                if path.is_file() and "__pycache__" not in relative \
                        and relative != "blender_manifest.toml":
                    archive.write(path, relative)
            archive.writestr("blender_manifest.toml", manifest)
            for wheel in sorted(set(wheels)):
                archive.write(wheel, f"wheels/{wheel.name}")
    return out_zip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORM_TAGS),
                        help="Blender platform to bundle wheels for (repeatable; default: "
                             "this machine's)")
    parser.add_argument("--frameproof-only", action="store_true",
                        help="bundle only frameproof's wheel (its dependencies must already "
                             "be importable in Blender's Python)")
    parser.add_argument("--out", type=Path, help="the zip (default dist/frameproof_blender-"
                                                 "VERSION-PLATFORMS.zip)")
    args = parser.parse_args(argv)
    platforms = args.platform or [host_platform()]
    version = tomllib.loads((ADDON / "blender_manifest.toml").read_text())["version"]
    which = "any" if args.frameproof_only else "+".join(platforms)
    out = args.out or ROOT / "dist" / f"frameproof_blender-{version}-{which}.zip"
    built = build(out, platforms, frameproof_only=args.frameproof_only)
    print(f"{built} ({built.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

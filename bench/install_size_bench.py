"""Install size of each role: build the wheel, install it into a fresh venv per role, measure.

`du` of each venv's site-packages (pip and setuptools of the fresh venv included, as a user
gets them) and the install time. The creator's install must stay under 150 MB: it is what a
scene's author downloads to submit a job. Downloads come from PyPI (or pip's cache).

    .venv/bin/python bench/install_size_bench.py [--roles creator,node] [--no-write]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402

ROLES = {
    "creator": "",
    "node": "[node]",
    "coordinator": "[coordinator]",
    "dev": "[dev]",
}
WHAT = {
    "creator": "submit, watch, download, estimate, receipts, wallet (no Blender)",
    "node": "render-node and render-verifier: bpy, OpenCV, scikit-image",
    "coordinator": "render-coordinator: bpy, database, chain client, HTTP",
    "dev": "both roles, the code generator and the test tools",
}
PYTHON = "3.11"


def build_wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True)
    return next(out.glob("frameproof-*.whl"))


def measure(wheel: Path, role: str, work: Path) -> tuple[int, float, int]:
    """MiB of site-packages, seconds to install, distributions installed."""
    venv = work / f"venv-{role}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    started = time.monotonic()
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{wheel}{ROLES[role]}"],
                   check=True, capture_output=True)
    seconds = time.monotonic() - started
    site = venv / "lib" / f"python{PYTHON}" / "site-packages"
    du = subprocess.run(["du", "-sm", str(site)], check=True, capture_output=True, text=True)
    count = len(list(site.glob("*.dist-info")))
    shutil.rmtree(venv)
    return int(du.stdout.split()[0]), seconds, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", default=",".join(ROLES))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    roles = args.roles.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wheel = build_wheel(work / "dist")
        rows = []
        for role in roles:
            mib, seconds, count = measure(wheel, role, work)
            rows.append((role, mib, seconds, count))
            print(f"{role}: {mib} MB in {seconds:.0f} s ({count} distributions)", flush=True)
    body = ["| role | `pip install` | site-packages | distributions | install time | what |",
            "|---|---|---|---|---|---|"]
    for role, mib, seconds, count in rows:
        body.append(f"| {role} | `frameproof{ROLES[role]}` | {mib} MB | {count} | "
                    f"{seconds:.0f} s | {WHAT[role]} |")
    body.append("")
    body.append("Fresh venv per role (its own pip and setuptools included, ~25 MB), the wheel "
                "built as `make dist` does. Install times include downloads (bpy once, then "
                "pip's cache) and vary with the network and the machine's load; the sizes do "
                "not. The creator's install has no bpy, OpenCV, NumPy or database driver "
                "(tests/integration/test_packaging.py checks it stays under 150 MB).")
    if not args.no_write:
        write_section("install size", ".venv/bin/python bench/install_size_bench.py",
                      "\n".join(body))


if __name__ == "__main__":
    main()

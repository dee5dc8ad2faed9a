"""Build hook: generate the gRPC code from proto/ when the package is built.

The generated modules (frameproof/v1/) are never committed, so `pip install .`,
`pip install git+...`, an sdist and a wheel would otherwise lack them. grpcio-tools is
therefore a build requirement only ([build-system] in pyproject.toml), pinned with the
grpcio runtime: generated code refuses a grpcio older than the generator.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "proto"
GENERATED_PACKAGE = Path("frameproof") / "v1"


def generate_grpc(out_root: Path) -> list[Path]:
    """Run protoc on proto/frameproof/v1/*.proto into out_root/frameproof/v1 (old output first
    deleted); returns the files written."""
    from importlib.resources import files

    from grpc_tools import protoc

    protos = sorted((PROTO_ROOT / GENERATED_PACKAGE).glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT / GENERATED_PACKAGE}")
    target = out_root / GENERATED_PACKAGE
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    (target / "__init__.py").write_text("")
    well_known = str(files("grpc_tools") / "_proto")
    status = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}",
                          f"--python_out={out_root}", f"--pyi_out={out_root}",
                          f"--grpc_python_out={out_root}", *map(str, protos)])
    if status != 0:
        raise RuntimeError(f"grpc_tools.protoc failed with status {status}")
    return sorted(target.iterdir())


class BuildPyWithGrpc(build_py):
    """build_py that also writes the generated gRPC package into the build.

    An editable install imports from the source tree, so there the code is generated in
    place (what `make proto` does).
    """

    def run(self) -> None:
        super().run()
        out_root = ROOT if self.editable_mode else Path(self.build_lib)
        written = generate_grpc(out_root)
        print(f"generated {len(written)} gRPC files in {out_root / GENERATED_PACKAGE}")


setup(cmdclass={"build_py": BuildPyWithGrpc})

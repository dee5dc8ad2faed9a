"""What a node advertises: Blender build, devices, threads, memory."""

from __future__ import annotations

import os
import platform
import socket

from frameproof.v1 import farm_pb2 as pb

ENGINES = ("CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH")


def total_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def capabilities(blender_version: str, threads: int, devices: list[str]) -> pb.NodeCapabilities:
    return pb.NodeCapabilities(
        blender_version=blender_version,
        devices=devices,
        threads=threads or os.cpu_count() or 1,
        memory_bytes=total_memory_bytes(),
        engines=list(ENGINES),
        hostname=socket.gethostname(),
        platform=f"{platform.system()}-{platform.machine()}",
    )

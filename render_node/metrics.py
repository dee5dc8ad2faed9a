"""A render node's Prometheus metrics (`render-node run --metrics HOST:PORT`).

Frames rendered and their render time, leases by how they ended, failures by kind. Served by
prometheus-client's own small HTTP server in a daemon thread: the node has no event loop and
needs nothing but /metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
FRAMES = Counter("frameproof_node_frames_rendered", "Frames this node rendered",
                 registry=REGISTRY)
RENDER_SECONDS = Histogram(
    "frameproof_node_render_seconds", "Blender's time to render one frame", registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
LEASES = Counter("frameproof_node_leases", "Leases by how they ended: delivered, failed, "
                 "withdrawn (the coordinator took them back)", ["outcome"], registry=REGISTRY)
FAILURES = Counter("frameproof_node_failures", "Failed leases by kind: blender, transfer, "
                   "io, scene, rpc", ["kind"], registry=REGISTRY)
RENDERING = Gauge("frameproof_node_rendering", "1 while the node holds a lease",
                  registry=REGISTRY)
# Exported as 0 from the start, so rates and dashboards work from the first scrape.
for _outcome in ("delivered", "failed", "withdrawn"):
    LEASES.labels(_outcome)
for _kind in ("blender", "transfer", "io", "scene", "rpc"):
    FAILURES.labels(_kind)


def failure_kind(error: BaseException) -> str:
    """A small fixed vocabulary for the failures label (never the message: unbounded)."""
    from frameproof.blender.worker import BlenderError
    from frameproof.transfer import TransferError

    if isinstance(error, BlenderError):
        return "blender"
    if isinstance(error, TransferError):
        return "transfer"
    if isinstance(error, OSError):
        return "io"
    if isinstance(error, ValueError):
        return "scene"
    return "rpc"


def serve(listen: str) -> int:
    """Serve /metrics on HOST:PORT (port 0: any) in a daemon thread; returns the port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--metrics {listen!r} is not HOST:PORT")
    server, _thread = start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0",
                                        registry=REGISTRY)
    return int(server.server_address[1])

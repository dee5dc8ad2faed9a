"""What validating every request at the edge costs: `problem()` per message, in-process.

    .venv/bin/python bench/validation_bench.py [--no-write]

Typical requests of each role (a node's 10-frame completion, a verifier's verdict, a
creator's submit, a 1 MiB upload chunk), timed with `timeit` (median of 7 repeats), beside
parsing the same message from its bytes, which the interceptor does anyway.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import median, write_section  # noqa: E402
from coordinator.api.validation import problem  # noqa: E402
from frameproof.v1 import farm_pb2 as pb  # noqa: E402

KEY = "7" * 44
SIGNATURE = "5" * 88
REQUESTS: dict[str, pb.Message] = {
    "CompleteTask, 10 frames": pb.CompleteTaskRequest(node_id=KEY, lease_id="a" * 32, outputs=[
        pb.FrameOutput(frame=f, image=pb.BlobRef(sha256="b" * 64, size=123_456),
                       render_seconds=12.5, blender_version="4.2.0", device="CPU",
                       receipt_signature=SIGNATURE) for f in range(1, 11)]),
    "SubmitVerification, 3 tiles": pb.SubmitVerificationRequest(
        verifier_id=KEY, verification_id="c" * 32, passed=True, reason="identical",
        pixel_sha256="d" * 64, render_seconds=3.0, mode="exact",
        tiles=[pb.TileCheck(x=0, y=0, width=64, height=64, mode="exact", outcome="pass",
                            scores={"ssim": 0.99, "noise_ratio": 1.01}, reason="ok")] * 3),
    "SubmitJob": pb.SubmitJobRequest(scene_id="e" * 64, frames="1-250", name="shot 010",
                                     max_cost_usd=12.0, signed_deposit=b"\x01" * 400,
                                     settings=pb.RenderSettings(engine="CYCLES", samples=64)),
    "UploadChunk, 1 MiB": pb.UploadChunk(blob=pb.BlobRef(sha256="f" * 64, size=1 << 20),
                                         data=b"x" * (1 << 20), crc32=1),
    # A node's batch (render-node --max-tasks 16): 16 leases, their 600-byte images inline,
    # receipts in one tree (4 proof steps each), a log line per frame.
    "DeliverTasks, 16 frames": pb.DeliverTasksRequest(
        node_id=KEY, max_tasks=16,
        images=[pb.BlobData(blob=pb.BlobRef(sha256=f"{f:064x}", size=600), data=b"i" * 600)
                for f in range(16)],
        results=[pb.LeaseResult(lease_id=f"{f:032x}", outputs=[pb.FrameOutput(
            frame=f, image=pb.BlobRef(sha256=f"{f:064x}", size=600), render_seconds=1.0,
            blender_version="5.0.1", device="CPU", receipt_signature=SIGNATURE,
            receipt_proof=("l" + "a" * 64) * 4, log="frame log " * 20)])
            for f in range(16)]),
}


def per_call_us(statement: object, number: int) -> float:
    runs = timeit.repeat(statement, number=number, repeat=7)  # type: ignore[arg-type]
    return median(runs) / number * 1e6


def main() -> None:
    rows = ["| request | validate | parse from bytes |", "|---|---|---|"]
    for name, message in REQUESTS.items():
        assert problem(message) is None, name
        raw = message.SerializeToString()
        cls = type(message)
        check = per_call_us(lambda message=message: problem(message), 2000)
        parse = per_call_us(lambda raw=raw, cls=cls: cls.FromString(raw), 2000)
        rows.append(f"| {name} | {check:.1f} µs | {parse:.1f} µs |")
        print(rows[-1], flush=True)
    body = ("Validation of typical requests at the edge (`coordinator/api/validation.py`), "
            "per call, median of 7 runs:\n\n" + "\n".join(rows))
    if "--no-write" in sys.argv:
        return
    write_section("edge validation", ".venv/bin/python bench/validation_bench.py", body)


if __name__ == "__main__":
    main()

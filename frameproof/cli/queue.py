"""How `status` and `watch` say why rendered frames wait for Proof-of-Render."""

from __future__ import annotations

from frameproof.v1 import farm_pb2 as pb


def verification_line(job: pb.Job) -> str:
    """One line on the job's frames waiting for verification; "" when none wait."""
    if not job.frames.verifying:
        return ""
    queue = job.verification
    parts = []
    if queue.in_progress:
        parts.append(f"{queue.in_progress} being checked now")
    if queue.waiting:
        ahead = ("next in line" if queue.position == 1
                 else f"#{queue.position} in line" if queue.position else "in line")
        parts.append(f"{queue.waiting} waiting for a verifier ({ahead}; verifiers busy with "
                     f"{queue.verifiers_busy} check{'s' if queue.verifiers_busy != 1 else ''})")
    if queue.stuck:
        parts.append(f"{queue.stuck} stuck: {queue.stuck_reason} (the farm's operator sees it "
                     "in render-coordinator doctor)")
    return "verification: " + ("; ".join(parts) or f"{job.frames.verifying} frames checked "
                               "before they count")


def verification_detail(job: pb.Job) -> str:
    """The short form for `watch`'s progress line."""
    if not job.frames.verifying:
        return ""
    queue = job.verification
    if queue.stuck:
        return f", {queue.stuck} verification stuck: {queue.stuck_reason[:60]}"
    detail = f", {job.frames.verifying} verifying"
    if queue.waiting and queue.position > 1:
        detail += f" (#{queue.position} in line, verifiers busy with {queue.verifiers_busy})"
    elif queue.in_progress:
        detail += f" ({queue.in_progress} being checked)"
    return detail

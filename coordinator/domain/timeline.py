"""Where a job's wall time goes: its phases from pack to settlement (no I/O here).

Most phases are read off what the coordinator keeps anyway: the job's creation, each
frame's lease-to-completion time and the node's render seconds (FrameTimingRecord), each
frame's check (VerificationRecord). Only what leaves no other trace is recorded as a phase
(JobPhaseRecord): the creator's pack and upload (sent with SubmitJob), the coordinator's own
inspection, quote and escrow inside SubmitJob, and settlement.

Each phase has the first moment it started, the last moment it ended and its busy seconds:
for per-frame phases the sum over frames (so render's busy time is the nodes' render
seconds, which may exceed its span when nodes render side by side).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

# In the order a job meets them. The creator's: pack, upload, estimate (the coordinator's
# probe renders, as the creator waited for them). Inside SubmitJob: inspection, quote,
# escrow. Then the farm's.
CREATOR_PHASES = ("pack", "upload", "estimate")
SUBMIT_PHASES = ("inspection", "quote", "escrow")
PHASES = (*CREATOR_PHASES, *SUBMIT_PHASES, "queue_wait", "render", "result_upload",
          "verification", "approval", "settlement")


@dataclass(frozen=True)
class Phase:
    name: str
    started_at: float
    ended_at: float  # 0: not over yet
    seconds: float  # busy time (summed over frames for per-frame phases)


@dataclass(frozen=True)
class FrameTiming:
    """A delivered frame: its lease's wall time per frame and completion, the node's claim."""

    frame: int
    node_id: str
    completed_at: float
    wall_seconds: float  # lease start to completion, shared among the lease's frames
    render_seconds: float


@dataclass(frozen=True)
class CheckTiming:
    frame: int
    created_at: float
    finished_at: float | None
    passed: bool | None


@dataclass(frozen=True)
class Timeline:
    phases: list[Phase]
    submitted_at: float  # the first phase's start (the creator's pack when it reported one)
    first_approved_at: float  # 0: none yet
    done_at: float  # the last frame's approval, once every frame is; 0 before


def build(recorded: Iterable[Phase], job_created_at: float, frames_total: int,
          timings: Iterable[FrameTiming], checks: Iterable[CheckTiming]) -> Timeline:
    """The job's phases in PHASES order, from what was recorded and what the farm kept."""
    phases = {phase.name: phase for phase in recorded if phase.name in PHASES}
    timings = list(timings)
    if timings:
        leases: dict[tuple[str, float], list[FrameTiming]] = defaultdict(list)
        for timing in timings:  # frames delivered together share their completion
            leases[(timing.node_id, timing.completed_at)].append(timing)
        starts = {key: key[1] - sum(t.wall_seconds for t in group)
                  for key, group in leases.items()}
        first_lease = min(starts.values())
        last_delivery = max(t.completed_at for t in timings)
        phases["queue_wait"] = Phase("queue_wait", job_created_at, first_lease,
                                     max(0.0, first_lease - job_created_at))
        rendered = sum(t.render_seconds for t in timings)
        phases["render"] = Phase("render", first_lease, last_delivery, rendered)
        overhead = sum(max(0.0, key[1] - starts[key] - sum(t.render_seconds for t in group))
                       for key, group in leases.items())
        phases["result_upload"] = Phase("result_upload", first_lease, last_delivery, overhead)
    checks = list(checks)
    ends = [(c.frame, c.created_at, c.finished_at, c.passed) for c in checks
            if c.finished_at is not None]
    if checks:
        phases["verification"] = Phase(
            "verification", min(c.created_at for c in checks),
            max(end for _, _, end, _ in ends) if ends else 0.0,
            sum(end - start for _, start, end, _ in ends))
    approvals = sorted(end for _, _, end, passed in ends if passed)
    approved_frames = {frame for frame, _, _, passed in ends if passed}
    done_at = approvals[-1] if approvals and len(approved_frames) >= frames_total else 0.0
    if approvals:
        phases["approval"] = Phase("approval", approvals[0], done_at, 0.0)
    if "settlement" in phases and done_at:
        settled = phases["settlement"]
        phases["settlement"] = Phase("settlement", done_at, settled.ended_at,
                                     max(0.0, settled.ended_at - done_at))
    ordered = [phases[name] for name in PHASES if name in phases]
    starts_at = [p.started_at for p in ordered if p.started_at > 0]
    return Timeline(ordered, min(starts_at) if starts_at else job_created_at,
                    approvals[0] if approvals else 0.0, done_at)

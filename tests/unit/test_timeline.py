"""A job's timeline (coordinator/domain/timeline.py): phases from what the farm keeps."""

from __future__ import annotations

import pytest

from coordinator.domain.timeline import PHASES, CheckTiming, FrameTiming, Phase, build


def test_phases_come_in_order_with_spans_and_busy_time() -> None:
    recorded = [Phase("upload", 101.0, 102.0, 1.0), Phase("pack", 100.0, 101.0, 1.0),
                Phase("inspection", 102.5, 103.0, 0.5), Phase("settlement", 0.0, 120.0, 0.0),
                Phase("no such phase", 1.0, 2.0, 1.0)]
    timings = [
        # Two nodes side by side; node b delivered frames 3 and 4 of one lease together.
        FrameTiming(1, "a", completed_at=106.0, wall_seconds=2.0, render_seconds=1.5),
        FrameTiming(2, "a", completed_at=108.0, wall_seconds=2.0, render_seconds=1.5),
        FrameTiming(3, "b", completed_at=109.0, wall_seconds=2.5, render_seconds=2.0),
        FrameTiming(4, "b", completed_at=109.0, wall_seconds=2.5, render_seconds=2.0),
    ]
    checks = [CheckTiming(1, 106.0, 106.5, True), CheckTiming(2, 108.0, 108.4, True),
              CheckTiming(3, 109.0, 109.5, False), CheckTiming(3, 112.0, 112.5, True),
              CheckTiming(4, 109.0, 110.0, True)]
    timeline = build(recorded, 103.5, 4, timings, checks)
    names = [p.name for p in timeline.phases]
    assert names == [n for n in PHASES if n in names], "in the order a job meets them"
    assert "no such phase" not in names
    phases = {p.name: p for p in timeline.phases}
    assert phases["queue_wait"] == Phase("queue_wait", 103.5, 104.0, pytest.approx(0.5))
    render = phases["render"]
    assert (render.started_at, render.ended_at) == (104.0, 109.0)
    assert render.seconds == pytest.approx(7.0), "the nodes' own render seconds, summed"
    # Lease to delivery minus rendering: 0.5 per lease of a, 1.0 for b's two-frame lease.
    assert phases["result_upload"].seconds == pytest.approx(2.0)
    assert phases["verification"].seconds == pytest.approx(0.5 + 0.4 + 0.5 + 0.5 + 1.0)
    assert timeline.first_approved_at == 106.5
    assert timeline.done_at == 112.5, "the last frame's approval, after its re-render"
    assert phases["approval"] == Phase("approval", 106.5, 112.5, 0.0)
    assert phases["settlement"] == Phase("settlement", 112.5, 120.0, pytest.approx(7.5))
    assert timeline.submitted_at == 100.0, "from the creator's pack"


def test_a_job_still_running_has_open_phases() -> None:
    timeline = build([], 50.0, 3, [FrameTiming(1, "a", 55.0, 1.0, 0.8)],
                     [CheckTiming(1, 55.0, 55.2, True), CheckTiming(2, 56.0, None, None)])
    phases = {p.name: p for p in timeline.phases}
    assert timeline.done_at == 0.0 and phases["approval"].ended_at == 0.0
    assert timeline.first_approved_at == 55.2
    assert phases["verification"].ended_at == 55.2
    assert timeline.submitted_at == 50.0, "no creator phases: from the job's creation"
    assert build([], 50.0, 1, [], []).phases == []

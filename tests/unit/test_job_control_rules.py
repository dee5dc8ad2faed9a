"""Who may steer a job and when: each refusal is its own kind (so its own status code) with a
message that names the job."""

from __future__ import annotations

import pytest

from coordinator.domain.control import (
    check_cancellable,
    check_creator,
    check_steerable,
    check_top_up,
)
from coordinator.domain.errors import Forbidden, Refused


def test_only_the_creator_steers_its_job() -> None:
    check_creator("j1", "alice", "alice", "pause it")
    with pytest.raises(Forbidden, match="job j1 belongs to another creator: only its creator "
                                        "may read its logs"):
        check_creator("j1", "alice", "bob", "read its logs")


def test_a_cancelled_job_is_not_steered() -> None:
    check_steerable("j1", cancelled=False)
    with pytest.raises(Refused, match="job j1 is cancelled"):
        check_steerable("j1", cancelled=True)


@pytest.mark.parametrize(("cancelled", "settled", "ended"),
                         [(True, False, "cancelled"), (False, True, "finished"),
                          (True, True, "cancelled")])
def test_an_ended_job_takes_no_top_up(cancelled: bool, settled: bool, ended: str) -> None:
    with pytest.raises(Refused, match=f"job j1 is {ended}: nothing to top up"):
        check_top_up("j1", cancelled=cancelled, settled=settled)


def test_a_live_job_takes_a_top_up() -> None:
    check_top_up("j1", cancelled=False, settled=False)


def test_a_done_job_is_not_cancelled() -> None:
    check_cancellable("j1", done=False)
    with pytest.raises(Refused, match="already done: nothing to cancel"):
        check_cancellable("j1", done=True)

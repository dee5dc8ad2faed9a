"""Who may lease what, and in what order: the scheduling policy, without I/O.

Storage finds the queued tasks a node may take (its rank, the jobs it failed, paused jobs:
see coordinator/storage/leasing.py) in queue order, a short window at a time; the rules
here order that window and say where a new job's tasks join the queue.

- Fair share between creators: a job's tasks join the queue at the creator's own tail or at
  the queue's head, whichever is later, one stride apart (`queue_keys`). Two creators' jobs
  therefore interleave task by task, however large either is, while one creator's jobs still
  run in submission order. The queue stays one index (task.queued_at), so leasing is a scan
  of a few rows.
- Tier priority: among the candidates, a node takes the most demanding tier it may serve
  first (a Tier 1 job waits for trusted nodes only, a Tier 3 job can go to anyone).
- Scene affinity: then a task whose scene the node already holds, so a large scene is not
  downloaded by every node for one frame each.
- Otherwise queue order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

# Queue keys are in seconds (a requeued task goes to the back at the wall clock's now); one
# stride between a job's consecutive tasks keeps them apart from another creator's.
QUEUE_STRIDE = 1e-3
CANDIDATE_WINDOW = 16  # queued tasks looked at per lease: room for affinity, one index scan
MAX_TASKS_PER_CALL = 16  # tasks one LeaseTask may hand out (LeaseTaskRequest.max_tasks)
MAX_FRAMES_PER_CALL = 256  # ... and their frames, past the first task


class Candidate(NamedTuple):
    """A queued task the node may lease, as storage found it."""

    task_id: str
    job_id: str
    creator: str
    scene_id: str
    tier: int  # 1: trusted nodes only ... 3: anyone
    frames: int
    queued_at: float


def queue_keys(tasks: int, now: float, head: float | None, creator_tail: float | None,
               stride: float = QUEUE_STRIDE) -> list[float]:
    """Queue keys for a new job's `tasks` tasks (in frame order).

    `head`: the smallest key of any queued task (None: the queue is empty); `creator_tail`:
    the largest key among the creator's own queued tasks (None: none queued). The job starts
    after the creator's tail, but no earlier than just behind the queue's head: a creator who
    submits behind someone else's 10,000-frame job is served from the next lease on,
    alternating, instead of after it. With nothing queued the job starts at `now`. Keys are
    the queue's own order, not the clock.
    """
    # Half a stride behind the head: the earlier job keeps its turn, then they alternate.
    start = now if head is None else head + stride / 2
    if creator_tail is not None:
        start = max(start, creator_tail + stride)
    return [start + index * stride for index in range(tasks)]


def order_candidates(candidates: Sequence[Candidate], cached_scenes: Iterable[str] = ()
                     ) -> list[Candidate]:
    """The order in which a node should try to claim `candidates` (given in queue order).

    Tier priority first (lowest tier number: the work only the best nodes may do), then
    the scenes the node holds, then queue order.
    """
    cached = frozenset(cached_scenes)
    position = {candidate.task_id: index for index, candidate in enumerate(candidates)}
    return sorted(candidates, key=lambda c: (c.tier, c.scene_id not in cached,
                                             position[c.task_id]))


def fits_node(frames_per_lease: Sequence[int], max_tasks: int, max_frames: int) -> int:
    """How many of the ordered candidates (their frame counts) go into one LeaseTask answer:
    up to `max_tasks` tasks, and past the first task only while the frames stay within
    `max_frames` (a first task larger than that still goes: it cannot be split here)."""
    taken = total = 0
    for frames in frames_per_lease:
        if taken >= max_tasks or (taken and total + frames > max_frames):
            break
        taken += 1
        total += frames
    return taken


def within_job_share(held: int, frames: int, limit: int | None) -> bool:
    """Whether a task of `frames` frames keeps a bounded node's frames of its job (`held`:
    leased, being verified or done) within `limit` (None: no limit). A node's first task of
    a job always fits, so a task larger than the limit is not stuck."""
    return limit is None or held == 0 or held + frames <= limit

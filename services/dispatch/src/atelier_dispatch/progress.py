"""A job's progress from its tasks' provider progress, kept in memory only.

Providers report progress many times a minute; writing each tick to the job's row would turn a
read-mostly table into a write hotspot for a figure that is stale a second later. So the last
fraction each running task reported is remembered here, in this process, and a job's fraction
is worked out from it and from the task rows: a finished task counts whole, a running one by
its own fraction. A dispatch restart (or another replica) only loses ticks, never state: the
next tick of every running task rebuilds the figure.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from atelier_dispatch.repository import TaskRecord

# Task rows whose provider work is over (well or badly): they count whole.
_DONE = frozenset({"completed", "landed", "failed", "cancelled"})


class ProgressTracker:
    """The newest fraction of each running task, for the most recently active jobs."""

    def __init__(self, max_jobs: int = 10_000) -> None:
        self.max_jobs = max_jobs
        # job id → task id → (attempt, fraction)
        self._jobs: OrderedDict[str, dict[str, tuple[int, float]]] = OrderedDict()

    def job_fraction(
        self,
        job_id: str,
        tasks: Iterable[TaskRecord],
        total: int,
        reported: tuple[str, int, float | None],
    ) -> float | None:
        """Remember `reported` = (task id, attempt, fraction) and return the job's fraction
        (None while no task has given a figure and none has finished)."""
        task_id, attempt, fraction = reported
        known = self._jobs.setdefault(job_id, {})
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > self.max_jobs:
            self._jobs.popitem(last=False)
        if fraction is not None:
            known[task_id] = (attempt, fraction)
        done = 0.0
        seen_any = False
        for task in tasks:
            if task.status in _DONE:
                done += task.n
                seen_any = True
            elif (mark := known.get(task.id)) is not None and mark[0] == task.attempt:
                done += task.n * mark[1]
                seen_any = True
        if not seen_any or total <= 0:
            return None
        return min(done / total, 1.0)

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

"""A job's progress from its tasks' provider progress.

Providers report progress many times a minute. The last fraction each running task reported is
remembered here, in this process, and a job's fraction is worked out from it and from the task
rows: a finished task counts whole, a running one by its own fraction. Every tick becomes a
status event; the job's row gets the figure at most once per `store_every_s` per job (and the
first one at once), so `GET` shows it without turning the job table into a write hotspot for a
figure that is stale a second later. A dispatch restart (or another replica) only loses ticks,
never state: the next tick of every running task rebuilds the figure.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from atelier_dispatch.repository import TaskRecord

# Task rows whose provider work is over (well or badly): they count whole.
_DONE = frozenset({"completed", "landed", "failed", "cancelled"})


class ProgressTracker:
    """The newest fraction of each running task, for the most recently active jobs."""

    def __init__(self, max_jobs: int = 10_000, store_every_s: float = 2.0) -> None:
        self.max_jobs = max_jobs
        self.store_every_s = store_every_s
        # job id → task id → (attempt, fraction)
        self._jobs: OrderedDict[str, dict[str, tuple[int, float]]] = OrderedDict()
        # job id → when its figure was last written (monotonic seconds)
        self._stored: OrderedDict[str, float] = OrderedDict()

    def due_to_store(self, job_id: str, now: float) -> bool:
        """Whether the job's figure should be written now; if so, it counts as written."""
        last = self._stored.get(job_id)
        if last is not None and now - last < self.store_every_s:
            return False
        self._stored[job_id] = now
        self._stored.move_to_end(job_id)
        while len(self._stored) > self.max_jobs:
            self._stored.popitem(last=False)
        return True

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
        self._stored.pop(job_id, None)

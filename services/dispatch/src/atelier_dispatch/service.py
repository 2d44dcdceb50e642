"""Dispatch owns the job record and its state machine.

enriching → generating → completed | partial | failed | cancelled

A status event goes out only for a change a person sees (ADR 0018): the job being made (once
its tasks are handed to the provider's queue), an image landed, progress, the outcome. Recording
a new job is silent (the gateway's 202 already said "queued"), and the outcome is published once,
on `jobs.finished.<project>.<job>`, which watchers hear beside `jobs.status.…`.

Every handler is one transaction on the job (serialized per job), then publishes: first the tasks
it created, then the job's status. Publishing after commit can repeat on redelivery; every event id
is derived from what it describes, so JetStream stores a repeat once.

The transactions are plain functions over the repository (Core statements on one blocking
connection), kept by concern in `intake`, `results`, `settlement` and `handover`, and run whole
on a worker thread (`Database.run_sync`, ADR 0010); only the lock and the publishing, here, are
async. Each reads the rows it needs, changes the records in memory and writes them explicitly
(the repository has no unit of work); views and counts come from those same records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from functools import partial
from typing import TypeVar
from weakref import WeakValueDictionary

from sqlmodel import Session

from atelier_contracts.clock import utcnow
from atelier_contracts.envelope import derived_event_id
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import GenerationFailed, GenerationProgress
from atelier_contracts.jobs import (
    FINAL_STATUSES,
    JobEnriched,
    JobListQuery,
    JobRequested,
    JobStatus,
    JobStatusChanged,
    JobView,
)
from atelier_contracts.media import MediaLanded
from atelier_contracts.subjects import job_status
from atelier_database import Database
from atelier_dispatch import intake, results, settlement
from atelier_dispatch.admission import UNLIMITED_BATCH
from atelier_dispatch.handover import admit
from atelier_dispatch.outbox import Outbox, Publish, Txn
from atelier_dispatch.progress import ProgressTracker
from atelier_dispatch.repository import JobRepository, TaskRecord
from atelier_dispatch.views import job_view, queue_of

log = logging.getLogger("atelier.dispatch")

T = TypeVar("T")


async def _nothing_to_mark(_: str) -> None:
    return None


class DispatchService:
    def __init__(
        self,
        db: Database,
        publish: Publish,
        *,
        deadline_slack_s: float = 300.0,
        max_attempts: int = 3,
        retry_base_s: float = 2.0,
        mark_cancelled: Callable[[str], Awaitable[None]] = _nothing_to_mark,
        budgets: Mapping[str, int] | None = None,
    ):
        self.db = db
        # Calls at once per provider across every worker (ADR 0020); no entry: no limit. The
        # mapping is kept current by the budget watch (`ProviderBudgets.known`).
        self.budgets: Mapping[str, int] = budgets if budgets is not None else {}
        self.publish = publish
        self.deadline_slack_s = deadline_slack_s
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.mark_cancelled = mark_cancelled
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()
        self._progress = ProgressTracker()

    # -- plumbing ------------------------------------------------------------------------------

    def _lock_of(self, job_id: str) -> asyncio.Lock:
        lock = self._locks.get(job_id)
        if lock is None:
            lock = self._locks[job_id] = asyncio.Lock()
        return lock

    async def _in_job_transaction(self, job_id: str, work: Callable[[Txn], T]) -> T:
        """Run `work` as one transaction on the job (one at a time per job in this process; row
        locks across replicas on PostgreSQL), then publish what it put in the outbox."""
        async with self._lock_of(job_id):
            return await self._commit_then_publish(work)

    async def _commit_then_publish(self, work: Callable[[Txn], T]) -> T:
        outbox = Outbox()
        lock_rows = not self.db.is_sqlite

        def transaction(session: Session) -> T:
            return work(Txn(self, JobRepository(session, lock_rows=lock_rows), outbox))

        result = await self.db.run_sync(transaction)
        for event, subject in outbox.events:
            await self.publish(event, subject)
        return result

    async def _read(self, work: Callable[[JobRepository], T]) -> T:
        """A read-only transaction: no lock, nothing published."""
        return await self.db.run_sync(lambda session: work(JobRepository(session, lock_rows=False)))

    # -- event handlers ------------------------------------------------------------------------

    async def record_request(self, request: JobRequested) -> None:
        """jobs.requested: the job exists from now on; context is enriching it."""
        await self._in_job_transaction(request.job_id, partial(intake.record_request, request))

    async def dispatch_enriched(self, event: JobEnriched) -> None:
        """jobs.enriched: split into tasks and hand them to the provider's queue."""
        await self._in_job_transaction(event.job_id, partial(intake.dispatch_enriched, event))

    async def task_progress(self, event: GenerationProgress) -> None:
        """gen.progress: a status event with how far the job is. Nothing is written (see
        progress.py); a redelivered event republishes the same event id, stored once."""

        def read(repo: JobRepository) -> tuple[JobView, list[TaskRecord], TaskRecord] | None:
            job = repo.get_job(event.job_id)
            if job is None or JobStatus(job.status) in FINAL_STATUSES:
                return None
            tasks = repo.tasks_of(job.id)
            task = results.find_task(tasks, event.task_id)
            if task is None or task.status not in ("pending", "started"):
                return None  # the task already ended: a late tick would only mislead
            if task.attempt != event.attempt:
                return None  # a tick of an attempt we moved past
            return job_view(repo, job), tasks, task

        async with self._lock_of(event.job_id):  # after any transition in flight here
            found = await self._read(read)
            if found is None:
                return
            view, tasks, task = found
            fraction = self._progress.job_fraction(
                view.id, tasks, view.progress.total, (task.id, task.attempt, event.fraction)
            )
            detail = event.detail
            if detail and len(tasks) > 1:
                detail = f"image {task.first_index + 1} of {view.progress.total}: {detail}"[:200]
            progress = view.progress.model_copy(update={"fraction": fraction, "detail": detail})
            if self._progress.due_to_store(view.id, time.monotonic()):
                await self.db.run_sync(
                    lambda session: JobRepository(session, lock_rows=False).save_progress(
                        view.id, fraction, detail
                    )
                )
            # Newer than the stored state, so a client ordering updates by time shows it.
            updated_at = max(utcnow(), view.updated_at)
            await self.publish(
                JobStatusChanged(
                    event_id=derived_event_id(event.event_id, "status"),
                    job=view.with_short_texts().model_copy(
                        update={"progress": progress, "updated_at": updated_at}
                    ),
                ),
                job_status(view.project, view.id),
            )

    async def task_failed(self, event: GenerationFailed) -> None:
        await self._in_job_transaction(event.task.job_id, partial(results.task_failed, event))

    async def images_landed(self, event: MediaLanded) -> None:
        await self._in_job_transaction(event.job_id, partial(results.images_landed, event))

    async def cancel(self, job_id: str) -> JobView | None:
        """The writer cancelled: end the job now; workers and media see the mark and stop."""
        async with self._lock_of(job_id):
            active = await self._read(partial(_is_active, job_id))
            if active:
                # Marked before the commit: a worker that checks after this sees it, and if the
                # commit fails the mark only stops work on a job the writer wanted stopped.
                await self.mark_cancelled(job_id)
        return await self._in_job_transaction(job_id, partial(settlement.cancel_job, job_id))

    async def fail_job(self, job_id: str, error: ErrorInfo) -> None:
        """End a job now: images that landed stay; everything unfinished fails with `error`."""
        await self._in_job_transaction(job_id, partial(settlement.fail_job, job_id, error))

    # -- the sweeper ---------------------------------------------------------------------------

    async def end_overdue_jobs(self, now: datetime | None = None) -> int:
        """The sweeper: a job past its deadline ends with a reason instead of waiting forever."""
        at = now or utcnow()
        ids = await self._read(lambda repo: repo.overdue_job_ids(at))
        for job_id in ids:
            await self.fail_job(job_id, ErrorInfo.of(ErrorClass.TIMEOUT, "job passed its deadline"))
            log.warning("job passed its deadline", extra={"job_id": job_id})
        return len(ids)

    async def send_due_retries(self, now: datetime | None = None) -> int:
        """Part of the sweeper: hand tasks whose backoff ran out back to their provider."""
        at = now or utcnow()
        due = await self._read(lambda repo: [(t.job_id, t.id) for t in repo.due_retries(at)])
        for job_id, task_id in due:
            await self._in_job_transaction(job_id, partial(results.resend_task, job_id, task_id))
        return len(due)

    async def admit_waiting(self, provider: str | None = None) -> int:
        """Part of the sweeper, and of a budget change: admit what waits for `provider` (every
        provider when None) in a transaction of its own. A safety net: admission normally
        happens in the job transactions that free a call."""
        if provider is None:
            providers = await self._read(lambda repo: repo.providers_with_waiting_tasks())
        else:
            providers = [provider]
        admitted = 0
        for name in providers:
            while True:  # a provider without a budget takes its waiting tasks a batch at a time
                batch = await self._commit_then_publish(partial(_admit, name))
                admitted += batch
                if name in self.budgets or batch < UNLIMITED_BATCH:
                    break
        return admitted

    # -- queries -------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobView | None:
        def read(repo: JobRepository) -> JobView | None:
            job = repo.get_job(job_id)
            if job is None:
                return None
            view = job_view(repo, job)
            view.progress.queue = queue_of(self.budgets, repo, job)
            return view

        return await self._read(read)

    async def list_jobs(self, query: JobListQuery) -> list[JobView]:
        def read(repo: JobRepository) -> list[JobView]:
            rows = repo.list_jobs(query.project, active_only=query.active_only, limit=query.limit)
            return [job_view(repo, job).with_short_texts() for job in rows]

        return await self._read(read)


def _admit(provider: str, txn: Txn) -> int:
    return admit(txn, provider)


def _is_active(job_id: str, repo: JobRepository) -> bool:
    job = repo.get_job(job_id)
    return job is not None and JobStatus(job.status) not in FINAL_STATUSES

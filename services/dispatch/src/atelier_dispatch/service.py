"""Dispatch owns the job record and its state machine.

queued → enriching → dispatched → generating → landing → completed | partial | failed

Every handler is one transaction on the job (serialized per job), then publishes: first the tasks
it created, then the job's status. Publishing after commit can repeat on redelivery; every event id
is derived from what it describes, so JetStream stores a repeat once.

The transactions are plain functions over a blocking session, run whole on a worker thread
(`Database.run_sync`, ADR 0010); only the lock and the publishing are async.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid5
from weakref import WeakValueDictionary

from sqlmodel import Session

from atelier_contracts.envelope import Event, derived_event_id
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import (
    GenerationCompleted,
    GenerationFailed,
    GenerationProgress,
    GenerationStarted,
    GenerationTask,
)
from atelier_contracts.jobs import (
    FINAL_STATUSES,
    AssembledPrompt,
    JobEnriched,
    JobImage,
    JobListQuery,
    JobProgress,
    JobRequested,
    JobStatus,
    JobStatusChanged,
    JobView,
    SentReferenceImage,
)
from atelier_contracts.media import MediaLanded
from atelier_contracts.providers import images_per_call
from atelier_contracts.subjects import gen_requested, job_finished, job_status
from atelier_database import Database
from atelier_dispatch.progress import ProgressTracker
from atelier_dispatch.repository import JobImageRow, JobRepository, JobRow, TaskRow, as_utc
from atelier_telemetry import observe_stage_latency, record_generation_cost

log = logging.getLogger("atelier.dispatch")

Publish = Callable[[Event, str], Awaitable[None]]
T = TypeVar("T")

_BEFORE_DISPATCH = {JobStatus.QUEUED, JobStatus.ENRICHING}


def utcnow() -> datetime:
    return datetime.now(UTC)


def task_seed(requested: object, task_id: str, first_index: int) -> int:
    """The writer's seed advanced per image, or one derived from the task id: every image of a
    job differs, and a redelivered or retried task draws the same image again."""
    if isinstance(requested, int) and not isinstance(requested, bool):
        return requested + first_index
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:4], "big") % 2**31


def split_into_tasks(count: int, per_call: int) -> list[tuple[int, int]]:
    """`(first_index, n)` for each provider call a job of `count` images needs."""
    return [(first, min(per_call, count - first)) for first in range(0, count, per_call)]


@dataclass
class _Outbox:
    """Events to publish once the transaction committed."""

    events: list[tuple[Event, str]]

    def add(self, event: Event, subject: str) -> None:
        self.events.append((event, subject))


_DONE_TASK_STATUSES = ("landed", "failed", "cancelled")


def retry_delay_s(attempt: int, base_s: float, hint_s: float | None) -> float:
    """Exponential backoff with jitter, never sooner than the provider asked."""
    backoff: float = min(60.0, base_s * 2 ** (attempt - 1)) * random.uniform(0.75, 1.25)
    return max(backoff, hint_s or 0.0)


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
    ):
        self.db = db
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

    async def _in_job_transaction(
        self, job_id: str, work: Callable[[JobRepository, _Outbox], None]
    ) -> None:
        """Run `work` as one transaction on the job (one at a time per job in this process; row
        locks across replicas on PostgreSQL), then publish what it put in the outbox."""
        outbox = _Outbox([])
        lock_rows = not self.db.is_sqlite

        def transaction(session: Session) -> None:
            work(JobRepository(session, lock_rows=lock_rows), outbox)

        async with self._lock_of(job_id):
            await self.db.run_sync(transaction)
            for event, subject in outbox.events:
                await self.publish(event, subject)

    async def _read(self, work: Callable[[JobRepository], T]) -> T:
        """A read-only transaction: no lock, nothing published."""
        return await self.db.run_sync(lambda session: work(JobRepository(session, lock_rows=False)))

    def _set_status(
        self, repo: JobRepository, outbox: _Outbox, job: JobRow, status: JobStatus
    ) -> None:
        job.status = status.value
        job.updated_at = utcnow()
        repo.add(job)
        self._announce(repo, outbox, job)

    def _announce(self, repo: JobRepository, outbox: _Outbox, job: JobRow) -> None:
        view = self._view(repo, job)
        key = f"status:{view.status}:{view.progress.landed}:{view.progress.failed}"
        event_id = derived_event_id(_job_uuid(job), key)
        outbox.add(JobStatusChanged(event_id=event_id, job=view), job_status(job.project, job.id))
        if view.status in FINAL_STATUSES:
            # Once more for the services that only act on outcomes (quotas, clean-up).
            finished = JobStatusChanged(event_id=derived_event_id(event_id, "finished"), job=view)
            outbox.add(finished, job_finished(job.project, job.id))

    def _view(self, repo: JobRepository, job: JobRow) -> JobView:
        request = JobRequested.model_validate(job.request)
        assembled = AssembledPrompt.model_validate(job.assembled) if job.assembled else None
        # `landed` is recounted from the image rows whenever rows are added (`_settle`).
        images = repo.images_of(job.id) if job.landed else []
        return JobView(
            id=job.id,
            project=job.project,
            user_id=job.user_id,
            profile_id=request.profile.id,
            profile_name=request.profile.name,
            provider=request.profile.provider,
            model=request.profile.model,
            status=JobStatus(job.status),
            prompt=request.prompt,
            assembled_prompt=assembled.prompt if assembled else None,
            assembly_notes=assembled.notes if assembled else [],
            reference_images=[
                SentReferenceImage.of(ref)
                for ref in (assembled.reference_images if assembled else [])
            ],
            excluded_images=assembled.excluded_images if assembled else [],
            size=request.size,
            count=request.count,
            options=request.options,
            target=request.target,
            progress=JobProgress(total=request.count, landed=job.landed, failed=job.failed),
            images=[
                JobImage(
                    media_id=i.media_id,
                    index=i.index,
                    width=i.width,
                    height=i.height,
                    content_type=i.content_type,
                )
                for i in images
            ],
            error=ErrorInfo.model_validate(job.error) if job.error else None,
            created_at=as_utc(job.created_at),
            updated_at=as_utc(job.updated_at),
        )

    def _new_job(self, request: JobRequested) -> JobRow:
        now = utcnow()
        return JobRow(
            id=request.job_id,
            project=request.project,
            user_id=request.user_id,
            status=JobStatus.QUEUED.value,
            request=request.model_dump(mode="json"),
            created_at=now,
            updated_at=now,
            deadline_at=now
            + timedelta(seconds=request.profile.timeout_s * 3 + self.deadline_slack_s),
        )

    def _task_event(self, job: JobRow, task: TaskRow) -> GenerationTask:
        request = JobRequested.model_validate(job.request)
        assembled = AssembledPrompt.model_validate(job.assembled)
        seed = request.options.get("seed")
        options = {k: v for k, v in request.options.items() if k not in ("seed", "negative_prompt")}
        return GenerationTask(
            event_id=derived_event_id(_job_uuid(job), f"task:{task.id}:{task.attempt}"),
            task_id=task.id,
            job_id=job.id,
            user_id=job.user_id,
            project=job.project,
            profile=request.profile,
            prompt=assembled.prompt,
            negative_prompt=assembled.negative_prompt,
            size=request.size,
            n=task.n,
            first_index=task.first_index,
            options=options,
            seed=task_seed(seed, task.id, task.first_index),
            reference_images=assembled.reference_images,
            deadline_at=as_utc(job.deadline_at or utcnow()),
            attempt=task.attempt,
        )

    # -- event handlers ------------------------------------------------------------------------

    async def record_request(self, request: JobRequested) -> None:
        """jobs.requested: the job exists from now on; context is enriching it."""

        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(request.job_id, for_update=True)
            if job is None:
                # Queued and handed to context in one step: one status event, not two.
                job = self._new_job(request)
            if JobStatus(job.status) == JobStatus.QUEUED:
                self._set_status(repo, outbox, job, JobStatus.ENRICHING)

        await self._in_job_transaction(request.job_id, work)

    async def dispatch_enriched(self, event: JobEnriched) -> None:
        """jobs.enriched: split into tasks and hand them to the provider's queue."""
        request = event.request

        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(request.job_id, for_update=True)
            if job is None:  # enriched overtook requested: fine, it carries the request
                job = self._new_job(request)
                repo.add(job)
            status = JobStatus(job.status)
            if status in FINAL_STATUSES:
                return
            if status in _BEFORE_DISPATCH:
                job.assembled = event.assembled.model_dump(mode="json")
                per_call = images_per_call(request.profile.provider, request.profile.model)
                for k, (first, n) in enumerate(split_into_tasks(request.count, per_call)):
                    repo.add(
                        TaskRow(
                            id=f"{job.id}.{k}",
                            job_id=job.id,
                            first_index=first,
                            n=n,
                            status="pending",
                        )
                    )
                repo.session.flush()
                self._set_status(repo, outbox, job, JobStatus.DISPATCHED)
            # Also on a redelivery: re-send tasks not yet picked up (same ids: deduplicated).
            subject = gen_requested(request.profile.provider)
            pending = [t for t in repo.tasks_of(job.id) if t.status == "pending"]
            # Tasks go out before the status that announces them.
            outbox.events[0:0] = [(self._task_event(job, t), subject) for t in pending]

        await self._in_job_transaction(request.job_id, work)

    async def task_started(self, event: GenerationStarted) -> None:
        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(event.job_id, for_update=True)
            task = repo.get_task(event.task_id)
            if job is None or task is None or JobStatus(job.status) in FINAL_STATUSES:
                return
            if task.status == "pending":
                task.status = "started"
                repo.add(task)
            if JobStatus(job.status) == JobStatus.DISPATCHED:
                self._set_status(repo, outbox, job, JobStatus.GENERATING)

        await self._in_job_transaction(event.job_id, work)

    async def task_progress(self, event: GenerationProgress) -> None:
        """gen.progress: a status event with how far the job is. Nothing is written (see
        progress.py); a redelivered event republishes the same event id, stored once."""

        def read(repo: JobRepository) -> tuple[JobView, list[TaskRow], TaskRow] | None:
            job = repo.get_job(event.job_id)
            if job is None or JobStatus(job.status) in FINAL_STATUSES:
                return None
            tasks = repo.tasks_of(job.id)
            task = next((t for t in tasks if t.id == event.task_id), None)
            if task is None or task.status not in ("pending", "started"):
                return None  # the task already ended: a late tick would only mislead
            if task.attempt != event.attempt:
                return None  # a tick of an attempt we moved past
            return self._view(repo, job), tasks, task

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
            # Newer than the stored state, so a client ordering updates by time shows it.
            updated_at = max(utcnow(), view.updated_at)
            await self.publish(
                JobStatusChanged(
                    event_id=derived_event_id(event.event_id, "status"),
                    job=view.model_copy(update={"progress": progress, "updated_at": updated_at}),
                ),
                job_status(view.project, view.id),
            )

    async def task_completed(self, event: GenerationCompleted) -> None:
        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(event.task.job_id, for_update=True)
            task = repo.get_task(event.task.task_id)
            if job is None or task is None or JobStatus(job.status) in FINAL_STATUSES:
                return
            if task.status in ("pending", "started", "retry_wait"):
                task.status = "completed"
                task.next_attempt_at = None
                repo.add(task)
            if JobStatus(job.status) in (JobStatus.DISPATCHED, JobStatus.GENERATING):
                self._set_status(repo, outbox, job, JobStatus.LANDING)

        await self._in_job_transaction(event.task.job_id, work)

    async def task_failed(self, event: GenerationFailed) -> None:
        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(event.task.job_id, for_update=True)
            task = repo.get_task(event.task.task_id)
            if job is None or task is None or JobStatus(job.status) in FINAL_STATUSES:
                return
            if task.status in _DONE_TASK_STATUSES or event.task.attempt < task.attempt:
                return  # already settled, or a stale report of an attempt we moved past
            task.error = event.error.model_dump(mode="json")
            retry_at = self._retry_time(job, task, event.error)
            if retry_at is not None:
                task.status = "retry_wait"
                task.attempt += 1
                task.next_attempt_at = retry_at
                repo.add(task)
                log.info(
                    "task will be retried",
                    extra={
                        "job_id": job.id,
                        "task_id": task.id,
                        "attempt": task.attempt,
                        "class": event.error.error_class,
                        "at": retry_at.isoformat(),
                    },
                )
                return
            task.status = "failed"
            repo.add(task)
            self._settle(repo, outbox, job)

        await self._in_job_transaction(event.task.job_id, work)

    def _retry_time(self, job: JobRow, task: TaskRow, error: ErrorInfo) -> datetime | None:
        """When to try a failed task again, or None when it must not be retried."""
        request = JobRequested.model_validate(job.request)
        limit = int(request.profile.provider_config.get("max_attempts", self.max_attempts))
        if error.error_class == ErrorClass.NO_IMAGE_RETURNED:
            limit = min(limit, 2)  # at most once more: an empty answer tends to repeat
        if not error.retryable or task.attempt >= limit:
            return None
        at = utcnow() + timedelta(
            seconds=retry_delay_s(task.attempt, self.retry_base_s, error.retry_after_s)
        )
        if job.deadline_at is not None and at >= as_utc(job.deadline_at):
            return None
        return at

    async def send_due_retries(self, now: datetime | None = None) -> int:
        """Part of the sweeper: hand tasks whose backoff ran out back to their provider."""
        at = now or utcnow()
        due = await self._read(lambda repo: [(t.job_id, t.id) for t in repo.due_retries(at)])
        for job_id, task_id in due:
            await self._in_job_transaction(job_id, partial(self._resend_task, job_id, task_id))
        return len(due)

    def _resend_task(self, job_id: str, task_id: str, repo: JobRepository, outbox: _Outbox) -> None:
        job = repo.get_job(job_id, for_update=True)
        task = repo.get_task(task_id)
        if job is None or task is None or task.status != "retry_wait":
            return
        if JobStatus(job.status) in FINAL_STATUSES:
            return
        task.status = "pending"
        task.next_attempt_at = None
        repo.add(task)
        provider = JobRequested.model_validate(job.request).profile.provider
        outbox.add(self._task_event(job, task), gen_requested(provider))

    async def cancel(self, job_id: str) -> JobView | None:
        """The writer cancelled: end the job now; workers and media see the mark and stop."""
        async with self._lock_of(job_id):
            active = await self._read(partial(_is_active, job_id))
            if active:
                # Marked before the commit: a worker that checks after this sees it, and if the
                # commit fails the mark only stops work on a job the writer wanted stopped.
                await self.mark_cancelled(job_id)
        views: list[JobView] = []

        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(job_id, for_update=True)
            if job is None:
                return
            if JobStatus(job.status) not in FINAL_STATUSES:
                for task in repo.tasks_of(job_id):
                    if task.status not in _DONE_TASK_STATUSES:
                        task.status = "cancelled"
                        task.next_attempt_at = None
                        repo.add(task)
                job.error = ErrorInfo.of(ErrorClass.CANCELLED).model_dump(mode="json")
                job.deadline_at = None
                self._set_status(repo, outbox, job, JobStatus.CANCELLED)
            views.append(self._view(repo, job))

        await self._in_job_transaction(job_id, work)
        return views[0] if views else None

    async def images_landed(self, event: MediaLanded) -> None:
        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(event.job_id, for_update=True)
            task = repo.get_task(event.task_id)
            if job is None or task is None:
                return
            for item in event.media:
                if not repo.image_exists(item.id):
                    repo.add(
                        JobImageRow(
                            media_id=item.id,
                            job_id=job.id,
                            task_id=task.id,
                            index=item.index,
                            width=item.width,
                            height=item.height,
                            content_type=item.content_type,
                        )
                    )
            if task.status != "landed":
                task.status = "landed"
                repo.add(task)
            repo.session.flush()
            if JobStatus(job.status) not in FINAL_STATUSES:
                self._settle(repo, outbox, job)

        await self._in_job_transaction(event.job_id, work)

    async def end_overdue_jobs(self, now: datetime | None = None) -> int:
        """The sweeper: a job past its deadline ends with a reason instead of waiting forever."""
        at = now or utcnow()
        ids = await self._read(lambda repo: repo.overdue_job_ids(at))
        for job_id in ids:
            await self.fail_job(job_id, ErrorInfo.of(ErrorClass.TIMEOUT, "job passed its deadline"))
            log.warning("job passed its deadline", extra={"job_id": job_id})
        return len(ids)

    async def fail_job(self, job_id: str, error: ErrorInfo) -> None:
        """End a job now: images that landed stay; everything unfinished fails with `error`."""

        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(job_id, for_update=True)
            if job is None or JobStatus(job.status) in FINAL_STATUSES:
                return
            tasks = repo.tasks_of(job_id)
            for task in tasks:
                if task.status not in _DONE_TASK_STATUSES:
                    task.status = "failed"
                    task.error = error.model_dump(mode="json")
                    repo.add(task)
            if not tasks:
                job.error = error.model_dump(mode="json")
            repo.session.flush()
            self._settle(repo, outbox, job, force_final=True)

        await self._in_job_transaction(job_id, work)

    def _settle(
        self, repo: JobRepository, outbox: _Outbox, job: JobRow, *, force_final: bool = False
    ) -> None:
        """Recount from the rows (never increments: redeliveries can't double count) and end the
        job once every task is landed or failed."""
        tasks = repo.tasks_of(job.id)
        images = repo.images_of(job.id)
        landed_per_task: dict[str, int] = {}
        for image in images:
            landed_per_task[image.task_id] = landed_per_task.get(image.task_id, 0) + 1
        landed = len(images)
        failed = 0
        first_error: dict[str, Any] | None = None
        for task in tasks:
            if task.status in ("failed", "cancelled"):
                failed += task.n - landed_per_task.get(task.id, 0)
                first_error = first_error or task.error
            elif task.status == "landed":
                failed += max(0, task.n - landed_per_task.get(task.id, 0))
        if failed and first_error is None:
            first_error = ErrorInfo.of(ErrorClass.NO_IMAGE_RETURNED).model_dump(mode="json")
        job.landed, job.failed = landed, failed
        total = JobRequested.model_validate(job.request).count
        done = bool(tasks) and all(t.status in _DONE_TASK_STATUSES for t in tasks)
        if not (done or force_final):
            if JobStatus(job.status) in FINAL_STATUSES:
                return
            job.updated_at = utcnow()
            repo.add(job)
            self._announce(repo, outbox, job)
            return
        if landed >= total:
            final = JobStatus.COMPLETED
        elif landed > 0:
            final = JobStatus.PARTIAL
        else:
            final = JobStatus.FAILED
        if final != JobStatus.COMPLETED:
            job.error = job.error or first_error
        job.deadline_at = None
        profile = JobRequested.model_validate(job.request).profile
        record_generation_cost(profile.provider, profile.model, landed * profile.credit_cost)
        observe_stage_latency(
            "submitted_to_final", (utcnow() - as_utc(job.created_at)).total_seconds()
        )
        self._set_status(repo, outbox, job, final)

    # -- queries -------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobView | None:
        def read(repo: JobRepository) -> JobView | None:
            job = repo.get_job(job_id)
            return self._view(repo, job) if job else None

        return await self._read(read)

    async def list_jobs(self, query: JobListQuery) -> list[JobView]:
        def read(repo: JobRepository) -> list[JobView]:
            rows = repo.list_jobs(query.project, active_only=query.active_only, limit=query.limit)
            return [self._view(repo, job) for job in rows]

        return await self._read(read)


def _is_active(job_id: str, repo: JobRepository) -> bool:
    job = repo.get_job(job_id)
    return job is not None and JobStatus(job.status) not in FINAL_STATUSES


def _job_uuid(job: JobRow) -> str:
    """Job ids are UUIDs made by the gateway; other ids still get a stable namespace."""
    try:
        return str(UUID(job.id))
    except ValueError:
        return str(uuid5(NAMESPACE_URL, f"atelier:job:{job.id}"))

"""Dispatch owns the job record and its state machine.

queued → enriching → dispatched → generating → landing → completed | partial | failed

Every handler is one transaction on the job (serialized per job), then publishes: first the tasks
it created, then the job's status. Publishing after commit can repeat on redelivery; every event id
is derived from what it describes, so JetStream stores a repeat once.

The transactions are plain functions over the repository (Core statements on one blocking
connection), run whole on a worker thread (`Database.run_sync`, ADR 0010); only the lock and the
publishing are async.
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
from atelier_dispatch.repository import (
    ImageRecord,
    JobRecord,
    JobRepository,
    TaskRecord,
    as_utc,
)
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
        self,
        repo: JobRepository,
        outbox: _Outbox,
        job: JobRecord,
        request: JobRequested,
        status: JobStatus,
        images: list[ImageRecord] | None = None,
    ) -> JobView:
        """Move the job (in memory: the caller writes it) and announce it."""
        job.status = status.value
        job.updated_at = utcnow()
        return self._announce(repo, outbox, job, request, images)

    def _announce(
        self,
        repo: JobRepository,
        outbox: _Outbox,
        job: JobRecord,
        request: JobRequested,
        images: list[ImageRecord] | None = None,
    ) -> JobView:
        view = self._view(repo, job, request, images)
        key = f"status:{view.status}:{view.progress.landed}:{view.progress.failed}"
        event_id = derived_event_id(_job_uuid(job), key)
        outbox.add(JobStatusChanged(event_id=event_id, job=view), job_status(job.project, job.id))
        if view.status in FINAL_STATUSES:
            # Once more for the services that only act on outcomes (quotas, clean-up).
            finished = JobStatusChanged(event_id=derived_event_id(event_id, "finished"), job=view)
            outbox.add(finished, job_finished(job.project, job.id))
        return view

    def _view(
        self,
        repo: JobRepository,
        job: JobRecord,
        request: JobRequested,
        images: list[ImageRecord] | None = None,
    ) -> JobView:
        """The job as clients see it. `request` is `job.request` parsed (once per transaction);
        `images`, when the caller already holds the job's image rows, saves reading them."""
        assembled = AssembledPrompt.model_validate(job.assembled) if job.assembled else None
        if images is None:
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
            request_digest=request.request_digest,
        )

    def _new_job(self, request: JobRequested) -> JobRecord:
        now = utcnow()
        return JobRecord(
            id=request.job_id,
            project=request.project,
            user_id=request.user_id,
            status=JobStatus.QUEUED.value,
            request=request.model_dump(mode="json"),
            assembled=None,
            error=None,
            landed=0,
            failed=0,
            created_at=now,
            updated_at=now,
            deadline_at=now
            + timedelta(seconds=request.profile.timeout_s * 3 + self.deadline_slack_s),
        )

    def _task_event(
        self,
        job: JobRecord,
        request: JobRequested,
        assembled: AssembledPrompt,
        task: TaskRecord,
    ) -> GenerationTask:
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
    # Each reads the rows it needs, changes the records in memory and writes them explicitly
    # (the repository has no unit of work); views and counts come from those same records.

    async def record_request(self, request: JobRequested) -> None:
        """jobs.requested: the job exists from now on; context is enriching it."""

        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(request.job_id, for_update=True)
            if job is None:
                # Queued and handed to context in one step: one status event, not two.
                job = self._new_job(request)
                self._set_status(repo, outbox, job, _request_of(job), JobStatus.ENRICHING)
                repo.insert_job(job)
            elif JobStatus(job.status) == JobStatus.QUEUED:
                self._set_status(repo, outbox, job, _request_of(job), JobStatus.ENRICHING)
                repo.save_job(job)

        await self._in_job_transaction(request.job_id, work)

    async def dispatch_enriched(self, event: JobEnriched) -> None:
        """jobs.enriched: split into tasks and hand them to the provider's queue."""
        request = event.request

        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(request.job_id, for_update=True)
            is_new = job is None
            if job is None:  # enriched overtook requested: fine, it carries the request
                job = self._new_job(request)
            status = JobStatus(job.status)
            if status in FINAL_STATUSES:
                return
            stored_request = _request_of(job)
            if status in _BEFORE_DISPATCH:
                job.assembled = event.assembled.model_dump(mode="json")
                per_call = images_per_call(request.profile.provider, request.profile.model)
                # A job before dispatch has no tasks yet: these are all of them, all pending.
                pending = [
                    TaskRecord(
                        id=f"{job.id}.{k}", job_id=job.id, first_index=first, n=n, status="pending"
                    )
                    for k, (first, n) in enumerate(split_into_tasks(request.count, per_call))
                ]
                self._set_status(repo, outbox, job, stored_request, JobStatus.DISPATCHED)
                if is_new:
                    repo.insert_job(job)
                else:
                    repo.save_job(job)
                repo.insert_tasks(pending)
            else:
                # A redelivery: re-send tasks not yet picked up (same ids: deduplicated).
                pending = [t for t in repo.tasks_of(job.id) if t.status == "pending"]
            subject = gen_requested(request.profile.provider)
            assembled = AssembledPrompt.model_validate(job.assembled)
            # Tasks go out before the status that announces them.
            outbox.events[0:0] = [
                (self._task_event(job, stored_request, assembled, t), subject) for t in pending
            ]

        await self._in_job_transaction(request.job_id, work)

    async def task_started(self, event: GenerationStarted) -> None:
        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(event.job_id, for_update=True)
            if job is None or JobStatus(job.status) in FINAL_STATUSES:
                return
            task = repo.get_task(event.task_id)
            if task is None:
                return
            if task.status == "pending":
                task.status = "started"
                repo.save_tasks([task])
            if JobStatus(job.status) == JobStatus.DISPATCHED:
                self._set_status(repo, outbox, job, _request_of(job), JobStatus.GENERATING)
                repo.save_job(job)

        await self._in_job_transaction(event.job_id, work)

    async def task_progress(self, event: GenerationProgress) -> None:
        """gen.progress: a status event with how far the job is. Nothing is written (see
        progress.py); a redelivered event republishes the same event id, stored once."""

        def read(repo: JobRepository) -> tuple[JobView, list[TaskRecord], TaskRecord] | None:
            job = repo.get_job(event.job_id)
            if job is None or JobStatus(job.status) in FINAL_STATUSES:
                return None
            tasks = repo.tasks_of(job.id)
            task = _find_task(tasks, event.task_id)
            if task is None or task.status not in ("pending", "started"):
                return None  # the task already ended: a late tick would only mislead
            if task.attempt != event.attempt:
                return None  # a tick of an attempt we moved past
            return self._view(repo, job, _request_of(job)), tasks, task

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
            if job is None or JobStatus(job.status) in FINAL_STATUSES:
                return
            task = repo.get_task(event.task.task_id)
            if task is None:
                return
            if task.status in ("pending", "started", "retry_wait"):
                task.status = "completed"
                task.next_attempt_at = None
                repo.save_tasks([task])
            if JobStatus(job.status) in (JobStatus.DISPATCHED, JobStatus.GENERATING):
                self._set_status(repo, outbox, job, _request_of(job), JobStatus.LANDING)
                repo.save_job(job)

        await self._in_job_transaction(event.task.job_id, work)

    async def task_failed(self, event: GenerationFailed) -> None:
        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(event.task.job_id, for_update=True)
            if job is None or JobStatus(job.status) in FINAL_STATUSES:
                return
            # All of them: settling the job below counts them.
            tasks = repo.tasks_of(job.id)
            task = _find_task(tasks, event.task.task_id)
            if task is None:
                return
            if task.status in _DONE_TASK_STATUSES or event.task.attempt < task.attempt:
                return  # already settled, or a stale report of an attempt we moved past
            task.error = event.error.model_dump(mode="json")
            request = _request_of(job)
            retry_at = self._retry_time(job, request, task, event.error)
            if retry_at is not None:
                task.status = "retry_wait"
                task.attempt += 1
                task.next_attempt_at = retry_at
                repo.save_tasks([task])
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
            repo.save_tasks([task])
            self._settle(repo, outbox, job, request, tasks, repo.images_of(job.id))

        await self._in_job_transaction(event.task.job_id, work)

    def _retry_time(
        self, job: JobRecord, request: JobRequested, task: TaskRecord, error: ErrorInfo
    ) -> datetime | None:
        """When to try a failed task again, or None when it must not be retried."""
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
        repo.save_tasks([task])
        request = _request_of(job)
        assembled = AssembledPrompt.model_validate(job.assembled)
        outbox.add(
            self._task_event(job, request, assembled, task),
            gen_requested(request.profile.provider),
        )

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
            request = _request_of(job)
            if JobStatus(job.status) in FINAL_STATUSES:
                views.append(self._view(repo, job, request))
                return
            unfinished = [t for t in repo.tasks_of(job_id) if t.status not in _DONE_TASK_STATUSES]
            for task in unfinished:
                task.status = "cancelled"
                task.next_attempt_at = None
            repo.save_tasks(unfinished)
            job.error = ErrorInfo.of(ErrorClass.CANCELLED).model_dump(mode="json")
            job.deadline_at = None
            views.append(self._set_status(repo, outbox, job, request, JobStatus.CANCELLED))
            repo.save_job(job)

        await self._in_job_transaction(job_id, work)
        return views[0] if views else None

    async def images_landed(self, event: MediaLanded) -> None:
        def work(repo: JobRepository, outbox: _Outbox) -> None:
            job = repo.get_job(event.job_id, for_update=True)
            if job is None:
                return
            # Read once, kept current below, and counted by `_settle`: no re-reading.
            tasks = repo.tasks_of(job.id)
            task = _find_task(tasks, event.task_id)
            if task is None:
                return
            images = repo.images_of(job.id)
            # Media ids are derived from the task (and so the job): a redelivery repeats them.
            known = {image.media_id for image in images}
            new: list[ImageRecord] = []
            for item in event.media:
                if item.id not in known:
                    known.add(item.id)
                    new.append(
                        ImageRecord(
                            media_id=item.id,
                            job_id=job.id,
                            task_id=task.id,
                            index=item.index,
                            width=item.width,
                            height=item.height,
                            content_type=item.content_type,
                        )
                    )
            repo.insert_images(new)
            if task.status != "landed":
                task.status = "landed"
                repo.save_tasks([task])
            if JobStatus(job.status) not in FINAL_STATUSES:
                if new:
                    images = sorted(images + new, key=_by_index)  # as `images_of` orders them
                self._settle(repo, outbox, job, _request_of(job), tasks, images)

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
            unfinished = [t for t in tasks if t.status not in _DONE_TASK_STATUSES]
            for task in unfinished:
                task.status = "failed"
                task.error = error.model_dump(mode="json")
            repo.save_tasks(unfinished)
            if not tasks:
                job.error = error.model_dump(mode="json")
            images = repo.images_of(job_id)
            self._settle(repo, outbox, job, _request_of(job), tasks, images, force_final=True)

        await self._in_job_transaction(job_id, work)

    def _settle(
        self,
        repo: JobRepository,
        outbox: _Outbox,
        job: JobRecord,
        request: JobRequested,
        tasks: list[TaskRecord],
        images: list[ImageRecord],
        *,
        force_final: bool = False,
    ) -> None:
        """Recount from the rows (never increments: redeliveries can't double count) and end the
        job once every task is landed or failed. `tasks` and `images` are all of the job's rows
        as this transaction left them (read in it, and changed and written since)."""
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
        done = bool(tasks) and all(t.status in _DONE_TASK_STATUSES for t in tasks)
        if not (done or force_final):
            if JobStatus(job.status) not in FINAL_STATUSES:
                job.updated_at = utcnow()
                self._announce(repo, outbox, job, request, images)
            repo.save_job(job)
            return
        if landed >= request.count:
            final = JobStatus.COMPLETED
        elif landed > 0:
            final = JobStatus.PARTIAL
        else:
            final = JobStatus.FAILED
        if final != JobStatus.COMPLETED:
            job.error = job.error or first_error
        job.deadline_at = None
        profile = request.profile
        record_generation_cost(profile.provider, profile.model, landed * profile.credit_cost)
        observe_stage_latency(
            "submitted_to_final", (utcnow() - as_utc(job.created_at)).total_seconds()
        )
        self._set_status(repo, outbox, job, request, final, images)
        repo.save_job(job)

    # -- queries -------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobView | None:
        def read(repo: JobRepository) -> JobView | None:
            job = repo.get_job(job_id)
            return self._view(repo, job, _request_of(job)) if job else None

        return await self._read(read)

    async def list_jobs(self, query: JobListQuery) -> list[JobView]:
        def read(repo: JobRepository) -> list[JobView]:
            rows = repo.list_jobs(query.project, active_only=query.active_only, limit=query.limit)
            return [self._view(repo, job, _request_of(job)) for job in rows]

        return await self._read(read)


def _request_of(job: JobRecord) -> JobRequested:
    """The job's request as stored; parsed once per transaction and handed around."""
    return JobRequested.model_validate(job.request)


def _find_task(tasks: list[TaskRecord], task_id: str) -> TaskRecord | None:
    return next((t for t in tasks if t.id == task_id), None)


def _by_index(image: ImageRecord) -> int:
    return image.index


def _is_active(job_id: str, repo: JobRepository) -> bool:
    job = repo.get_job(job_id)
    return job is not None and JobStatus(job.status) not in FINAL_STATUSES


def _job_uuid(job: JobRecord) -> str:
    """Job ids are UUIDs made by the gateway; other ids still get a stable namespace."""
    try:
        return str(UUID(job.id))
    except ValueError:
        return str(uuid5(NAMESPACE_URL, f"atelier:job:{job.id}"))

"""Dispatch owns the job record and its state machine.

queued → enriching → dispatched → generating → landing → completed | partial | failed

Every handler is one transaction on the job (serialized per job), then publishes: first the tasks
it created, then the job's status. Publishing after commit can repeat on redelivery; every event id
is derived from what it describes, so JetStream stores a repeat once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5
from weakref import WeakValueDictionary

from atelier_contracts.envelope import Event, derived_event_id
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import (
    GenerationCompleted,
    GenerationFailed,
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
)
from atelier_contracts.media import MediaLanded
from atelier_contracts.providers import images_per_call
from atelier_contracts.subjects import gen_requested, job_status
from atelier_database import Database
from atelier_dispatch.repository import JobImageRow, JobRepository, JobRow, TaskRow, as_utc

log = logging.getLogger("atelier.dispatch")

Publish = Callable[[Event, str], Awaitable[None]]

_BEFORE_DISPATCH = {JobStatus.QUEUED, JobStatus.ENRICHING}


def utcnow() -> datetime:
    return datetime.now(UTC)


def split_into_tasks(count: int, per_call: int) -> list[tuple[int, int]]:
    """`(first_index, n)` for each provider call a job of `count` images needs."""
    return [(first, min(per_call, count - first)) for first in range(0, count, per_call)]


@dataclass
class _Outbox:
    """Events to publish once the transaction committed."""

    events: list[tuple[Event, str]]

    def add(self, event: Event, subject: str) -> None:
        self.events.append((event, subject))


class DispatchService:
    def __init__(self, db: Database, publish: Publish, *, deadline_slack_s: float = 300.0):
        self.db = db
        self.publish = publish
        self.deadline_slack_s = deadline_slack_s
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    # -- plumbing ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _job_transaction(self, job_id: str) -> AsyncIterator[tuple[JobRepository, _Outbox]]:
        lock = self._locks.get(job_id)
        if lock is None:
            lock = self._locks[job_id] = asyncio.Lock()
        outbox = _Outbox([])
        async with lock:
            async with self.db.session() as session:
                yield JobRepository(session, lock_rows=not self.db.is_sqlite), outbox
                await session.commit()
            for event, subject in outbox.events:
                await self.publish(event, subject)

    async def _set_status(
        self, repo: JobRepository, outbox: _Outbox, job: JobRow, status: JobStatus
    ) -> None:
        job.status = status.value
        job.updated_at = utcnow()
        repo.add(job)
        await self._announce(repo, outbox, job)

    async def _announce(self, repo: JobRepository, outbox: _Outbox, job: JobRow) -> None:
        view = await self._view(repo, job)
        key = f"status:{view.status}:{view.progress.landed}:{view.progress.failed}"
        outbox.add(
            JobStatusChanged(event_id=derived_event_id(_job_uuid(job), key), job=view),
            job_status(job.project, job.id),
        )

    async def _view(self, repo: JobRepository, job: JobRow) -> JobView:
        request = JobRequested.model_validate(job.request)
        assembled = AssembledPrompt.model_validate(job.assembled) if job.assembled else None
        images = await repo.images_of(job.id)
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
            seed=int(seed) + task.first_index if isinstance(seed, int) else None,
            deadline_at=as_utc(job.deadline_at or utcnow()),
            attempt=task.attempt,
        )

    # -- event handlers ------------------------------------------------------------------------

    async def record_request(self, request: JobRequested) -> None:
        """jobs.requested: the job exists from now on; context is enriching it."""
        async with self._job_transaction(request.job_id) as (repo, outbox):
            job = await repo.get_job(request.job_id, for_update=True)
            if job is None:
                job = self._new_job(request)
                repo.add(job)
                await self._announce(repo, outbox, job)
            if JobStatus(job.status) == JobStatus.QUEUED:
                await self._set_status(repo, outbox, job, JobStatus.ENRICHING)

    async def dispatch_enriched(self, event: JobEnriched) -> None:
        """jobs.enriched: split into tasks and hand them to the provider's queue."""
        request = event.request
        async with self._job_transaction(request.job_id) as (repo, outbox):
            job = await repo.get_job(request.job_id, for_update=True)
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
                await repo.session.flush()
                await self._set_status(repo, outbox, job, JobStatus.DISPATCHED)
            # Also on a redelivery: re-send tasks not yet picked up (same ids: deduplicated).
            subject = gen_requested(request.profile.provider)
            pending = [t for t in await repo.tasks_of(job.id) if t.status == "pending"]
            # Tasks go out before the status that announces them.
            outbox.events[0:0] = [(self._task_event(job, t), subject) for t in pending]

    async def task_started(self, event: GenerationStarted) -> None:
        async with self._job_transaction(event.job_id) as (repo, outbox):
            job = await repo.get_job(event.job_id, for_update=True)
            task = await repo.get_task(event.task_id)
            if job is None or task is None or JobStatus(job.status) in FINAL_STATUSES:
                return
            if task.status == "pending":
                task.status = "started"
                repo.add(task)
            if JobStatus(job.status) == JobStatus.DISPATCHED:
                await self._set_status(repo, outbox, job, JobStatus.GENERATING)

    async def task_completed(self, event: GenerationCompleted) -> None:
        async with self._job_transaction(event.task.job_id) as (repo, outbox):
            job = await repo.get_job(event.task.job_id, for_update=True)
            task = await repo.get_task(event.task.task_id)
            if job is None or task is None or JobStatus(job.status) in FINAL_STATUSES:
                return
            if task.status in ("pending", "started"):
                task.status = "completed"
                repo.add(task)
            if JobStatus(job.status) in (JobStatus.DISPATCHED, JobStatus.GENERATING):
                await self._set_status(repo, outbox, job, JobStatus.LANDING)

    async def task_failed(self, event: GenerationFailed) -> None:
        async with self._job_transaction(event.task.job_id) as (repo, outbox):
            job = await repo.get_job(event.task.job_id, for_update=True)
            task = await repo.get_task(event.task.task_id)
            if job is None or task is None or JobStatus(job.status) in FINAL_STATUSES:
                return
            if task.status in ("landed", "failed"):
                return
            task.status = "failed"
            task.error = event.error.model_dump(mode="json")
            repo.add(task)
            await self._settle(repo, outbox, job)

    async def images_landed(self, event: MediaLanded) -> None:
        async with self._job_transaction(event.job_id) as (repo, outbox):
            job = await repo.get_job(event.job_id, for_update=True)
            task = await repo.get_task(event.task_id)
            if job is None or task is None:
                return
            for item in event.media:
                if not await repo.image_exists(item.id):
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
            await repo.session.flush()
            if JobStatus(job.status) not in FINAL_STATUSES:
                await self._settle(repo, outbox, job)

    async def end_overdue_jobs(self, now: datetime | None = None) -> int:
        """The sweeper: a job past its deadline ends with a reason instead of waiting forever."""
        now = now or utcnow()
        async with self.db.session() as session:
            ids = await JobRepository(session, lock_rows=False).overdue_job_ids(now)
        for job_id in ids:
            async with self._job_transaction(job_id) as (repo, outbox):
                job = await repo.get_job(job_id, for_update=True)
                if job is None or JobStatus(job.status) in FINAL_STATUSES:
                    continue
                timeout = ErrorInfo.of(ErrorClass.TIMEOUT, "job passed its deadline")
                for task in await repo.tasks_of(job_id):
                    if task.status not in ("landed", "failed"):
                        task.status = "failed"
                        task.error = timeout.model_dump(mode="json")
                        repo.add(task)
                if not await repo.tasks_of(job_id):
                    job.error = timeout.model_dump(mode="json")
                await repo.session.flush()
                await self._settle(repo, outbox, job, force_final=True)
                log.warning("job passed its deadline", extra={"job_id": job_id})
        return len(ids)

    async def _settle(
        self, repo: JobRepository, outbox: _Outbox, job: JobRow, *, force_final: bool = False
    ) -> None:
        """Recount from the rows (never increments: redeliveries can't double count) and end the
        job once every task is landed or failed."""
        tasks = await repo.tasks_of(job.id)
        images = await repo.images_of(job.id)
        landed_per_task: dict[str, int] = {}
        for image in images:
            landed_per_task[image.task_id] = landed_per_task.get(image.task_id, 0) + 1
        landed = len(images)
        failed = 0
        first_error: dict[str, Any] | None = None
        for task in tasks:
            if task.status == "failed":
                failed += task.n - landed_per_task.get(task.id, 0)
                first_error = first_error or task.error
            elif task.status == "landed":
                failed += max(0, task.n - landed_per_task.get(task.id, 0))
        if failed and first_error is None:
            first_error = ErrorInfo.of(ErrorClass.NO_IMAGE_RETURNED).model_dump(mode="json")
        job.landed, job.failed = landed, failed
        total = JobRequested.model_validate(job.request).count
        done = bool(tasks) and all(t.status in ("landed", "failed") for t in tasks)
        if not (done or force_final):
            if JobStatus(job.status) in FINAL_STATUSES:
                return
            job.updated_at = utcnow()
            repo.add(job)
            await self._announce(repo, outbox, job)
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
        await self._set_status(repo, outbox, job, final)

    # -- queries -------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobView | None:
        async with self.db.session() as session:
            repo = JobRepository(session, lock_rows=False)
            job = await repo.get_job(job_id)
            return await self._view(repo, job) if job else None

    async def list_jobs(self, query: JobListQuery) -> list[JobView]:
        async with self.db.session() as session:
            repo = JobRepository(session, lock_rows=False)
            rows = await repo.list_jobs(
                query.project, active_only=query.active_only, limit=query.limit
            )
            return [await self._view(repo, job) for job in rows]


def _job_uuid(job: JobRow) -> str:
    """Job ids are UUIDs made by the gateway; other ids still get a stable namespace."""
    try:
        return str(UUID(job.id))
    except ValueError:
        return str(uuid5(NAMESPACE_URL, f"atelier:job:{job.id}"))

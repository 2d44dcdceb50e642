"""The worker's one subscription: its provider's task queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TypedDict

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage

from atelier_contracts.envelope import derived_event_id
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import (
    GenerationCompleted,
    GenerationFailed,
    GenerationProgress,
    GenerationStarted,
    GenerationTask,
)
from atelier_contracts.profiles import ProfilesChanged
from atelier_contracts.subjects import Subject, gen_requested, worker_durable
from atelier_messaging import (
    CancelledJobs,
    ProviderHandles,
    TaskHandle,
    declare_publishers,
    delivery_attempt,
    durable_subscriber,
    publish_event,
    publish_notice,
)
from atelier_telemetry import (
    provider_call_in_flight,
    record_generation_failure,
    record_generation_success,
)
from atelier_workers.credentials import ProviderCredentials
from atelier_workers.pacing import ProgressThrottle
from atelier_workers.service import WorkerService
from atelier_workers.settings import Settings

log = logging.getLogger("atelier.workers")


class _ReportFields(TypedDict):
    event_id: uuid.UUID
    task_id: str
    job_id: str
    project: str
    provider: str
    attempt: int


def _report_fields(task: GenerationTask, provider: str, event_key: str) -> _ReportFields:
    """What every `TaskReport` about `task` says: the task, its attempt, and an event id derived
    from the task's own with `event_key` (the same report of a delivery keeps the same id)."""
    return _ReportFields(
        event_id=derived_event_id(task.event_id, event_key),
        task_id=task.task_id,
        job_id=task.job_id,
        project=task.project,
        provider=provider,
        attempt=task.attempt,
    )


class InFlight:
    """Provider calls running in this process, by job, so a cancel can abandon them."""

    def __init__(self) -> None:
        self._by_job: dict[str, set[asyncio.Task[GenerationCompleted | GenerationFailed]]] = {}

    def add(self, job_id: str, task: asyncio.Task[GenerationCompleted | GenerationFailed]) -> None:
        self._by_job.setdefault(job_id, set()).add(task)

    def discard(
        self, job_id: str, task: asyncio.Task[GenerationCompleted | GenerationFailed]
    ) -> None:
        tasks = self._by_job.get(job_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._by_job[job_id]

    async def cancel_job(self, job_id: str) -> None:
        for task in list(self._by_job.get(job_id, ())):
            task.cancel()

    def __len__(self) -> int:
        return sum(len(t) for t in self._by_job.values())


@contextlib.asynccontextmanager
async def keep_alive(msg: NatsMessage, every_s: float) -> AsyncIterator[None]:
    """Tell JetStream the task is still being worked on, so only a dead worker's task is
    redelivered, however long the provider takes."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


def register_handlers(
    broker: NatsBroker,
    service: WorkerService,
    settings: Settings,
    *,
    cancelled: CancelledJobs,
    handles: ProviderHandles,
    inflight: InFlight,
) -> None:
    declare_publishers(broker, "workers")
    provider = settings.provider

    def cancelled_result(task: GenerationTask) -> GenerationFailed:
        return service.failed(task, ErrorInfo.of(ErrorClass.CANCELLED))

    def progress_reporter(task: GenerationTask, attempt: int) -> ProgressThrottle:
        """Provider progress of this delivery as `gen.progress` events, throttled per task."""
        sent = 0

        async def publish(fraction: float | None, detail: str | None) -> None:
            nonlocal sent
            sent += 1
            event = GenerationProgress(
                **_report_fields(task, provider, f"progress:{attempt}:{sent}"),
                fraction=fraction,
                detail=detail[:200] if detail else None,
            )
            await publish_event(broker, event, Subject.GEN_PROGRESS)

        return ProgressThrottle(publish, settings.progress_interval_s)

    async def run_abandonable(
        task: GenerationTask, resume: TaskHandle, progress: ProgressThrottle
    ) -> GenerationCompleted | GenerationFailed:
        run = asyncio.create_task(service.run_task(task, resume, progress.report))
        inflight.add(task.job_id, run)
        try:
            with provider_call_in_flight(settings.provider):
                return await run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this process is shutting down: the task will be redelivered
            # The writer cancelled the job: stop the provider too where it can be stopped.
            await service.cancel_at_provider(task, resume)
            return cancelled_result(task)
        finally:
            inflight.discard(task.job_id, run)

    # Ack policy: ack after gen.completed / gen.failed is stored. An infrastructure error (object
    # storage down) raises and the task is redelivered with backoff; on the last delivery we
    # report the task failed instead, so the job ends with a reason rather than vanishing.
    @durable_subscriber(
        broker,
        gen_requested(provider),
        worker_durable(provider),
        max_workers=settings.concurrency,
        # Each replica pulls only what it has slots for; the sum over replicas may pass 1,000.
        max_ack_pending=-1,
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
    )
    async def generate_images(task: GenerationTask, msg: NatsMessage) -> None:
        attempt = delivery_attempt(msg)
        if await cancelled.is_cancelled(task.job_id):
            await publish_event(broker, cancelled_result(task), Subject.GEN_FAILED)
            return
        # An observation, not a step of the job: core NATS, nothing waits for it (ADR 0018).
        await publish_notice(
            broker,
            GenerationStarted(**_report_fields(task, provider, f"started:{attempt}")),
            Subject.GEN_STARTED,
        )
        progress = progress_reporter(task, attempt)
        resume = handles.for_task(task.task_id)
        try:
            async with keep_alive(msg, settings.heartbeat_s):
                result = await run_abandonable(task, resume, progress)
        except Exception as exc:
            if attempt < settings.max_deliver:
                raise
            result = service.failed(
                task, ErrorInfo.of(ErrorClass.INTERNAL, f"worker gave up: {type(exc).__name__}")
            )
        finally:
            await progress.close()  # no progress after the outcome
        subject = (
            Subject.GEN_COMPLETED if isinstance(result, GenerationCompleted) else Subject.GEN_FAILED
        )
        if isinstance(result, GenerationFailed):
            record_generation_failure(provider, result.error.error_class.value)
        else:
            record_generation_success(provider)
        await publish_event(broker, result, subject)
        # The provider job is settled; its handle is no longer needed for a resume.
        with contextlib.suppress(Exception):
            await resume.forget()


def register_credential_invalidation(broker: NatsBroker, credentials: ProviderCredentials) -> None:
    """Forget the cached key as soon as an admin sets, rotates or deletes it.

    A core NATS subscription without a queue group: every worker replica must hear it.
    `no_reply`: `profiles.changed` is published to JetStream, and its reply subject is the
    publisher's ack inbox, which must get JetStream's ack and nothing from us.
    """

    @broker.subscriber(Subject.PROFILES_CHANGED, no_reply=True)
    async def forget_changed_credentials(event: ProfilesChanged) -> None:
        if event.action == "credentials" and event.provider in (None, credentials.provider):
            credentials.invalidate()
            log.info("provider credential changed", extra={"provider": credentials.provider})

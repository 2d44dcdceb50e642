"""The worker's one subscription: its provider's task queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage

from atelier_contracts.envelope import derived_event_id
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import GenerationCompleted, GenerationStarted, GenerationTask
from atelier_contracts.subjects import Subject, gen_requested, worker_durable
from atelier_messaging import delivery_attempt, durable_subscriber, publish_event
from atelier_workers.service import WorkerService
from atelier_workers.settings import Settings


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


def register_handlers(broker: NatsBroker, service: WorkerService, settings: Settings) -> None:
    provider = settings.provider

    # Ack policy: ack after gen.completed / gen.failed is stored. An infrastructure error (object
    # storage down) raises and the task is redelivered with backoff; on the last delivery we
    # report the task failed instead, so the job ends with a reason rather than vanishing.
    @durable_subscriber(
        broker,
        gen_requested(provider),
        worker_durable(provider),
        max_workers=settings.concurrency,
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
    )
    async def generate_images(task: GenerationTask, msg: NatsMessage) -> None:
        attempt = delivery_attempt(msg)
        await publish_event(
            broker,
            GenerationStarted(
                event_id=derived_event_id(task.event_id, f"started:{attempt}"),
                task_id=task.task_id,
                job_id=task.job_id,
                project=task.project,
                provider=provider,
                attempt=task.attempt,
            ),
            Subject.GEN_STARTED,
        )
        try:
            async with keep_alive(msg, settings.heartbeat_s):
                result = await service.run_task(task)
        except Exception as exc:
            if attempt < settings.max_deliver:
                raise
            result = service.failed(
                task, ErrorInfo.of(ErrorClass.INTERNAL, f"worker gave up: {type(exc).__name__}")
            )
        subject = (
            Subject.GEN_COMPLETED if isinstance(result, GenerationCompleted) else Subject.GEN_FAILED
        )
        await publish_event(broker, result, subject)

"""The worker's subscriber on FastStream's in-memory broker: a task published to its provider's
queue is run on the offline adapter, its images written to an in-memory object store, and its
outcome published."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from atelier_contracts.errors import ErrorClass
from atelier_contracts.generation import (
    GenerationCompleted,
    GenerationFailed,
    GenerationStarted,
    GenerationTask,
)
from atelier_contracts.subjects import Subject, gen_requested
from atelier_contracts.testing import generation_task
from atelier_messaging import CancelledJobs, ProviderHandles, stream_for_subject
from atelier_storage import ObjectStore
from atelier_workers.adapters import get_adapter
from atelier_workers.handlers import InFlight, register_handlers
from atelier_workers.service import WorkerService
from atelier_workers.settings import Settings

MEDIA = "media"


@dataclass
class MemoryObjects:
    """The object store calls a worker makes (`ObjectStore.get_bytes`, `put_bytes`)."""

    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        return self.objects[(bucket, key)]

    async def put_bytes(self, bucket: str, key: str, data: bytes, *_: Any, **__: Any) -> None:
        self.objects[(bucket, key)] = data


class MarkedJobs(CancelledJobs):
    """The cancel marks, without the key-value bucket the in-memory broker does not have."""

    def __init__(self, broker: NatsBroker) -> None:
        super().__init__(broker)
        self.marked: set[str] = set()

    async def is_cancelled(self, job_id: str) -> bool:
        return job_id in self.marked


@dataclass
class Worker:
    broker: NatsBroker
    store: MemoryObjects
    cancelled: MarkedJobs
    started: list[GenerationStarted] = field(default_factory=list)
    completed: list[GenerationCompleted] = field(default_factory=list)
    failed: list[GenerationFailed] = field(default_factory=list)


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    settings = Settings(provider="offline", media_bucket=MEDIA)
    broker = NatsBroker()
    store = MemoryObjects()
    cancelled = MarkedJobs(broker)
    async with httpx.AsyncClient() as client:
        service = WorkerService(
            get_adapter("offline"),
            cast(ObjectStore, store),
            settings.staging_bucket,
            client,
            media_bucket=MEDIA,
        )
        register_handlers(
            broker,
            service,
            settings,
            cancelled=cancelled,
            handles=ProviderHandles(broker),
            inflight=InFlight(),
        )
        heard = Worker(broker, store, cancelled)

        @broker.subscriber(Subject.GEN_STARTED)
        async def started(event: GenerationStarted) -> None:
            heard.started.append(event)

        results = stream_for_subject(Subject.GEN_COMPLETED).name

        @broker.subscriber(Subject.GEN_COMPLETED, stream=results)
        async def completed(event: GenerationCompleted) -> None:
            heard.completed.append(event)

        @broker.subscriber(Subject.GEN_FAILED, stream=results)
        async def failed(event: GenerationFailed) -> None:
            heard.failed.append(event)

        async with TestNatsBroker(broker):
            yield heard


def _task(prompt: str = "A lighthouse at dusk", n: int = 2) -> GenerationTask:
    return generation_task(prompt=prompt, size="64x48", n=n, seed=7)


async def test_a_task_is_made_written_and_reported_completed(worker: Worker) -> None:
    task = _task()
    await worker.broker.publish(task, gen_requested("offline"))
    assert [(e.task_id, e.attempt) for e in worker.started] == [(task.task_id, 1)]
    [done] = worker.completed
    assert done.task.task_id == task.task_id
    assert [image.index for image in done.images] == [0, 1]
    # Each image is in the media bucket, where media will verify and record it.
    assert sorted(key for _, key in worker.store.objects) == sorted(i.key for i in done.images)
    assert {bucket for bucket, _ in worker.store.objects} == {MEDIA}
    assert worker.failed == []


async def test_a_provider_failure_is_reported_with_its_class(worker: Worker) -> None:
    task = _task(prompt="A lighthouse [fail:content_blocked]")
    await worker.broker.publish(task, gen_requested("offline"))
    [failure] = worker.failed
    assert failure.task.task_id == task.task_id
    assert failure.error.error_class == ErrorClass.CONTENT_BLOCKED
    assert worker.completed == [] and worker.store.objects == {}


async def test_a_task_of_a_cancelled_job_is_not_run(worker: Worker) -> None:
    task = _task()
    worker.cancelled.marked.add(task.job_id)
    await worker.broker.publish(task, gen_requested("offline"))
    [failure] = worker.failed
    assert failure.error.error_class == ErrorClass.CANCELLED
    assert worker.started == [] and worker.completed == [] and worker.store.objects == {}

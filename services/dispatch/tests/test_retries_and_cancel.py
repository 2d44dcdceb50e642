"""Retries, cancel and the dead-letter path of the job state machine, on a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from atelier_contracts.envelope import Event
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import GenerationFailed, GenerationTask
from atelier_contracts.jobs import (
    JobRequested,
    JobStatus,
)
from atelier_contracts.testing import job_enriched, job_requested
from atelier_database import Database
from atelier_dispatch.dead_letter import MaxDeliveriesAdvisory, handle_max_deliveries
from atelier_dispatch.repository import TABLES
from atelier_dispatch.results import retry_delay_s
from atelier_dispatch.service import DispatchService

LATER = timedelta(minutes=5)


class OneMessage:
    """A stream holding one message (`dead_letter.StoredMessages`)."""

    def __init__(self, subject: str, body: bytes) -> None:
        self.stored: tuple[str, bytes] | None = (subject, body)

    async def fetch(self, stream: str, seq: int) -> tuple[str, bytes] | None:
        return self.stored

    async def delete(self, stream: str, seq: int) -> None:
        self.stored = None

    async def handled_by_others(self, stream: str, seq: int, subject: str, consumer: str) -> bool:
        return True


class Harness:
    def __init__(self, db: Database) -> None:
        self.events: list[tuple[Event, str]] = []
        self.cancelled: list[str] = []
        self.service = DispatchService(
            db, self.publish, max_attempts=3, retry_base_s=0.01, mark_cancelled=self.mark
        )

    async def publish(self, event: Event, subject: str) -> None:
        self.events.append((event, subject))

    async def mark(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def tasks(self) -> list[GenerationTask]:
        return [e for e, _ in self.events if isinstance(e, GenerationTask)]

    async def submit(self, count: int = 1) -> JobRequested:
        request = job_requested(count=count)
        await self.service.record_request(request)
        await self.service.dispatch_enriched(job_enriched(request))
        return request


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[Harness]:
    db = Database(database_url)
    await db.create_tables(TABLES)
    yield Harness(db)
    await db.dispose()


def test_backoff_grows_and_honours_the_provider_hint() -> None:
    assert retry_delay_s(1, 2.0, None) <= 2.5
    assert retry_delay_s(3, 2.0, None) >= 6.0
    assert retry_delay_s(1, 2.0, 30.0) == 30.0
    assert retry_delay_s(20, 2.0, None) <= 75.0


async def test_retryable_failure_is_retried_with_a_new_attempt(harness: Harness) -> None:
    request = await harness.submit()
    first = harness.tasks()[-1]
    limited = ErrorInfo.of(ErrorClass.RATE_LIMITED).model_copy(update={"retry_after_s": 0.0})
    await harness.service.task_failed(GenerationFailed(task=first, error=limited))
    job = await harness.service.get_job(request.job_id)
    assert job is not None and job.status not in (JobStatus.FAILED, JobStatus.COMPLETED)

    assert await harness.service.send_due_retries(datetime.now(UTC) + LATER) == 1
    second = harness.tasks()[-1]
    assert second.task_id == first.task_id and second.attempt == 2
    assert second.event_id != first.event_id  # a new attempt is a new message

    # A stale report about attempt 1 changes nothing.
    await harness.service.task_failed(GenerationFailed(task=first, error=limited))
    assert await harness.service.send_due_retries(datetime.now(UTC) + LATER) == 0


async def test_attempts_are_bounded(harness: Harness) -> None:
    request = await harness.submit()
    down = ErrorInfo.of(ErrorClass.PROVIDER_UNAVAILABLE)
    for _ in range(3):
        await harness.service.task_failed(GenerationFailed(task=harness.tasks()[-1], error=down))
        await harness.service.send_due_retries(datetime.now(UTC) + LATER)
    job = await harness.service.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.FAILED
    assert job.error is not None and job.error.error_class == ErrorClass.PROVIDER_UNAVAILABLE
    assert [t.attempt for t in harness.tasks()] == [1, 2, 3]


@pytest.mark.parametrize(
    "error_class",
    [
        ErrorClass.CONTENT_BLOCKED,
        ErrorClass.INVALID_REQUEST,
        ErrorClass.AUTH,
        ErrorClass.QUOTA_EXHAUSTED,
    ],
)
async def test_never_retried(harness: Harness, error_class: ErrorClass) -> None:
    request = await harness.submit()
    error = ErrorInfo.of(error_class)
    await harness.service.task_failed(GenerationFailed(task=harness.tasks()[-1], error=error))
    assert await harness.service.send_due_retries(datetime.now(UTC) + LATER) == 0
    job = await harness.service.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.FAILED


async def test_cancel_ends_the_job_and_marks_it(harness: Harness) -> None:
    request = await harness.submit(count=2)
    job = await harness.service.cancel(request.job_id)
    assert job is not None and job.status == JobStatus.CANCELLED
    assert job.error is not None and job.error.error_class == ErrorClass.CANCELLED
    assert harness.cancelled == [request.job_id]
    # Late reports change nothing.
    for task in harness.tasks():
        await harness.service.task_failed(
            GenerationFailed(task=task, error=ErrorInfo.of(ErrorClass.TIMEOUT))
        )
    again = await harness.service.get_job(request.job_id)
    assert again is not None and again.status == JobStatus.CANCELLED
    # Cancelling a finished job is a no-op that answers with the job.
    assert (await harness.service.cancel(request.job_id)) is not None
    assert harness.cancelled == [request.job_id]
    assert await harness.service.cancel("unknown") is None


async def test_undeliverable_task_fails_through_the_dead_letter_path(harness: Harness) -> None:
    request = await harness.submit()
    task = harness.tasks()[-1]

    messages = OneMessage("gen.offline.requested", task.model_dump_json().encode())
    harness.service.max_attempts = 1
    outcome = await handle_max_deliveries(
        MaxDeliveriesAdvisory(
            stream="ATELIER_TASKS", consumer="worker-offline", stream_seq=1, deliveries=5
        ),
        messages,
        harness.service,
    )
    assert "failed" in outcome
    assert messages.stored is None  # the work queue would keep it forever
    job = await harness.service.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.FAILED
    assert job.error is not None and "5 times" in (job.error.detail or "")


async def test_undeliverable_request_fails_the_job(harness: Harness) -> None:
    request = job_requested()
    # Not recorded yet: dispatch's own consumer may lag behind context's.
    messages = OneMessage("jobs.requested", request.model_dump_json().encode())
    await handle_max_deliveries(
        MaxDeliveriesAdvisory(
            stream="ATELIER_JOBS", consumer="context-jobs-requested", stream_seq=1, deliveries=20
        ),
        messages,
        harness.service,
    )
    job = await harness.service.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.FAILED
    assert messages.stored is None

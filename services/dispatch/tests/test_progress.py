"""Provider progress becomes job status events, without writing the job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from atelier_contracts.envelope import Event
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import (
    GenerationCompleted,
    GenerationFailed,
    GenerationProgress,
    GenerationStarted,
    GenerationTask,
    StagedImage,
)
from atelier_contracts.jobs import AssembledPrompt, JobEnriched, JobRequested, JobStatusChanged
from atelier_contracts.profiles import ProfileSnapshot
from atelier_contracts.subjects import job_status
from atelier_database import Database
from atelier_dispatch.repository import TABLES
from atelier_dispatch.service import DispatchService


class Published:
    def __init__(self) -> None:
        self.events: list[tuple[Event, str]] = []

    async def __call__(self, event: Event, subject: str) -> None:
        self.events.append((event, subject))

    def tasks(self) -> list[GenerationTask]:
        return [event for event, _ in self.events if isinstance(event, GenerationTask)]

    def statuses(self) -> list[JobStatusChanged]:
        return [event for event, _ in self.events if isinstance(event, JobStatusChanged)]


@pytest.fixture
async def dispatch(database_url: str) -> AsyncIterator[tuple[DispatchService, Published]]:
    db = Database(database_url)
    await db.create_tables(TABLES)
    published = Published()
    yield DispatchService(db, published), published
    await db.dispose()


async def _generating_job(
    service: DispatchService, published: Published, count: int
) -> list[GenerationTask]:
    """A job of `count` one-image tasks, every task started."""
    profile = ProfileSnapshot(
        id="p1",
        name="Queue",
        provider="falai",
        model="fal-ai/flux/dev",
        timeout_s=60,
        prompt_max_length=1000,
        max_reference_images=0,
        credit_cost=1,
    )
    request = JobRequested(
        job_id=str(uuid4()),
        user_id="u1",
        project="proj",
        profile=profile,
        prompt="A lighthouse",
        size="512x512",
        count=count,
    )
    await service.record_request(request)
    await service.dispatch_enriched(
        JobEnriched(request=request, assembled=AssembledPrompt(prompt=request.prompt))
    )
    tasks = published.tasks()
    for task in tasks:
        await service.task_started(
            GenerationStarted(
                task_id=task.task_id,
                job_id=task.job_id,
                project=task.project,
                provider="falai",
            )
        )
    return tasks


def _tick(task: GenerationTask, fraction: float | None, detail: str) -> GenerationProgress:
    return GenerationProgress(
        task_id=task.task_id,
        job_id=task.job_id,
        project=task.project,
        provider="falai",
        attempt=task.attempt,
        fraction=fraction,
        detail=detail,
    )


async def test_progress_becomes_a_status_event_without_a_write(
    dispatch: tuple[DispatchService, Published],
) -> None:
    service, published = dispatch
    [task] = await _generating_job(service, published, count=1)
    stored = await service.get_job(task.job_id)
    assert stored is not None
    published.events.clear()

    tick = _tick(task, None, "queued at position 3")
    await service.task_progress(tick)
    [(event, subject)] = published.events
    assert isinstance(event, JobStatusChanged)
    assert subject == job_status("proj", task.job_id)
    assert event.job.status == stored.status
    assert event.job.progress.detail == "queued at position 3"
    assert event.job.progress.fraction is None  # no figure yet
    assert event.job.updated_at >= stored.updated_at

    await service.task_progress(_tick(task, 0.5, "running"))
    assert published.statuses()[-1].job.progress.fraction == 0.5

    # Nothing was written: the stored job is as it was, without progress figures.
    after = await service.get_job(task.job_id)
    assert after == stored
    assert after.progress.fraction is None

    # Idempotent: a redelivered tick republishes the very same event id.
    published.events.clear()
    await service.task_progress(tick)
    await service.task_progress(tick)
    first, second = published.statuses()
    assert first.event_id == second.event_id


async def test_a_job_of_several_tasks_counts_finished_ones_whole(
    dispatch: tuple[DispatchService, Published],
) -> None:
    service, published = dispatch
    first, second = await _generating_job(service, published, count=2)
    await service.task_progress(_tick(first, 0.5, "step 10/20"))
    assert published.statuses()[-1].job.progress.fraction == 0.25
    assert published.statuses()[-1].job.progress.detail == "image 1 of 2: step 10/20"
    await service.task_completed(
        GenerationCompleted(
            task=first,
            images=[
                StagedImage(
                    index=0,
                    staging_key="k",
                    content_type="image/png",
                    width=8,
                    height=8,
                    size_bytes=1,
                )
            ],
        )
    )
    await service.task_progress(_tick(second, 0.5, "step 10/20"))
    assert published.statuses()[-1].job.progress.fraction == 0.75


async def test_late_or_stale_ticks_are_dropped(dispatch: tuple[DispatchService, Published]) -> None:
    service, published = dispatch
    first, second = await _generating_job(service, published, count=2)
    # A retryable failure moves the task to its next attempt: ticks of the old one are stale.
    await service.task_failed(
        GenerationFailed(task=first, error=ErrorInfo.of(ErrorClass.PROVIDER_UNAVAILABLE))
    )
    published.events.clear()
    await service.task_progress(_tick(first, 0.9, "late"))
    assert published.events == []
    # A cancelled (final) job takes no progress either.
    await service.cancel(second.job_id)
    published.events.clear()
    await service.task_progress(_tick(second, 0.9, "late"))
    assert published.events == []

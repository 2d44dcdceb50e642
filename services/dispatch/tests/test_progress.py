"""Provider progress becomes job status events at every tick, and is stored on the job at most
every couple of seconds so the job read by id shows it (issue 16, item 4)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from atelier_contracts.envelope import Event
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import (
    GenerationFailed,
    GenerationProgress,
    GenerationTask,
)
from atelier_contracts.jobs import JobStatusChanged
from atelier_contracts.subjects import job_status
from atelier_contracts.testing import job_enriched, job_requested, media_landed, profile_snapshot
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
    profile = profile_snapshot(provider="falai", model="fal-ai/flux/dev")
    request = job_requested(project="proj", profile=profile, count=count)
    await service.record_request(request)
    await service.dispatch_enriched(job_enriched(request))
    return published.tasks()


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


async def test_progress_becomes_a_status_event_and_is_stored_now_and_then(
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

    # The first report is stored at once: the job read by id shows it.
    after = await service.get_job(task.job_id)
    assert after is not None
    assert after.progress.detail == "queued at position 3" and after.progress.fraction is None
    assert after.status == stored.status and after.updated_at == stored.updated_at

    # Every tick is an event; within the store interval the row keeps the last stored one.
    await service.task_progress(_tick(task, 0.5, "running"))
    assert published.statuses()[-1].job.progress.fraction == 0.5
    again = await service.get_job(task.job_id)
    assert again is not None and again.progress.detail == "queued at position 3"

    service._progress.store_every_s = 0  # the interval has passed
    await service.task_progress(_tick(task, 0.75, "step 15/20"))
    later = await service.get_job(task.job_id)
    assert later is not None
    assert (later.progress.fraction, later.progress.detail) == (0.75, "step 15/20")

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
    # The first task's image landed: it counts whole.
    await service.images_landed(media_landed(first))
    await service.task_progress(_tick(second, 0.5, "step 10/20"))
    assert published.statuses()[-1].job.progress.fraction == 0.75


async def test_a_final_job_shows_no_progress_figure(
    dispatch: tuple[DispatchService, Published],
) -> None:
    service, published = dispatch
    [task] = await _generating_job(service, published, count=1)
    await service.task_progress(_tick(task, 0.5, "step 10/20"))
    await service.cancel(task.job_id)
    job = await service.get_job(task.job_id)
    assert job is not None
    assert job.progress.fraction is None and job.progress.detail is None


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

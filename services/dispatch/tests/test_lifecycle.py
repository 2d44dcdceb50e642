"""The job state machine on a real database, without a broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import event

from atelier_contracts.envelope import Event
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import (
    GenerationFailed,
    GenerationTask,
)
from atelier_contracts.jobs import (
    SHORT_TEXT_CHARS,
    JobEnriched,
    JobListQuery,
    JobListReply,
    JobReply,
    JobRequested,
    JobStatus,
    JobStatusChanged,
)
from atelier_contracts.media import MediaLanded
from atelier_contracts.subjects import job_finished
from atelier_contracts.testing import (
    job_enriched,
    job_requested,
    job_view,
    media_landed,
    profile_snapshot,
)
from atelier_database import Database
from atelier_dispatch.handover import task_seed
from atelier_dispatch.intake import JobNotRecordedYet, split_into_tasks
from atelier_dispatch.repository import TABLES
from atelier_dispatch.service import DispatchService


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Event, str]] = []

    async def __call__(self, event: Event, subject: str) -> None:
        self.events.append((event, subject))

    def tasks(self) -> list[GenerationTask]:
        return [e for e, _ in self.events if isinstance(e, GenerationTask)]

    def status_events(self) -> list[JobStatusChanged]:
        """Updates (`jobs.status.…`) and the outcome (`jobs.finished.…`), as watchers hear them."""
        return [e for e, _ in self.events if isinstance(e, JobStatusChanged)]

    def statuses(self) -> list[JobStatus]:
        return [e.job.status for e in self.status_events()]


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[tuple[DispatchService, Recorder]]:
    db = Database(database_url)
    await db.create_tables(TABLES)
    recorder = Recorder()
    yield DispatchService(db, recorder), recorder
    await db.dispose()


def _request(count: int = 2, provider: str = "offline", model: str = "sketch") -> JobRequested:
    profile = profile_snapshot(provider=provider, model=model)
    return job_requested(project="proj", profile=profile, count=count, options={"seed": 7})


def _enriched(request: JobRequested) -> JobEnriched:
    return job_enriched(request, prompt=request.prompt + "!")


def _landed(task: GenerationTask, index: int) -> MediaLanded:
    return media_landed(task, id=f"m-{task.task_id}-{index}", index=index)


def test_every_image_gets_its_own_seed() -> None:
    assert task_seed(7, "j.0", 0) == 7 and task_seed(7, "j.1", 1) == 8
    assert task_seed(None, "j.0", 0) != task_seed(None, "j.1", 1)
    assert task_seed(None, "j.0", 0) == task_seed(None, "j.0", 0)


def test_split_into_tasks() -> None:
    assert split_into_tasks(4, 1) == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert split_into_tasks(4, 10) == [(0, 4)]
    assert split_into_tasks(4, 3) == [(0, 3), (3, 1)]


async def test_happy_path_walks_every_stage(service: tuple[DispatchService, Recorder]) -> None:
    svc, rec = service
    request = _request(count=2)
    await svc.record_request(request)
    await svc.dispatch_enriched(_enriched(request))
    tasks = rec.tasks()
    assert [(t.first_index, t.n) for t in tasks] == [(0, 1), (1, 1)]
    assert tasks[0].prompt == "A lighthouse!"
    assert [t.seed for t in tasks] == [7, 8]  # a given seed varies per image
    for task in tasks:
        await svc.images_landed(_landed(task, task.first_index))
    job = await svc.get_job(request.job_id)
    assert job is not None
    assert job.status == JobStatus.COMPLETED
    assert [i.index for i in job.images] == [0, 1]
    assert job.progress.landed == 2 and job.progress.failed == 0
    # Only what a person sees (ADR 0018): being made, each image landed, the outcome. Recording
    # the job is silent (the 202 said queued); nothing for a task started or completed.
    statuses = [(e.job.status, e.job.progress.landed) for e in rec.status_events()]
    assert statuses == [
        (JobStatus.GENERATING, 0),
        (JobStatus.GENERATING, 1),
        (JobStatus.COMPLETED, 2),
    ]
    # The outcome goes out once, on jobs.finished only (watchers follow both subjects).
    finished = [(e, subject) for e, subject in rec.events if subject.startswith("jobs.finished.")]
    assert len(finished) == 1
    assert not any(
        isinstance(e, JobStatusChanged) and e.job.status == JobStatus.COMPLETED
        for e, subject in rec.events
        if subject.startswith("jobs.status.")
    )
    assert finished[0][1] == job_finished("proj", request.job_id)
    assert isinstance(finished[0][0], JobStatusChanged)
    assert finished[0][0].job.status == JobStatus.COMPLETED


async def test_long_texts_are_shortened_in_updates_and_listings_whole_elsewhere(
    service: tuple[DispatchService, Recorder],
) -> None:
    """A 32,000-character prompt would make every update, listing entry and outcome over 64 KiB
    (the assembled prompt is as long): they carry the start; the job by id has the whole texts,
    and its reply sends the assembled prompt as what follows the prompt (ADR 0018 addendum)."""
    svc, rec = service
    request = _request(count=1).model_copy(update={"prompt": "a" * 32_000})
    await svc.record_request(request)
    await svc.dispatch_enriched(_enriched(request))
    [update] = rec.status_events()
    assert update.job.status == JobStatus.GENERATING
    assert update.job.texts_shortened
    assert update.job.prompt == "a" * SHORT_TEXT_CHARS
    assert update.job.assembled_prompt == "a" * SHORT_TEXT_CHARS
    assert len(update.model_dump_json()) < 8 * 1024

    [listed] = await svc.list_jobs(JobListQuery(project="proj"))
    assert listed.texts_shortened and len(listed.prompt) == SHORT_TEXT_CHARS
    whole = await svc.get_job(request.job_id)
    assert whole is not None and not whole.texts_shortened
    assert whole.prompt == request.prompt and whole.assembled_prompt == request.prompt + "!"
    reply = JobReply.compact(whole)
    assert reply.job is not None and reply.job.assembled_prompt is None
    assert reply.assembled_after_prompt == "!"
    assert len(reply.model_dump_json()) < 40 * 1024
    assert JobReply.model_validate_json(reply.model_dump_json()).whole_job() == whole

    await svc.images_landed(_landed(rec.tasks()[0], 0))
    outcome = rec.status_events()[-1]
    assert outcome.job.status == JobStatus.COMPLETED
    assert outcome.job.texts_shortened and outcome.job.prompt == "a" * SHORT_TEXT_CHARS
    assert len(outcome.model_dump_json()) < 8 * 1024


async def test_a_listing_of_long_prompt_jobs_fits_one_nats_message(
    service: tuple[DispatchService, Recorder],
) -> None:
    svc, _ = service
    for _ in range(100):  # the most a listing asks for
        request = _request(count=1).model_copy(
            update={"job_id": str(uuid4()), "prompt": "\u00e9" * 32_000}  # two bytes each
        )
        await svc.record_request(request)
        await svc.dispatch_enriched(_enriched(request))
    jobs = await svc.list_jobs(JobListQuery(project="proj", limit=100))
    assert len(jobs) == 100
    assert len(JobListReply(jobs=jobs).model_dump_json().encode()) < 1_000_000


def test_short_texts_are_left_as_they_are() -> None:
    view = job_view(prompt="x" * SHORT_TEXT_CHARS)
    assert view.with_short_texts() is view


async def test_redelivered_events_change_nothing(service: tuple[DispatchService, Recorder]) -> None:
    svc, rec = service
    request = _request(count=1)
    await svc.record_request(request)
    await svc.dispatch_enriched(_enriched(request))
    await svc.dispatch_enriched(_enriched(request))  # redelivery: same task, same event id
    task_ids = {t.event_id for t in rec.tasks()}
    assert len(task_ids) == 1
    task = rec.tasks()[0]
    await svc.images_landed(_landed(task, 0))
    await svc.images_landed(_landed(task, 0))
    job = await svc.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.COMPLETED and len(job.images) == 1


async def test_an_outcome_whose_publish_failed_goes_out_on_the_redelivery(
    database_url: str,
) -> None:
    """The landing that ends a job commits, then its outcome's publish fails (a NATS node went
    away): the landing is redelivered, finds the job final, and must publish the outcome then,
    or the job is never settled. Any later message about the job repeats it, same id."""
    db = Database(database_url)
    await db.create_tables(TABLES)
    rec = Recorder()
    broken = {"finished": True}

    async def publish(event: Event, subject: str) -> None:
        if subject.startswith("jobs.finished.") and broken["finished"]:
            broken["finished"] = False
            raise ConnectionError("nats: no response from stream")
        await rec(event, subject)

    svc = DispatchService(db, publish)
    try:
        request = _request(count=1)
        await svc.record_request(request)
        await svc.dispatch_enriched(_enriched(request))
        task = rec.tasks()[0]
        with pytest.raises(ConnectionError):
            await svc.images_landed(_landed(task, 0))
        assert not [e for e, subject in rec.events if subject.startswith("jobs.finished.")]
        await svc.images_landed(_landed(task, 0))  # the redelivery
        await svc.cancel(request.job_id)  # a late cancel of the finished job
        finished = [e for e, subject in rec.events if subject.startswith("jobs.finished.")]
        assert [e.job.status for e in finished] == [JobStatus.COMPLETED] * 2
        assert len({e.event_id for e in finished}) == 1  # JetStream stores it once
    finally:
        await db.dispose()


async def test_enriched_before_requested_still_works(
    service: tuple[DispatchService, Recorder],
) -> None:
    svc, rec = service
    request = _request(count=1)
    # jobs.enriched no longer carries the request (ADR 0018): before dispatch recorded it, the
    # enrichment fails and is redelivered (with backoff) until it has.
    with pytest.raises(JobNotRecordedYet):
        await svc.dispatch_enriched(_enriched(request))
    assert rec.tasks() == []
    await svc.record_request(request)
    await svc.dispatch_enriched(_enriched(request))
    job = await svc.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.GENERATING
    assert len(rec.tasks()) == 1


async def test_some_failed_is_partial_all_failed_is_failed(
    service: tuple[DispatchService, Recorder],
) -> None:
    svc, rec = service
    request = _request(count=2)
    await svc.record_request(request)
    await svc.dispatch_enriched(_enriched(request))
    first, second = rec.tasks()
    await svc.images_landed(_landed(first, 0))
    blocked = ErrorInfo.of(ErrorClass.CONTENT_BLOCKED)
    await svc.task_failed(GenerationFailed(task=second, error=blocked))
    job = await svc.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.PARTIAL
    assert job.error is not None and job.error.error_class == ErrorClass.CONTENT_BLOCKED

    other = _request(count=1)
    await svc.record_request(other)
    await svc.dispatch_enriched(_enriched(other))
    await svc.task_failed(GenerationFailed(task=rec.tasks()[-1], error=blocked))
    failed = await svc.get_job(other.job_id)
    assert failed is not None and failed.status == JobStatus.FAILED
    assert failed.error is not None and failed.error.message


async def test_overdue_jobs_end_with_a_reason(service: tuple[DispatchService, Recorder]) -> None:
    svc, _ = service
    request = _request(count=1)
    await svc.record_request(request)
    await svc.dispatch_enriched(_enriched(request))
    ended = await svc.end_overdue_jobs(now=datetime.now(UTC) + timedelta(days=1))
    assert ended == 1
    job = await svc.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.FAILED
    assert job.error is not None and job.error.error_class == ErrorClass.TIMEOUT


async def test_openai_jobs_go_out_as_one_call(service: tuple[DispatchService, Recorder]) -> None:
    svc, rec = service
    request = _request(count=4, provider="openai", model="gpt-image-1")
    await svc.record_request(request)
    await svc.dispatch_enriched(_enriched(request))
    sent = [(e.n, subject) for e, subject in rec.events if isinstance(e, GenerationTask)]
    assert sent == [(4, "gen.openai.requested")]


# record_request 2 (read; insert) · dispatch_enriched 3 (read; update job, insert tasks) ·
# images_landed 6 (read job, tasks, images; insert images, update task, update job). Nothing for a
# task started or completed (ADR 0018).
STATEMENTS_PER_JOB = 11


async def test_a_job_costs_a_bounded_number_of_statements(
    service: tuple[DispatchService, Recorder],
) -> None:
    """A guard against what once made dispatch CPU-bound: the ORM's autoflushes, re-reads and
    one statement per changed object. Counted on the real engine, never timed."""
    svc, rec = service

    async def one_job() -> None:
        request = _request(count=1)
        await svc.record_request(request)
        await svc.dispatch_enriched(_enriched(request))
        task = rec.tasks()[-1]
        await svc.images_landed(_landed(task, 0))

    await one_job()  # a first connection's set-up statements are not the job's
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = svc.db.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        await one_job()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert rec.statuses()[-1] == JobStatus.COMPLETED
    assert len(statements) <= STATEMENTS_PER_JOB, "\n".join(statements)

"""Dispatch's subscribers on FastStream's in-memory broker: each test publishes the contract
message to its subject and checks what the handler published and what it stored (the real
repository, on a SQLite file)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import GenerationFailed, GenerationProgress, GenerationTask
from atelier_contracts.jobs import (
    CancelJobCommand,
    JobEnriched,
    JobListQuery,
    JobListReply,
    JobQuery,
    JobReply,
    JobRequested,
    JobStatus,
    JobStatusChanged,
)
from atelier_contracts.subjects import MAX_DELIVERIES_ADVISORY, Subject, gen_requested
from atelier_contracts.testing import QUERY_TIMEOUT_S, job_enriched, job_requested, media_landed
from atelier_dispatch import handlers
from atelier_dispatch.dead_letter import MaxDeliveriesAdvisory
from atelier_dispatch.main import create_app
from atelier_dispatch.repository import TABLES
from atelier_dispatch.service import DispatchService
from atelier_dispatch.settings import Settings
from atelier_messaging import stream_for_subject

PROJECT = "proj"


@dataclass
class Heard:
    """What dispatch published, as the subscribers of its subjects receive it."""

    tasks: list[GenerationTask] = field(default_factory=list)
    updates: list[JobStatusChanged] = field(default_factory=list)
    outcomes: list[JobStatusChanged] = field(default_factory=list)


@dataclass
class Dispatch:
    broker: NatsBroker
    service: DispatchService
    heard: Heard
    cancel_marks: list[str]


@pytest.fixture
async def dispatch(tmp_path: Path) -> AsyncIterator[Dispatch]:
    settings = Settings(
        run_startup_hooks=False, database_url=f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}"
    )
    app = create_app(settings)
    broker: NatsBroker = app.state.broker
    service: DispatchService = app.state.service
    await app.state.db.create_tables(TABLES)
    # The cancel marks live in a key-value bucket, which the in-memory broker does not have.
    cancel_marks: list[str] = []

    async def mark_cancelled(job_id: str) -> None:
        cancel_marks.append(job_id)

    service.mark_cancelled = mark_cancelled
    heard = Heard()
    tasks_subject = gen_requested("offline")

    @broker.subscriber(tasks_subject, stream=stream_for_subject(tasks_subject).name)
    async def task_requested(task: GenerationTask) -> None:
        heard.tasks.append(task)

    status_subject = f"jobs.status.{PROJECT}.*"

    @broker.subscriber(status_subject, stream=stream_for_subject(status_subject).name)
    async def status_changed(event: JobStatusChanged) -> None:
        heard.updates.append(event)

    finished_subject = f"jobs.finished.{PROJECT}.*"

    @broker.subscriber(finished_subject, stream=stream_for_subject(finished_subject).name)
    async def job_finished(event: JobStatusChanged) -> None:
        heard.outcomes.append(event)

    async with TestNatsBroker(broker):
        yield Dispatch(broker, service, heard, cancel_marks)
    await app.state.db.dispose()


def _request(count: int = 1) -> JobRequested:
    return job_requested(project=PROJECT, count=count)


def _enriched(request: JobRequested) -> JobEnriched:
    return job_enriched(request, prompt=request.prompt + "!")


async def _generating(dispatch: Dispatch, count: int = 1) -> JobRequested:
    request = _request(count)
    await dispatch.broker.publish(request, Subject.JOBS_REQUESTED)
    await dispatch.broker.publish(_enriched(request), Subject.JOBS_ENRICHED)
    return request


async def _status(dispatch: Dispatch, job_id: str) -> JobStatus:
    job = await dispatch.service.get_job(job_id)
    assert job is not None
    return job.status


async def test_a_requested_job_is_recorded_without_a_status_event(dispatch: Dispatch) -> None:
    request = _request()
    await dispatch.broker.publish(request, Subject.JOBS_REQUESTED)
    assert await _status(dispatch, request.job_id) == JobStatus.ENRICHING
    assert dispatch.heard == Heard()


async def test_an_enriched_job_is_split_into_tasks_and_announced(dispatch: Dispatch) -> None:
    request = await _generating(dispatch, count=2)
    assert [(t.job_id, t.first_index, t.prompt) for t in dispatch.heard.tasks] == [
        (request.job_id, 0, "A lighthouse!"),
        (request.job_id, 1, "A lighthouse!"),
    ]
    assert [e.job.status for e in dispatch.heard.updates] == [JobStatus.GENERATING]
    assert await _status(dispatch, request.job_id) == JobStatus.GENERATING


async def test_an_enrichment_ahead_of_its_request_waits_for_it(dispatch: Dispatch) -> None:
    """Nakked for another look shortly, not failed: nothing is published or stored."""
    request = _request()
    await dispatch.broker.publish(_enriched(request), Subject.JOBS_ENRICHED)
    assert dispatch.heard == Heard()
    assert await dispatch.service.get_job(request.job_id) is None


async def test_landed_images_complete_the_job(dispatch: Dispatch) -> None:
    request = await _generating(dispatch)
    await dispatch.broker.publish(media_landed(dispatch.heard.tasks[0]), Subject.MEDIA_LANDED)
    [outcome] = dispatch.heard.outcomes
    assert outcome.job.status == JobStatus.COMPLETED
    assert [i.media_id for i in outcome.job.images] == [f"m-{request.job_id}.0"]
    assert await _status(dispatch, request.job_id) == JobStatus.COMPLETED


async def test_a_task_that_failed_for_good_fails_the_job(dispatch: Dispatch) -> None:
    request = await _generating(dispatch)
    error = ErrorInfo.of(ErrorClass.CONTENT_BLOCKED, "refused")
    failed = GenerationFailed(task=dispatch.heard.tasks[0], error=error)
    await dispatch.broker.publish(failed, Subject.GEN_FAILED)
    [outcome] = dispatch.heard.outcomes
    assert outcome.job.status == JobStatus.FAILED
    assert outcome.job.error is not None
    assert outcome.job.error.error_class == ErrorClass.CONTENT_BLOCKED
    assert await _status(dispatch, request.job_id) == JobStatus.FAILED


async def test_provider_progress_becomes_a_status_update(dispatch: Dispatch) -> None:
    await _generating(dispatch)
    task = dispatch.heard.tasks[0]
    progress = GenerationProgress(
        task_id=task.task_id,
        job_id=task.job_id,
        project=task.project,
        provider="offline",
        attempt=task.attempt,
        fraction=0.5,
        detail="halfway",
    )
    await dispatch.broker.publish(progress, Subject.GEN_PROGRESS)
    update = dispatch.heard.updates[-1]
    assert (update.job.progress.fraction, update.job.progress.detail) == (0.5, "halfway")


async def test_a_cancel_ends_the_job_and_answers_with_it(dispatch: Dispatch) -> None:
    request = await _generating(dispatch)
    command = CancelJobCommand(job_id=request.job_id, requested_by="u1")
    response = await dispatch.broker.request(command, Subject.JOBS_CANCEL, timeout=QUERY_TIMEOUT_S)
    reply = JobReply.model_validate_json(response.body)
    assert reply.job is not None and reply.job.status == JobStatus.CANCELLED
    assert [e.job.status for e in dispatch.heard.outcomes] == [JobStatus.CANCELLED]
    assert dispatch.cancel_marks == [request.job_id]  # workers and media stop on the mark


async def test_a_job_is_answered_by_id(dispatch: Dispatch) -> None:
    request = await _generating(dispatch)
    response = await dispatch.broker.request(
        JobQuery(job_id=request.job_id), Subject.JOBS_GET, timeout=QUERY_TIMEOUT_S
    )
    reply = JobReply.model_validate_json(response.body)
    assert reply.job is not None
    assert (reply.job.id, reply.job.status) == (request.job_id, JobStatus.GENERATING)
    unknown = await dispatch.broker.request(
        JobQuery(job_id="nobody"), Subject.JOBS_GET, timeout=QUERY_TIMEOUT_S
    )
    assert JobReply.model_validate_json(unknown.body).job is None


async def test_a_project_s_jobs_are_listed(dispatch: Dispatch) -> None:
    first = await _generating(dispatch)
    second = await _generating(dispatch)
    response = await dispatch.broker.request(
        JobListQuery(project=PROJECT), Subject.JOBS_LIST, timeout=QUERY_TIMEOUT_S
    )
    listed = JobListReply.model_validate_json(response.body).jobs
    assert {job.id for job in listed} == {first.job_id, second.job_id}


class OneStoredTask:
    """JetStream's side of the dead-letter path (`dead_letter.StoredMessages`): the task message
    a worker ran out of deliveries on."""

    def __init__(self, task: GenerationTask) -> None:
        self.stored: tuple[str, bytes] | None = (
            gen_requested(task.profile.provider),
            task.model_dump_json().encode(),
        )

    async def fetch(self, stream: str, seq: int) -> tuple[str, bytes] | None:
        return self.stored

    async def delete(self, stream: str, seq: int) -> None:
        self.stored = None

    async def handled_by_others(self, stream: str, seq: int, subject: str, consumer: str) -> bool:
        return True


# The in-memory broker's connection is a mock: the JetStream context the handler asks it for
# is never used (the stored messages are `OneStoredTask`), so never awaited.
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
async def test_a_task_out_of_deliveries_fails_its_job(
    dispatch: Dispatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = await _generating(dispatch)
    dispatch.service.max_attempts = 1  # no retry left: the job ends with the task
    stored = OneStoredTask(dispatch.heard.tasks[0])
    monkeypatch.setattr(handlers, "JetStreamMessages", lambda js: stored)
    advisory = MaxDeliveriesAdvisory(
        stream="ATELIER_TASKS", consumer="worker-offline", stream_seq=1, deliveries=5
    )
    await dispatch.broker.publish(advisory, MAX_DELIVERIES_ADVISORY)
    [outcome] = dispatch.heard.outcomes
    assert outcome.job.status == JobStatus.FAILED
    assert await _status(dispatch, request.job_id) == JobStatus.FAILED
    assert stored.stored is None  # the work queue would keep it forever

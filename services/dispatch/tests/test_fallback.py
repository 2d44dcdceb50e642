"""A task whose provider is unavailable after its retries moves along the job's fallback chain;
a failure of the request never does (issue 16, item 1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from atelier_contracts.envelope import Event
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import GenerationFailed, GenerationTask
from atelier_contracts.jobs import (
    AssembledPrompt,
    FallbackPlan,
    JobRequested,
    JobStatus,
    ReferenceImageRef,
)
from atelier_contracts.profiles import ProfileSnapshot
from atelier_contracts.testing import job_enriched, job_requested, media_landed, profile_snapshot
from atelier_database import Database
from atelier_dispatch.repository import TABLES
from atelier_dispatch.service import DispatchService


class Sent:
    def __init__(self) -> None:
        self.events: list[tuple[Event, str]] = []

    async def __call__(self, event: Event, subject: str) -> None:
        self.events.append((event, subject))

    def tasks(self) -> list[tuple[GenerationTask, str]]:
        return [(e, s) for e, s in self.events if isinstance(e, GenerationTask)]


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[tuple[DispatchService, Sent]]:
    db = Database(database_url)
    await db.create_tables(TABLES)
    sent = Sent()
    # Retries due at once: the sweeper is called by hand below.
    yield DispatchService(db, sent, retry_base_s=0.0001), sent
    await db.dispose()


def _profile(pid: str, provider: str, cost: float) -> ProfileSnapshot:
    return profile_snapshot(id=pid, name=f"Profile {pid}", provider=provider, credit_cost=cost)


def _request(*chain: FallbackPlan) -> JobRequested:
    return job_requested(
        profile=_profile("A", "openai", 1),
        size="1000x1000",
        options={"style": "vivid", "quality": "high"},
        fallbacks=list(chain),
    )


PLAN_B = FallbackPlan(
    profile=_profile("B", "stability", 2),
    size="1024x1024",
    options={"quality": "high"},
    notes=["Profile 'Profile B' has no option 'style': left out."],
)
PLAN_C = FallbackPlan(profile=_profile("C", "falai", 3), size="1024x1024")


async def _start(service: DispatchService, request: JobRequested) -> None:
    await service.record_request(request)
    await service.dispatch_enriched(job_enriched(request))


async def _fail(service: DispatchService, task: GenerationTask, error_class: ErrorClass) -> None:
    await service.task_failed(GenerationFailed(task=task, error=ErrorInfo.of(error_class)))
    await service.send_due_retries(datetime(2100, 1, 1, tzinfo=UTC))


async def test_an_unavailable_provider_falls_back_after_its_retries(
    service: tuple[DispatchService, Sent],
) -> None:
    svc, sent = service
    request = _request(PLAN_B)
    await _start(svc, request)
    for _ in range(3):  # the three attempts of A
        task, subject = sent.tasks()[-1]
        assert subject == "gen.openai.requested" and task.profile.id == "A"
        await _fail(svc, task, ErrorClass.PROVIDER_UNAVAILABLE)

    task, subject = sent.tasks()[-1]
    assert subject == "gen.stability.requested"
    assert task.profile.id == "B" and task.attempt == 4  # its own event id
    assert task.size == "1024x1024" and task.options == {"quality": "high"}
    await svc.images_landed(media_landed(task))

    job = await svc.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.COMPLETED
    [image] = job.images
    assert (image.profile_id, image.profile_name, image.credit_cost) == ("B", "Profile B", 2)
    assert image.fallback_reason is not None
    assert "'Profile A' (openai) failed after 3 attempts: provider_unavailable" in (
        image.fallback_reason
    )
    assert "no option 'style'" in image.fallback_reason


async def test_the_fallback_gets_its_own_retries_then_the_next_one(
    service: tuple[DispatchService, Sent],
) -> None:
    svc, sent = service
    request = _request(PLAN_B, PLAN_C)
    await _start(svc, request)
    # A key the provider refuses is not retried: it falls back at once.
    await _fail(svc, sent.tasks()[-1][0], ErrorClass.AUTH)
    for _ in range(3):
        task, subject = sent.tasks()[-1]
        assert subject == "gen.stability.requested"
        await _fail(svc, task, ErrorClass.TIMEOUT)
    task, subject = sent.tasks()[-1]
    assert subject == "gen.falai.requested" and task.profile.id == "C"
    # The end of the chain: C's failures fail the job.
    for _ in range(3):
        await _fail(svc, sent.tasks()[-1][0], ErrorClass.PROVIDER_UNAVAILABLE)
    job = await svc.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.FAILED
    assert len(sent.tasks()) == 1 + 3 + 3


@pytest.mark.parametrize(
    "error_class",
    [ErrorClass.CONTENT_BLOCKED, ErrorClass.INVALID_REQUEST, ErrorClass.QUOTA_EXHAUSTED],
)
async def test_a_failure_of_the_request_never_falls_back(
    service: tuple[DispatchService, Sent], error_class: ErrorClass
) -> None:
    svc, sent = service
    request = _request(PLAN_B)
    await _start(svc, request)
    await _fail(svc, sent.tasks()[-1][0], error_class)
    job = await svc.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.FAILED
    assert [s for _, s in sent.tasks()] == ["gen.openai.requested"]


async def test_images_of_the_jobs_own_profile_say_so(
    service: tuple[DispatchService, Sent],
) -> None:
    svc, sent = service
    request = _request(PLAN_B)
    await _start(svc, request)
    await svc.images_landed(media_landed(sent.tasks()[-1][0]))
    job = await svc.get_job(request.job_id)
    assert job is not None
    [image] = job.images
    assert (image.profile_id, image.credit_cost, image.fallback_reason) == ("A", 1, None)


async def test_reference_images_past_the_fallbacks_maximum_are_left_out_with_a_reason(
    service: tuple[DispatchService, Sent],
) -> None:
    # Nothing is dropped without a word: the job's assembly sent three pictures to A; B takes one.
    svc, sent = service
    plan = PLAN_B.model_copy(
        update={"profile": PLAN_B.profile.model_copy(update={"max_reference_images": 1})}
    )
    request = _request(plan)
    references = [
        ReferenceImageRef(
            staging_key=f"refs/{n}.png", content_type="image/png", width=8, height=8, size_bytes=9
        )
        for n in range(3)
    ]
    await svc.record_request(request)
    await svc.dispatch_enriched(
        job_enriched(request, assembled=AssembledPrompt(prompt="A", reference_images=references))
    )
    assert len(sent.tasks()[-1][0].reference_images) == 3
    await _fail(svc, sent.tasks()[-1][0], ErrorClass.AUTH)  # falls back at once
    task, _ = sent.tasks()[-1]
    assert task.profile.id == "B"
    assert [r.staging_key for r in task.reference_images] == ["refs/0.png"]
    await svc.images_landed(media_landed(task))
    job = await svc.get_job(request.job_id)
    assert job is not None
    [image] = job.images
    assert image.fallback_reason is not None
    assert (
        "Profile 'Profile B' takes at most 1 reference image: 2 of the 3 sent with this request "
        "were left out." in image.fallback_reason
    )

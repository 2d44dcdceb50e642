"""What a job shows of its assembled prompt: the reference images sent and the ones left out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from atelier_contracts.envelope import Event
from atelier_contracts.jobs import (
    AssembledPrompt,
    ExcludedImage,
    JobRequested,
    JobStatusChanged,
    ReferenceImageRef,
    SentReferenceImage,
)
from atelier_contracts.testing import job_enriched, job_requested, profile_snapshot
from atelier_database import Database
from atelier_dispatch.repository import TABLES
from atelier_dispatch.service import DispatchService


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[tuple[DispatchService, list[Event]]]:
    db = Database(database_url)
    await db.create_tables(TABLES)
    published: list[Event] = []

    async def publish(event: Event, subject: str) -> None:
        published.append(event)

    yield DispatchService(db, publish), published
    await db.dispose()


def _request() -> JobRequested:
    refs = profile_snapshot(
        name="Refs", provider="openai", model="gpt-image-1", max_reference_images=1
    )
    return job_requested(profile=refs, prompt="A harbour")


async def test_the_job_shows_which_reference_images_were_sent_and_which_were_not(
    service: tuple[DispatchService, list[Event]],
) -> None:
    svc, published = service
    request = _request()
    await svc.record_request(request)
    before = await svc.get_job(request.job_id)
    assert before is not None
    assert before.reference_images == [] and before.excluded_images == []

    sent = ReferenceImageRef(
        staging_key=f"refs/{request.job_id}/0.png",
        content_type="image/png",
        width=96,
        height=64,
        size_bytes=1234,
        element_id="mara",
        source="media",
        media_id="m-1",
    )
    left_out = ExcludedImage(element_id="harbour", reason="Over the maximum: Refs takes at most 1.")
    assembled = AssembledPrompt(
        prompt="A harbour. Context: ...", reference_images=[sent], excluded_images=[left_out]
    )
    await svc.dispatch_enriched(job_enriched(request, assembled=assembled))

    job = await svc.get_job(request.job_id)
    assert job is not None
    assert job.reference_images == [
        SentReferenceImage(
            element_id="mara",
            source="media",
            media_id="m-1",
            content_type="image/png",
            width=96,
            height=64,
            size_bytes=1234,
        )
    ]
    assert job.excluded_images == [left_out]
    # Status events carry the same view, so SSE clients see it too; the key stays internal.
    last = [e for e in published if isinstance(e, JobStatusChanged)][-1]
    assert last.job.reference_images == job.reference_images
    assert "staging_key" not in last.job.model_dump_json()

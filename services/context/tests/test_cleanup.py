"""A final job's staged reference images are deleted: handlers on FastStream's in-memory broker,
the staging bucket on a real SeaweedFS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from atelier_context.main import create_app
from atelier_context.settings import Settings
from atelier_contracts.jobs import (
    ContextElement,
    ElementImage,
    GenerationContext,
    JobRequested,
    JobStatus,
    JobStatusChanged,
)
from atelier_contracts.subjects import Subject, job_finished
from atelier_contracts.testing import job_requested, job_view, profile_snapshot
from atelier_devstack import S3Info
from atelier_storage import ObjectStore

pytestmark = pytest.mark.integration  # a real SeaweedFS

PROJECT = "proj-1"
REFS = profile_snapshot(
    name="Refs model", provider="openai", model="gpt-image-1", max_reference_images=2
)


@pytest.fixture
def store(seaweed: S3Info) -> ObjectStore:
    return ObjectStore(
        seaweed.endpoint, seaweed.access_key, seaweed.secret_key, region=seaweed.region
    )


@pytest.fixture
async def staging(store: ObjectStore) -> str:
    bucket = f"staging-{uuid.uuid4().hex[:12]}"
    await store.ensure_bucket(bucket)
    return bucket


@pytest.fixture
async def broker(seaweed: S3Info, staging: str) -> AsyncIterator[NatsBroker]:
    settings = Settings(
        environment="test",
        run_startup_hooks=False,
        s3_endpoint=seaweed.endpoint,
        s3_access_key=seaweed.access_key,
        s3_secret_key=seaweed.secret_key,
        staging_bucket=staging,
        reference_max_side=64,
    )
    app = create_app(settings)
    broker: NatsBroker = app.state.broker
    async with TestNatsBroker(broker), app.router.lifespan_context(app):
        yield broker


def keys(store: ObjectStore, bucket: str, prefix: str = "refs/") -> list[str]:
    objects = store.client.list_objects(bucket, prefix=prefix, recursive=True)
    return sorted(o.object_name for o in objects if o.object_name)


def requested(job_id: str, data_url: str) -> JobRequested:
    elements = [
        ContextElement(id=name, name=name.title(), image=ElementImage(data_url=data_url))
        for name in ("mara", "harbour")
    ]
    return job_requested(
        job_id=job_id,
        project=PROJECT,
        profile=REFS,
        prompt="A harbour at dusk",
        context=GenerationContext(elements=elements),
    )


def status(job_id: str, value: JobStatus, assembled_prompt: str | None = None) -> JobStatusChanged:
    view = job_view(
        id=job_id,
        project=PROJECT,
        profile=REFS,
        status=value,
        prompt="A harbour at dusk",
        assembled_prompt=assembled_prompt,
    )
    return JobStatusChanged(job=view)


async def test_a_final_status_deletes_the_jobs_staged_references_and_nothing_else(
    broker: NatsBroker,
    store: ObjectStore,
    staging: str,
    image_bytes: Callable[..., bytes],
    data_url: Callable[..., str],
) -> None:
    picture = data_url(image_bytes(80, 60))
    job, neighbour = "job-a", "job-ab"  # a prefix of the other's id: must not be touched
    for job_id in (job, neighbour):
        await broker.publish(requested(job_id, picture), Subject.JOBS_REQUESTED)
    assert keys(store, staging) == [
        "refs/job-a/0.png",
        "refs/job-a/1.png",
        "refs/job-ab/0.png",
        "refs/job-ab/1.png",
    ]

    # Not final (never published on jobs.finished, ignored if it were): the worker may need them.
    for running in (JobStatus.ENRICHING, JobStatus.DISPATCHED, JobStatus.GENERATING):
        await broker.publish(status(job, running), job_finished(PROJECT, job))
    assert len(keys(store, staging, f"refs/{job}/")) == 2

    await broker.publish(status(job, JobStatus.COMPLETED), job_finished(PROJECT, job))
    assert keys(store, staging) == ["refs/job-ab/0.png", "refs/job-ab/1.png"]

    # A repeated final event (redelivery) finds nothing and is fine.
    await broker.publish(status(job, JobStatus.COMPLETED), job_finished(PROJECT, job))

    for final in (JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED):
        await store.put_bytes(staging, f"refs/{final}/0.png", b"x", "image/png")
        await broker.publish(status(final, final), job_finished(PROJECT, final))
        assert keys(store, staging, f"refs/{final}/") == []
    assert keys(store, staging) == ["refs/job-ab/0.png", "refs/job-ab/1.png"]


async def test_a_job_enriched_without_reference_images_costs_no_listing(
    broker: NatsBroker, store: ObjectStore, staging: str
) -> None:
    # Enriched (an assembled prompt) with no reference images sent: nothing was staged, so the
    # handler does not even list the prefix; what sits there was not put by this job.
    await store.put_bytes(staging, "refs/plain/0.png", b"x", "image/png")
    finished = status("plain", JobStatus.COMPLETED, assembled_prompt="A harbour at dusk")
    await broker.publish(finished, job_finished(PROJECT, "plain"))
    assert keys(store, staging, "refs/plain/") == ["refs/plain/0.png"]


async def test_remove_prefix_counts_and_refuses_an_empty_prefix(
    store: ObjectStore, staging: str
) -> None:
    for key in ("refs/j1/0.png", "refs/j1/1.jpg", "refs/j10/0.png"):
        await store.put_bytes(staging, key, b"x", "image/png")
    assert await store.remove_prefix(staging, "refs/j1/") == 2
    assert await store.remove_prefix(staging, "refs/j1/") == 0
    assert keys(store, staging) == ["refs/j10/0.png"]
    with pytest.raises(ValueError):
        await store.remove_prefix(staging, "")


async def test_list_pages_pages_everything_and_remove_many_deletes_exactly_those_keys(
    store: ObjectStore, staging: str
) -> None:
    written = [f"refs/j{n}/0.png" for n in range(5)]
    for key in written:
        await store.put_bytes(staging, key, b"x", "image/png")
    pages = [page async for page in store.list_pages(staging, "refs/", page_size=2)]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [o.key for page in pages for o in page] == written
    assert all(o.last_modified is not None for page in pages for o in page)
    assert [page async for page in store.list_pages(staging, "previews/")] == []

    # A key already gone is no error; nothing else is touched.
    assert await store.remove_many(staging, ["refs/j1/0.png", "refs/j3/0.png", "refs/gone"]) == 3
    assert keys(store, staging) == ["refs/j0/0.png", "refs/j2/0.png", "refs/j4/0.png"]
    assert await store.remove_many(staging, []) == 0
    with pytest.raises(ValueError):
        [page async for page in store.list_pages(staging, "")]

"""A request's inputs staged by the gateway (ADR 0017): slots, reading them with the same checks
as a data URL, their clean-up. Handlers on FastStream's in-memory broker, the staging bucket on a
real SeaweedFS, the uploads through the presigned URLs context hands out."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from atelier_context.inputs import StagedInputs
from atelier_context.main import create_app
from atelier_context.settings import Settings
from atelier_contracts.jobs import (
    ContextElement,
    ContextPreviewQuery,
    ContextPreviewReply,
    ElementImage,
    GenerationContext,
    JobEnriched,
    JobRequested,
    JobStatus,
    JobStatusChanged,
    SendToggles,
    SentReferenceImage,
)
from atelier_contracts.staging import (
    InputSlot,
    InputSlotsReply,
    InputSlotsRequest,
    StagedInput,
)
from atelier_contracts.subjects import Subject, job_finished
from atelier_contracts.testing import job_requested, job_view, profile_snapshot
from atelier_devstack import S3Info
from atelier_storage import ObjectStore

pytestmark = pytest.mark.integration  # a real SeaweedFS

PROJECT = "proj-1"
PROFILE = profile_snapshot(
    name="Refs model", provider="openai", model="gpt-image-1", max_reference_images=4
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
def enriched() -> list[JobEnriched]:
    return []


@pytest.fixture
async def broker(
    seaweed: S3Info, staging: str, enriched: list[JobEnriched]
) -> AsyncIterator[NatsBroker]:
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

    @broker.subscriber(Subject.JOBS_ENRICHED, stream="ATELIER_JOBS")
    async def capture(event: JobEnriched) -> None:
        enriched.append(event)

    async with TestNatsBroker(broker), app.router.lifespan_context(app):
        yield broker


def keys(store: ObjectStore, bucket: str, prefix: str) -> list[str]:
    objects = store.client.list_objects(bucket, prefix=prefix, recursive=True)
    return sorted(o.object_name for o in objects if o.object_name)


async def slots(broker: NatsBroker, job_id: str | None, count: int) -> list[InputSlot]:
    response = await broker.request(
        InputSlotsRequest(job_id=job_id, count=count), Subject.CONTEXT_INPUT_SLOTS, timeout=10
    )
    return InputSlotsReply.model_validate_json(response.body).slots


async def put(slot: InputSlot, data: bytes, content_type: str) -> StagedInput:
    """What the gateway does: PUT the bytes to the presigned URL, describe them in the event."""
    async with httpx.AsyncClient() as client:
        response = await client.put(
            slot.put_url, content=data, headers={"Content-Type": content_type}
        )
    assert response.is_success, response.text
    return StagedInput(
        key=slot.key,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=content_type,
    )


def element(name: str, staged: StagedInput, *, send: bool = True) -> ContextElement:
    return ContextElement(
        id=name,
        name=name.title(),
        image=ElementImage(staged=staged),
        send=SendToggles(image=send),
    )


def requested(job_id: str, elements: list[ContextElement], **fields: object) -> JobRequested:
    return job_requested(
        job_id=job_id,
        project=PROJECT,
        profile=PROFILE,
        prompt="A harbour at dusk",
        context=GenerationContext(elements=elements),
        **fields,
    )


def finished(job: JobEnriched) -> JobStatusChanged:
    view = job_view(
        id=job.job_id,
        project=PROJECT,
        profile=PROFILE,
        status=JobStatus.COMPLETED,
        prompt="A harbour at dusk",
        assembled_prompt=job.assembled.prompt,
        reference_images=[
            SentReferenceImage.model_validate(r, from_attributes=True)
            for r in job.assembled.reference_images
        ],
        excluded_images=job.assembled.excluded_images,
        created_at=job.occurred_at,
        updated_at=job.occurred_at,
    )
    return JobStatusChanged(job=view)


async def test_a_staged_picture_is_sent_like_a_data_url_and_cleared_with_the_job(
    broker: NatsBroker,
    enriched: list[JobEnriched],
    store: ObjectStore,
    staging: str,
    image_bytes: Callable[..., bytes],
) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"
    slot, second = await slots(broker, job, 2)
    assert (slot.key, second.key) == (f"refs/{job}/in/0", f"refs/{job}/in/1")
    staged = await put(slot, image_bytes(80, 60), "image/png")

    await broker.publish(requested(job, [element("mara", staged)]), Subject.JOBS_REQUESTED)

    [event] = enriched
    [reference] = event.assembled.reference_images
    assert (reference.source, reference.element_id) == ("data_url", "mara")
    assert (reference.width, reference.height) == (64, 48)  # downscaled to reference_max_side
    assert keys(store, staging, f"refs/{job}/") == [f"refs/{job}/0.png", f"refs/{job}/in/0"]

    await broker.publish(finished(event), job_finished(PROJECT, job))
    assert keys(store, staging, f"refs/{job}/") == []


async def test_a_staged_picture_gets_the_same_checks_and_only_its_own_slots_are_read(
    broker: NatsBroker,
    enriched: list[JobEnriched],
    store: ObjectStore,
    staging: str,
    image_bytes: Callable[..., bytes],
) -> None:
    job, other = f"job-{uuid.uuid4().hex[:8]}", f"job-{uuid.uuid4().hex[:8]}"
    [theirs] = await slots(broker, other, 1)
    foreign = await put(theirs, image_bytes(80, 60), "image/png")
    mine = await slots(broker, job, 3)
    not_an_image = await put(mine[0], b"GIF89a not really", "image/gif")
    tampered = await put(mine[1], image_bytes(80, 60), "image/png")
    tampered = tampered.model_copy(update={"sha256": "0" * 64})
    never_put = StagedInput(key=mine[2].key, size_bytes=10, sha256="1" * 64, content_type="x/y")

    elements = [
        element("foreign", foreign),
        element("gif", not_an_image),
        element("tampered", tampered),
        element("gone", never_put),
    ]
    await broker.publish(requested(job, elements), Subject.JOBS_REQUESTED)

    [event] = enriched
    assert event.assembled.reference_images == []
    reasons = {e.element_id: e.reason for e in event.assembled.excluded_images}
    assert reasons == {
        "foreign": "The picture was not staged for this request.",
        "gif": "This is not an image Atelier can send: use PNG, JPEG or WebP.",
        "tampered": "The staged picture does not match what was sent.",
        "gone": "The picture is no longer in staging; it was not sent.",
    }
    # Nothing was sent, but pictures were staged: the final status still clears them.
    await broker.publish(finished(event), job_finished(PROJECT, job))
    assert keys(store, staging, f"refs/{job}/") == []
    assert keys(store, staging, f"refs/{other}/") == [f"refs/{other}/in/0"]


async def test_a_switched_off_picture_is_withheld_and_excluded_with_its_reason(
    broker: NatsBroker, enriched: list[JobEnriched]
) -> None:
    hidden = ContextElement(
        id="hidden",
        name="Hidden",
        image=ElementImage(withheld=True),
        send=SendToggles(image=False),
    )
    await broker.publish(requested("job-withheld", [hidden]), Subject.JOBS_REQUESTED)
    [event] = enriched
    [excluded] = event.assembled.excluded_images
    assert excluded.reason == "Not sent: the image is switched off for this element."


async def test_a_staged_context_is_read_then_deleted_once_the_job_is_enriched(
    broker: NatsBroker,
    enriched: list[JobEnriched],
    store: ObjectStore,
    staging: str,
    image_bytes: Callable[..., bytes],
) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"
    picture_slot, context_slot = await slots(broker, job, 2)
    picture = await put(picture_slot, image_bytes(80, 60), "image/png")
    context = GenerationContext(
        elements=[
            ContextElement(
                id="mara",
                name="Mara",
                description="A smuggler " * 1800,
                image=ElementImage(staged=picture),
            )
        ]
    )
    staged_context = await put(context_slot, context.model_dump_json().encode(), "application/json")
    request = requested(job, [], staged_context=staged_context)
    assert len(request.model_dump_json()) < 2048

    await broker.publish(request, Subject.JOBS_REQUESTED)

    [event] = enriched
    assert event.assembled.prompt.startswith("A harbour at dusk\n\nContext:\nMara (element)")
    assert event.assembled.elements_used == ["mara"]
    assert [r.element_id for r in event.assembled.reference_images] == ["mara"]
    assert len(event.model_dump_json()) < 2048  # the context's text is not sent on
    assert keys(store, staging, f"refs/{job}/") == [f"refs/{job}/0.png", f"refs/{job}/in/0"]

    # A redelivery finds the context gone: the job was enriched, nothing is published again.
    await broker.publish(request, Subject.JOBS_REQUESTED)
    assert len(enriched) == 1


async def test_a_preview_reads_its_staged_inputs_and_deletes_them_when_answered(
    broker: NatsBroker,
    store: ObjectStore,
    staging: str,
    image_bytes: Callable[..., bytes],
) -> None:
    picture_slot, context_slot = await slots(broker, None, 2)
    prefix = picture_slot.key.removesuffix("in/0")
    assert prefix.startswith("previews/") and context_slot.key == f"{prefix}in/1"
    picture = await put(picture_slot, image_bytes(80, 60), "image/png")
    context = GenerationContext(
        elements=[ContextElement(id="mara", name="Mara", image=ElementImage(staged=picture))]
    )
    staged_context = await put(context_slot, context.model_dump_json().encode(), "application/json")
    query = ContextPreviewQuery(
        user_id="u",
        project=PROJECT,
        profile=PROFILE,
        prompt="A harbour",
        size="1024x1024",
        staged_context=staged_context,
    )
    response = await broker.request(query, Subject.CONTEXT_PREVIEW, timeout=10)
    reply = ContextPreviewReply.model_validate_json(response.body)

    [shown] = reply.reference_images
    assert (shown.element_id, shown.source, shown.width) == ("mara", "data_url", 64)
    assert keys(store, staging, prefix) == []


async def test_a_preview_does_not_read_a_jobs_inputs(
    broker: NatsBroker, store: ObjectStore, staging: str, image_bytes: Callable[..., bytes]
) -> None:
    [slot] = await slots(broker, "job-x", 1)
    staged = await put(slot, image_bytes(80, 60), "image/png")
    query = ContextPreviewQuery(
        user_id="u",
        project=PROJECT,
        profile=PROFILE,
        prompt="A harbour",
        size="1024x1024",
        context=GenerationContext(elements=[element("mara", staged)]),
    )
    response = await broker.request(query, Subject.CONTEXT_PREVIEW, timeout=10)
    reply = ContextPreviewReply.model_validate_json(response.body)
    assert reply.reference_images == []
    assert reply.excluded_images[0].reason == "The picture was not staged for this request."
    assert keys(store, staging, "refs/job-x/") == ["refs/job-x/in/0"]  # not touched


async def test_the_sweep_deletes_only_stale_staged_objects(
    store: ObjectStore, staging: str
) -> None:
    inputs = StagedInputs(store, staging)
    for key in ("refs/j1/in/0", "refs/j1/0.png", "previews/" + "a" * 32 + "/in/0", "uploads/p/x"):
        await store.put_bytes(staging, key, b"x", "application/octet-stream")

    assert await inputs.sweep(max_age_s=3600) == 0  # all fresh: a running job's, kept
    # Everything is "older" than a cutoff in the future: what a crash left behind goes.
    assert await inputs.sweep(max_age_s=-5) == 3
    assert keys(store, staging, "") == ["uploads/p/x"]  # media's uploads are not context's


async def test_the_sweep_deletes_a_cancelled_jobs_young_references_on_seaweedfs(
    store: ObjectStore, staging: str
) -> None:
    inputs = StagedInputs(store, staging)
    # Written just now (young): only the cancellation mark can make them go.
    cancelled = [f"refs/cancelled/{n}.png" for n in range(3)] + ["refs/cancelled/in/0"]
    running = ["refs/running/0.png", "refs/running-2/0.png"]
    for key in cancelled + running:
        await store.put_bytes(staging, key, b"x", "image/png")
    asked: list[str] = []

    async def is_cancelled(job_id: str) -> bool:
        asked.append(job_id)
        return job_id == "cancelled"

    assert await inputs.sweep(max_age_s=3600, is_cancelled=is_cancelled) == 4
    assert keys(store, staging, "") == sorted(running)
    assert sorted(asked) == ["cancelled", "running", "running-2"]

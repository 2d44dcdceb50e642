"""Reference images through the real wiring: handlers on FastStream's in-memory broker, a fake
media service answering `media.query.get` on it, a real SeaweedFS behind presigned URLs and the
staging bucket, and a real HTTP server on 127.0.0.1 for URLs.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from faststream.nats import NatsBroker, TestNatsBroker
from PIL import Image

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
    SendToggles,
)
from atelier_contracts.media import MediaItem, MediaQuery, MediaReply
from atelier_contracts.profiles import ProfileSnapshot
from atelier_contracts.subjects import JOBS_STREAM, Subject
from atelier_contracts.testing import QUERY_TIMEOUT_S, job_requested, media_item, profile_snapshot
from atelier_devstack import S3Info
from atelier_messaging import query
from atelier_storage import ObjectStore

pytestmark = pytest.mark.integration  # a real SeaweedFS

PROJECT = "proj-1"


@dataclass
class Media:
    """The fake media service's library: items and where their bytes are."""

    store: ObjectStore
    bucket: str
    items: dict[str, MediaItem] = field(default_factory=dict)

    async def add(self, data: bytes, project: str = PROJECT) -> str:
        media_id = str(uuid.uuid4())
        key = f"originals/{media_id}.png"
        await self.store.put_bytes(self.bucket, key, data, "image/png")
        self.items[media_id] = media_item(
            id=media_id, project=project, size_bytes=len(data), original_key=key
        )
        return media_id


@dataclass
class Harness:
    app: FastAPI
    broker: NatsBroker
    store: ObjectStore
    staging: str
    media: Media
    enriched: list[JobEnriched]

    def staged_keys(self) -> list[str]:
        objects = self.store.client.list_objects(self.staging, prefix="refs/", recursive=True)
        return sorted(o.object_name for o in objects if o.object_name)

    async def staged_image(self, key: str) -> Image.Image:
        data = await self.store.get_bytes(self.staging, key)
        image = Image.open(io.BytesIO(data))
        image.load()
        return image


@pytest.fixture
def store(seaweed: S3Info) -> ObjectStore:
    return ObjectStore(
        seaweed.endpoint, seaweed.access_key, seaweed.secret_key, region=seaweed.region
    )


@pytest.fixture
def make_harness(seaweed: S3Info, store: ObjectStore) -> Callable[..., Any]:
    """`async with make_harness(**settings) as h:` an app on the in-memory broker."""

    @asynccontextmanager
    async def make(*, media_service: bool = True, **overrides: Any) -> AsyncIterator[Harness]:
        suffix = uuid.uuid4().hex[:12]
        staging, media_bucket = f"staging-{suffix}", f"media-{suffix}"
        await store.ensure_bucket(staging)
        await store.ensure_bucket(media_bucket)
        settings = Settings(
            environment="test",
            run_startup_hooks=False,
            s3_endpoint=seaweed.endpoint,
            s3_access_key=seaweed.access_key,
            s3_secret_key=seaweed.secret_key,
            staging_bucket=staging,
            media_query_timeout_s=0.5,
            reference_max_side=128,
            reference_max_bytes=200_000,
            reference_max_pixels=4_000_000,
            **overrides,
        )
        app = create_app(settings)
        broker: NatsBroker = app.state.broker
        media = Media(store, media_bucket)
        enriched: list[JobEnriched] = []

        @broker.subscriber(Subject.JOBS_ENRICHED, stream=JOBS_STREAM.name)
        async def capture(event: JobEnriched) -> None:
            enriched.append(event)

        if media_service:

            @broker.subscriber(Subject.MEDIA_GET, queue="media")
            async def get_media(query: MediaQuery) -> MediaReply:
                item = media.items.get(query.media_id)
                if item is None:
                    return MediaReply(media=None)
                url = await store.presigned_get(media_bucket, item.original_key)
                return MediaReply(media=item, content_url=url, thumbnail_url=url)

        async with TestNatsBroker(broker), app.router.lifespan_context(app):
            yield Harness(app, broker, store, staging, media, enriched)

    return make


def _profile(max_reference_images: int = 2) -> ProfileSnapshot:
    return profile_snapshot(
        name="Refs model",
        provider="openai",
        model="gpt-image-1",
        max_reference_images=max_reference_images,
    )


def _element(element_id: str, picture: ElementImage | None, **send: bool) -> ContextElement:
    return ContextElement(
        id=element_id,
        name=f"Element {element_id}",
        type="character",
        description=f"Described {element_id}",
        image=picture,
        send=SendToggles(**send),
    )


def _job(elements: list[ContextElement], max_refs: int = 2, job_id: str = "j1") -> JobRequested:
    return job_requested(
        job_id=job_id,
        project=PROJECT,
        profile=_profile(max_refs),
        prompt="A harbour at dusk",
        context=GenerationContext(elements=elements),
    )


async def _enrich(h: Harness, request: JobRequested) -> JobEnriched:
    await h.broker.publish(request, Subject.JOBS_REQUESTED)
    assert h.enriched, "no jobs.enriched was published"
    return h.enriched[-1]


def _reasons(event: JobEnriched | ContextPreviewReply) -> dict[str, str]:
    excluded = (
        event.assembled.excluded_images if isinstance(event, JobEnriched) else event.excluded_images
    )
    return {e.element_id: e.reason for e in excluded}


# --- media -----------------------------------------------------------------------------------


async def test_media_of_the_same_project_is_downscaled_staged_and_listed(
    make_harness: Any, image_bytes: Callable[..., bytes]
) -> None:
    async with make_harness() as h:
        media_id = await h.media.add(image_bytes(512, 256))
        event = await _enrich(h, _job([_element("e1", ElementImage(media_id=media_id))]))

        [ref] = event.assembled.reference_images
        assert ref.staging_key == "refs/j1/0.png"
        assert (ref.source, ref.media_id, ref.element_id) == ("media", media_id, "e1")
        assert (ref.width, ref.height, ref.content_type) == (128, 64, "image/png")
        assert event.assembled.excluded_images == []
        assert event.assembled.prompt.endswith("Reference images, in order: Element e1.")
        assert h.staged_keys() == ["refs/j1/0.png"]
        staged = await h.staged_image("refs/j1/0.png")
        assert staged.size == (128, 64) and staged.format == "PNG"
        assert ref.size_bytes == len(await h.store.get_bytes(h.staging, ref.staging_key))


async def test_media_of_another_project_or_unknown_is_not_sent(
    make_harness: Any, image_bytes: Callable[..., bytes]
) -> None:
    async with make_harness() as h:
        theirs = await h.media.add(image_bytes(), project="someone-else")
        event = await _enrich(
            h,
            _job(
                [
                    _element("e1", ElementImage(media_id=theirs)),
                    _element("e2", ElementImage(media_id="no-such-media")),
                ]
            ),
        )
        assert event.assembled.reference_images == []
        assert _reasons(event) == {
            "e1": "This image belongs to another project; only this project's images are sent.",
            "e2": "There is no image with this id in the media library.",
        }
        assert h.staged_keys() == []


async def test_a_silent_media_service_is_a_reason_not_a_failure(
    make_harness: Any, image_bytes: Callable[..., bytes]
) -> None:
    async with make_harness(media_service=False) as h:
        event = await _enrich(h, _job([_element("e1", ElementImage(media_id="m1"))]))
        assert "did not answer" in _reasons(event)["e1"]
        assert event.assembled.prompt.startswith("A harbour at dusk")


# --- data URLs and URLs ----------------------------------------------------------------------


async def test_data_urls_are_decoded_checked_and_staged(
    make_harness: Any,
    image_bytes: Callable[..., bytes],
    data_url: Callable[..., str],
    claiming_png: Callable[[int, int], bytes],
) -> None:
    async with make_harness() as h:
        elements = [
            _element(
                "ok", ElementImage(data_url=data_url(image_bytes(300, 300, "JPEG"), "image/jpeg"))
            ),
            _element("huge", ElementImage(data_url=data_url(b"\x89PNG" + b"\0" * 300_000))),
            _element("bomb", ElementImage(data_url=data_url(claiming_png(40_000, 40_000)))),
            _element("text", ElementImage(data_url="data:text/plain;base64,aGVsbG8=")),
        ]
        event = await _enrich(h, _job(elements, max_refs=4))
        [ref] = event.assembled.reference_images
        assert (ref.staging_key, ref.source, ref.width, ref.content_type) == (
            "refs/j1/0.jpg",
            "data_url",
            128,
            "image/jpeg",
        )
        reasons = _reasons(event)
        assert reasons["huge"].startswith("The image is too big: 0.3 MB, and at most 0.2 MB")
        assert "far too many pixels" in reasons["bomb"]
        assert reasons["text"] == "The data URL does not hold an image."


async def test_url_on_loopback_is_refused_by_default(
    make_harness: Any, web: Any, route: Any, image_bytes: Callable[..., bytes]
) -> None:
    web.routes["/mara.png"] = route(body=image_bytes())
    async with make_harness() as h:
        event = await _enrich(h, _job([_element("e1", ElementImage(url=web.url("/mara.png")))]))
        assert event.assembled.reference_images == []
        assert _reasons(event) == {
            "e1": "The address points to a loopback address, which Atelier does not fetch."
        }
        assert web.seen == []


async def test_url_on_loopback_is_fetched_when_allow_listed(
    make_harness: Any, web: Any, route: Any, image_bytes: Callable[..., bytes]
) -> None:
    web.routes["/mara.png"] = route(body=image_bytes(64, 48))
    web.routes["/moved"] = route(status=302, headers={"Location": "http://169.254.169.254/"})
    async with make_harness(fetch_allow_list="127.0.0.1/32") as h:
        event = await _enrich(
            h,
            _job(
                [
                    _element("e1", ElementImage(url=web.url("/mara.png"))),
                    _element("e2", ElementImage(url=web.url("/moved"))),
                ]
            ),
        )
        [ref] = event.assembled.reference_images
        assert (ref.source, ref.width, ref.height) == ("url", 64, 48)
        assert "redirects to one that points to a cloud metadata address" in _reasons(event)["e2"]


# --- what is sent, and the rest --------------------------------------------------------------


async def test_the_maximum_the_toggles_and_profiles_without_references(
    make_harness: Any, image_bytes: Callable[..., bytes], data_url: Callable[..., str]
) -> None:
    picture = ElementImage(data_url=data_url(image_bytes()))
    elements = [
        _element("a", picture),
        _element("b", picture, image=False),
        _element("c", picture),
        _element("d", picture),
        _element("e", picture),
    ]
    async with make_harness(max_elements=4) as h:
        one = await _enrich(h, _job(elements, max_refs=1))
        assert [r.element_id for r in one.assembled.reference_images] == ["a"]
        assert _reasons(one) == {
            "b": "Not sent: the image is switched off for this element.",
            "c": "Over the maximum: Refs model takes at most 1 reference image.",
            "d": "Over the maximum: Refs model takes at most 1 reference image.",
            "e": "Only the first 4 elements are used.",
        }
        none = await _enrich(h, _job(elements[:2], max_refs=0, job_id="j2"))
        assert none.assembled.reference_images == []
        assert _reasons(none)["a"] == "Refs model takes no reference images."
        assert h.staged_keys() == ["refs/j1/0.png"]


async def test_redelivery_stages_the_same_keys_and_publishes_the_same_event(
    make_harness: Any, image_bytes: Callable[..., bytes], data_url: Callable[..., str]
) -> None:
    picture = ElementImage(data_url=data_url(image_bytes()))
    request = _job([_element("a", picture), _element("b", picture)])
    async with make_harness() as h:
        first = await _enrich(h, request)
        second = await _enrich(h, request)
        assert first.event_id == second.event_id
        assert first.assembled == second.assembled
        assert h.staged_keys() == ["refs/j1/0.png", "refs/j1/1.png"]


async def test_preview_reports_what_would_be_sent_and_stages_nothing(
    make_harness: Any, image_bytes: Callable[..., bytes], data_url: Callable[..., str]
) -> None:
    async with make_harness() as h:
        media_id = await h.media.add(image_bytes(400, 200))
        preview = ContextPreviewQuery(
            user_id="u",
            project=PROJECT,
            profile=_profile(1),
            prompt="A harbour at dusk",
            size="1024x1024",
            context=GenerationContext(
                elements=[
                    _element("e1", ElementImage(media_id=media_id)),
                    _element("e2", ElementImage(data_url=data_url(image_bytes()))),
                ]
            ),
        )
        reply = await query(
            h.broker, Subject.CONTEXT_PREVIEW, preview, ContextPreviewReply, timeout=QUERY_TIMEOUT_S
        )
        [image] = reply.reference_images
        assert (image.element_id, image.source, image.media_id) == ("e1", "media", media_id)
        assert (image.width, image.height, image.content_type) == (128, 64, "image/png")
        assert image.size_bytes > 0
        assert "Over the maximum" in _reasons(reply)["e2"]
        assert reply.elements_used == ["e1", "e2"]
        assert reply.prompt.startswith("A harbour at dusk\n\nContext:\nElement e1 (character)")
        assert h.staged_keys() == []

"""The whole service as deployed: create_app against a real nats-server, SeaweedFS and SQLite.

What the in-memory test broker cannot show: streams and the durable pull consumer are declared
and work on a real server, a failed landing is redelivered (with backoff) until it succeeds, and
request/reply answers over real NATS.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from faststream.nats import NatsBroker
from nats.js.api import DeliverPolicy

from atelier_contracts.generation import GenerationCompleted, StagedImage
from atelier_contracts.media import MediaLanded, MediaQuery, MediaReply
from atelier_contracts.subjects import MEDIA_STREAM, Subject
from atelier_contracts.testing import QUERY_TIMEOUT_S
from atelier_devstack import NatsInfo, S3Info, Supervisor, start_nats
from atelier_media.main import create_app
from atelier_media.settings import Settings
from atelier_messaging import make_broker, publish_event, query
from atelier_storage import ObjectStore

pytestmark = pytest.mark.integration

StageImage = Callable[..., Awaitable[StagedImage]]


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsInfo]:
    root = tmp_path_factory.mktemp("media-nats")
    with Supervisor(root / "logs") as sup:
        yield start_nats(sup, root / "data")


@pytest.fixture
def settings(nats_server: NatsInfo, seaweed: S3Info, buckets: Any, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        nats_url=nats_server.url,
        s3_endpoint=seaweed.endpoint,
        s3_access_key=seaweed.access_key,
        s3_secret_key=seaweed.secret_key,
        staging_bucket=buckets.staging,
        # Not created yet: start-up must create it.
        media_bucket=f"media-{uuid.uuid4().hex[:12]}",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'media.db'}",
    )


@pytest.fixture
def media_bucket(settings: Settings) -> str:
    """Workers write generated images to the app's media bucket (created by its start-up)."""
    return settings.media_bucket


@pytest.fixture
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://media") as c,
    ):
        yield c


@pytest.fixture
async def worker_broker(nats_server: NatsInfo) -> AsyncIterator[NatsBroker]:
    """Publishes like a worker (and asks like the gateway) over the real server."""
    broker = make_broker(nats_server.url, "test-worker")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def next_landed(nats_url: str, task_id: str, within_s: float) -> MediaLanded:
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().subscribe(
            Subject.MEDIA_LANDED, stream=MEDIA_STREAM.name, deliver_policy=DeliverPolicy.ALL
        )
        async with asyncio.timeout(within_s):
            while True:
                msg = await sub.next_msg(timeout=within_s)
                event = MediaLanded.model_validate_json(msg.data)
                if event.task_id == task_id:
                    return event
    finally:
        await nc.close()


async def test_start_up_prepares_everything_and_reports_ready(
    running_app: httpx.AsyncClient, settings: Settings, seaweed: S3Info
) -> None:
    ready = await running_app.get("/readyz")

    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert (await running_app.get("/healthz")).status_code == 200
    store = ObjectStore(seaweed.endpoint, seaweed.access_key, seaweed.secret_key)
    assert await store.ping()
    assert await asyncio.to_thread(store.client.bucket_exists, settings.media_bucket)


async def test_gen_completed_on_jetstream_lands_and_media_is_queryable(
    running_app: httpx.AsyncClient,
    worker_broker: NatsBroker,
    settings: Settings,
    stage: StageImage,
    completed: Callable[..., GenerationCompleted],
    image_bytes: Callable[..., bytes],
) -> None:
    event = completed([await stage(image_bytes(400, 300))])

    await publish_event(worker_broker, event, Subject.GEN_COMPLETED)
    landed = await next_landed(settings.nats_url, event.task.task_id, within_s=20)

    reply = await query(
        worker_broker,
        Subject.MEDIA_GET,
        MediaQuery(media_id=landed.media[0].id),
        MediaReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert reply.media == landed.media[0]
    assert reply.content_url is not None
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(reply.content_url)).status_code == 200


async def test_a_failed_landing_is_redelivered_until_it_succeeds(
    running_app: httpx.AsyncClient,
    worker_broker: NatsBroker,
    settings: Settings,
    seaweed: S3Info,
    stage: StageImage,
    completed: Callable[..., GenerationCompleted],
    image_bytes: Callable[..., bytes],
) -> None:
    data = image_bytes(200, 200)
    staged = await stage(data, write=False)
    event = completed([staged])

    # The event arrives before its bytes (say, storage was briefly unreachable when the worker
    # wrote them): the first deliveries fail and are nak'ed with a delay instead of being dropped.
    await publish_event(worker_broker, event, Subject.GEN_COMPLETED)
    waiter = asyncio.create_task(next_landed(settings.nats_url, event.task.task_id, within_s=30))
    await asyncio.sleep(1.0)
    assert not waiter.done()
    store = ObjectStore(seaweed.endpoint, seaweed.access_key, seaweed.secret_key)
    await store.put_bytes(settings.media_bucket, staged.key, data, "image/png")

    landed = await waiter
    assert landed.media[0].size_bytes == len(data)

"""Handlers on FastStream's in-memory TestNatsBroker, wired by `create_app`, real service behind.

The test broker does not model JetStream (no acks, no redelivery) and needs no server, so the
app is built with `run_startup_hooks=False` and the fixtures prepare the table and buckets;
test_app.py runs the same wiring, start-up hooks included, on a real nats-server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from faststream.nats import TestNatsBroker

from atelier_contracts.generation import GenerationCompleted, StagedImage
from atelier_contracts.media import (
    MediaLanded,
    MediaListQuery,
    MediaListReply,
    MediaQuery,
    MediaReply,
)
from atelier_contracts.subjects import Subject
from atelier_contracts.testing import QUERY_TIMEOUT_S
from atelier_devstack import S3Info
from atelier_media.main import create_app
from atelier_media.repository import TABLES
from atelier_media.settings import Settings
from atelier_messaging import durable_subscriber, publish_event, query

pytestmark = pytest.mark.integration  # the service behind the handlers uses a real SeaweedFS

StageImage = Callable[..., Awaitable[StagedImage]]


@pytest.fixture
async def app(seaweed: S3Info, buckets: Any, database_url: str) -> AsyncIterator[FastAPI]:
    app = create_app(
        Settings(
            environment="test",
            run_startup_hooks=False,
            s3_endpoint=seaweed.endpoint,
            s3_access_key=seaweed.access_key,
            s3_secret_key=seaweed.secret_key,
            staging_bucket=buckets.staging,
            media_bucket=buckets.media,
            database_url=database_url,
        )
    )
    await app.state.db.create_tables(TABLES)
    yield app
    await app.state.db.dispose()


async def test_gen_completed_lands_and_publishes_media_landed_and_queries_answer(
    app: FastAPI,
    stage: StageImage,
    completed: Callable[..., GenerationCompleted],
    image_bytes: Callable[..., bytes],
) -> None:
    broker = app.state.broker
    landed_events: list[MediaLanded] = []

    # Subscribed the way dispatch consumes it: a durable consumer on the media stream.
    @durable_subscriber(broker, Subject.MEDIA_LANDED, "test-media-landed")  # type: ignore[untyped-decorator]
    async def on_landed(event: MediaLanded) -> None:
        landed_events.append(event)

    event = completed([await stage(image_bytes(300, 200), index=i) for i in range(2)])

    async with TestNatsBroker(broker) as test_broker:
        await publish_event(test_broker, event, Subject.GEN_COMPLETED)

        assert len(landed_events) == 1
        landed = landed_events[0]
        assert landed.task_id == event.task.task_id
        assert [m.index for m in landed.media] == [0, 1]

        reply = await query(
            test_broker,
            Subject.MEDIA_GET,
            MediaQuery(media_id=landed.media[0].id),
            MediaReply,
            timeout=QUERY_TIMEOUT_S,
        )
        assert reply.media == landed.media[0]
        assert reply.content_url is not None

        missing = await query(
            test_broker,
            Subject.MEDIA_GET,
            MediaQuery(media_id="no-such-id"),
            MediaReply,
            timeout=QUERY_TIMEOUT_S,
        )
        assert missing.media is None

        listing = await query(
            test_broker,
            Subject.MEDIA_LIST,
            MediaListQuery(project="proj-1"),
            MediaListReply,
            timeout=QUERY_TIMEOUT_S,
        )
        assert listing.total == 2
        assert [m.id for m in listing.items] == [m.id for m in landed.media]

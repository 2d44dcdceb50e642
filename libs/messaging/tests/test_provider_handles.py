"""Provider handles in the JetStream KV bucket, against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest

from atelier_contracts.subjects import PROVIDER_HANDLES_BUCKET
from atelier_devstack import NatsInfo
from atelier_messaging import ProviderHandles, make_broker

pytestmark = pytest.mark.integration


@pytest.fixture
async def handles(nats_server: NatsInfo) -> AsyncIterator[ProviderHandles]:
    broker = make_broker(nats_server.url, "test")
    await broker.connect()
    try:
        yield ProviderHandles(broker)
    finally:
        await broker.stop()


async def bucket_messages(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(f"KV_{PROVIDER_HANDLES_BUCKET}")
        return int(info.state.messages)
    finally:
        await nc.close()


async def test_a_task_that_never_saved_a_handle_costs_no_write(
    nats_server: NatsInfo, handles: ProviderHandles
) -> None:
    await handles.kv()  # the bucket exists
    before = await bucket_messages(nats_server.url)
    quiet = handles.for_task("task-quiet")
    assert await quiet.load() is None
    await quiet.forget()  # nothing saved, nothing found: no delete marker written
    assert await bucket_messages(nats_server.url) == before


async def test_a_saved_handle_is_found_again_and_forgotten(
    nats_server: NatsInfo, handles: ProviderHandles
) -> None:
    first = handles.for_task("task-async")
    await first.save({"request_id": "r-1"})
    # Another delivery (another process) of the same task resumes from it, then settles it.
    second = handles.for_task("task-async")
    assert await second.load() == {"request_id": "r-1"}
    await second.forget()
    assert await handles.load("task-async") is None

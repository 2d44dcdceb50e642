"""Ack waits are short and slow handlers are kept alive, on a real nats-server: a handler that
works longer than its consumer's ack wait is not handed to another process meanwhile (the
middleware sends in-progress acks), while a message whose process died comes back after one
ack wait."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats
import pytest
from faststream.nats.annotations import NatsMessage
from nats.js.errors import NotFoundError

from atelier_contracts.subjects import MEDIA_STREAM, Subject
from atelier_devstack import NatsInfo
from atelier_messaging import durable_subscriber, ensure_streams, make_broker
from atelier_messaging.broker import RedeliveryBackoffMiddleware, delivery_attempt

pytestmark = pytest.mark.integration

ACK_WAIT_S = 1.0


async def _fresh_consumer(nats_url: str, durable: str) -> None:
    await ensure_streams(nats_url)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.purge_stream(MEDIA_STREAM.name)
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(MEDIA_STREAM.name, durable)
    finally:
        await nc.close()


async def test_a_slow_handler_is_not_redelivered_while_it_works(
    nats_server: NatsInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RedeliveryBackoffMiddleware, "in_progress_every_s", ACK_WAIT_S / 3)
    durable = "test-slow-handler"
    await _fresh_consumer(nats_server.url, durable)
    broker = make_broker(nats_server.url, "test")
    attempts: list[int] = []
    done = asyncio.Event()

    # Two workers: a redelivered message would be taken by the idle one at once.
    @durable_subscriber(
        broker, Subject.MEDIA_ASSIGNED, durable, ack_wait_s=ACK_WAIT_S, max_workers=2
    )
    async def slow(body: dict[str, Any], msg: NatsMessage) -> None:
        attempts.append(delivery_attempt(msg))
        if len(attempts) == 1:
            await asyncio.sleep(ACK_WAIT_S * 3.5)  # three and a half ack waits
            done.set()

    async with broker:
        await broker.start()
        await broker.publish({"n": 1}, Subject.MEDIA_ASSIGNED, stream=MEDIA_STREAM.name)
        await asyncio.wait_for(done.wait(), timeout=30)
        await asyncio.sleep(ACK_WAIT_S * 1.5)  # a redelivery, if any, would come by now
    assert attempts == [1]


async def test_a_message_whose_process_died_comes_back_after_one_ack_wait(
    nats_server: NatsInfo,
) -> None:
    durable = "test-dead-handler"
    await _fresh_consumer(nats_server.url, durable)
    # The first process takes the message and never answers (as if killed): its connection is
    # closed under the handler, so no ack and no in-progress ack can reach the server.
    first = make_broker(nats_server.url, "test-first")
    taken, gone = asyncio.Event(), asyncio.Event()

    @durable_subscriber(first, Subject.MEDIA_ASSIGNED, durable, ack_wait_s=ACK_WAIT_S)
    async def dies(body: dict[str, Any]) -> None:
        taken.set()
        await gone.wait()  # ends once its connection is gone, so stopping waits for nothing

    second = make_broker(nats_server.url, "test-second")
    again: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @durable_subscriber(second, Subject.MEDIA_ASSIGNED, durable, ack_wait_s=ACK_WAIT_S)
    async def takes_over(body: dict[str, Any], msg: NatsMessage) -> None:
        if not again.done():
            again.set_result(delivery_attempt(msg))

    await first.start()
    try:
        await first.publish({"n": 2}, Subject.MEDIA_ASSIGNED, stream=MEDIA_STREAM.name)
        await asyncio.wait_for(taken.wait(), timeout=30)
        await first.connection.close()  # the process is gone
        gone.set()
    finally:
        with contextlib.suppress(Exception):
            await first.stop()
    async with second:
        await second.start()
        assert await asyncio.wait_for(again, timeout=30) == 2

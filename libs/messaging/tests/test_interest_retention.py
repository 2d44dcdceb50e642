"""ATELIER_JOBS under interest retention, on a real nats-server (ADR 0015): a message stays
exactly as long as one of its durable consumers has not acked it; an old limits stream is
switched in place without losing its backlog; and the server behaviour the dead-letter path
relies on (a terminated message counts as acked, one that ran out of deliveries stays)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    RetentionPolicy,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from atelier_contracts.subjects import ALL_STREAMS, JOBS_STREAM, Durable, StreamSpec
from atelier_devstack import NatsInfo
from atelier_messaging import INTEREST_CONSUMERS, durable_subscriber, ensure_streams, make_broker
from atelier_messaging.broker import _declare

pytestmark = pytest.mark.integration

JOBS = JOBS_STREAM.name


@pytest.fixture
async def js(nats_server: NatsInfo) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    for spec in ALL_STREAMS:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(spec.name)
    with contextlib.suppress(NotFoundError):
        await js.delete_stream("SEMANTICS")
    try:
        yield js
    finally:
        await nc.close()


async def held(js: JetStreamContext, stream: str = JOBS) -> list[int]:
    """The sequences a stream still stores."""
    state = (await js.stream_info(stream)).state
    seqs = []
    for seq in range(state.first_seq, state.last_seq + 1):
        with contextlib.suppress(NotFoundError):
            seqs.append((await js.get_msg(stream, seq)).seq or 0)
    return seqs


async def settle(js: JetStreamContext, durable: str, n: int, how: str = "ack") -> list[bytes]:
    sub = await js.pull_subscribe_bind(durable=durable, stream=JOBS)
    msgs = await sub.fetch(n, timeout=5)
    for msg in msgs:
        await (msg.ack_sync() if how == "ack" else msg.term())
    await sub.unsubscribe()
    await asyncio.sleep(0.2)  # the ack's effect on the stream is asynchronous
    return [m.data for m in msgs]


def test_every_jobs_subject_has_its_declared_consumers() -> None:
    assert JOBS_STREAM.retention == "interest" and not JOBS_STREAM.work_queue
    readers = {(c.subject, c.durable) for c in INTEREST_CONSUMERS}
    assert readers == {
        ("jobs.requested", Durable.CONTEXT_JOBS),
        ("jobs.requested", Durable.DISPATCH_JOBS_REQUESTED),
        ("jobs.enriched", Durable.DISPATCH_JOBS_ENRICHED),
    }
    with pytest.raises(ValueError, match="work-queue"):
        StreamSpec("X", ("x",), work_queue=True, retention="interest")


def test_a_declared_consumer_is_subscribed_with_its_declared_settings() -> None:
    broker = make_broker("nats://127.0.0.1:1", "test")
    durable_subscriber(broker, "jobs.enriched", Durable.DISPATCH_JOBS_ENRICHED, max_deliver=50)
    with pytest.raises(ValueError, match="declared"):
        durable_subscriber(broker, "jobs.requested", Durable.CONTEXT_JOBS, max_deliver=3)


async def test_a_message_leaves_once_every_consumer_of_its_subject_acked_it(
    nats_server: NatsInfo, js: JetStreamContext
) -> None:
    await ensure_streams(nats_server.url)
    info = await js.stream_info(JOBS)
    assert info.config.retention == RetentionPolicy.INTEREST
    for consumer in INTEREST_CONSUMERS:  # declared with the stream, before any publish
        config = (await js.consumer_info(JOBS, consumer.durable)).config
        assert (config.filter_subject, config.max_deliver) == (
            consumer.subject,
            consumer.max_deliver,
        )

    await js.publish("jobs.requested", b"r1")
    await js.publish("jobs.requested", b"r2")
    await js.publish("jobs.enriched", b"e1")
    assert await held(js) == [1, 2, 3]

    # Context handled both requests; dispatch only the first: the second still waits for it.
    assert await settle(js, Durable.CONTEXT_JOBS, 2) == [b"r1", b"r2"]
    assert await held(js) == [1, 2, 3]
    assert await settle(js, Durable.DISPATCH_JOBS_REQUESTED, 1) == [b"r1"]
    assert await held(js) == [2, 3]
    # jobs.enriched has one reader.
    assert await settle(js, Durable.DISPATCH_JOBS_ENRICHED, 1) == [b"e1"]
    assert await held(js) == [2]

    # A second start declares nothing new and drops nothing.
    await ensure_streams(nats_server.url)
    assert await held(js) == [2]
    # A terminated message (a consumer's "reject") counts as handled for that consumer.
    assert await settle(js, Durable.DISPATCH_JOBS_REQUESTED, 1, how="term") == [b"r2"]
    assert await held(js) == []


async def test_an_old_limits_stream_is_switched_in_place_keeping_what_is_unhandled(
    nats_server: NatsInfo, js: JetStreamContext
) -> None:
    # As declared before: limits retention, the services' consumers created by their subscribers.
    await js.add_stream(StreamConfig(name=JOBS, subjects=list(JOBS_STREAM.subjects)))
    for consumer in INTEREST_CONSUMERS:
        await js.add_consumer(JOBS, consumer.config())
    for n in range(4):
        await js.publish("jobs.requested", f"r{n}".encode())
    await js.publish("jobs.enriched", b"e0")
    await settle(js, Durable.CONTEXT_JOBS, 2)  # r0, r1
    await settle(js, Durable.DISPATCH_JOBS_REQUESTED, 1)  # r0
    await settle(js, Durable.DISPATCH_JOBS_ENRICHED, 1)  # e0
    assert await held(js) == [1, 2, 3, 4, 5]  # limits retention keeps everything

    await ensure_streams(nats_server.url)

    assert (await js.stream_info(JOBS)).config.retention == RetentionPolicy.INTEREST
    # r0 and e0 were handled by all their readers and go; r1 waits for dispatch, r2, r3 for both.
    assert await held(js) == [2, 3, 4]
    assert await settle(js, Durable.DISPATCH_JOBS_REQUESTED, 3) == [b"r1", b"r2", b"r3"]
    assert await settle(js, Durable.CONTEXT_JOBS, 2) == [b"r2", b"r3"]
    assert await held(js) == []


async def test_a_stream_switched_before_its_consumers_existed_keeps_its_messages(
    nats_server: NatsInfo, js: JetStreamContext
) -> None:
    # Interest retention drops a message nobody is interested in; the consumers come first.
    await js.add_stream(StreamConfig(name=JOBS, subjects=list(JOBS_STREAM.subjects)))
    await js.publish("jobs.requested", b"r0")
    await ensure_streams(nats_server.url)
    assert await held(js) == [1]
    assert await settle(js, Durable.CONTEXT_JOBS, 1) == [b"r0"]
    assert await settle(js, Durable.DISPATCH_JOBS_REQUESTED, 1) == [b"r0"]
    assert await held(js) == []


async def test_a_refused_switch_tells_the_operator_what_to_do() -> None:
    """A server older than 2.10 refuses to change retention; start-up says what to do."""

    class RefusingServer:
        async def stream_info(self, name: str) -> Any:
            config = SimpleNamespace(retention=RetentionPolicy.LIMITS)
            return SimpleNamespace(config=config, state=SimpleNamespace(bytes=0))

        async def consumer_info(self, stream: str, durable: str) -> None:
            return None

        async def update_stream(self, config: StreamConfig) -> None:
            raise APIError(
                code=400,
                err_code=10052,
                description="stream configuration update can not change retention policy",
            )

    config = StreamConfig(name=JOBS, retention=RetentionPolicy.INTEREST, max_bytes=1)
    with pytest.raises(RuntimeError) as caught:
        await _declare(RefusingServer(), JOBS_STREAM, config)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "refused to change stream ATELIER_JOBS from limits to interest" in message
    assert "Upgrade nats-server" in message and f"nats stream rm {JOBS}" in message


async def test_a_message_that_ran_out_of_deliveries_stays_until_deleted(
    js: JetStreamContext,
) -> None:
    """The server behaviour dispatch's dead-letter path handles: a consumer that gave up never
    acks, so interest retention would keep the message; `delete_msg` removes it."""
    await js.add_stream(
        StreamConfig(name="SEMANTICS", subjects=["sem"], retention=RetentionPolicy.INTEREST)
    )
    await js.add_consumer(
        "SEMANTICS",
        ConsumerConfig(durable_name="giving-up", filter_subject="sem", max_deliver=2, ack_wait=0.5),
    )
    await js.add_consumer("SEMANTICS", ConsumerConfig(durable_name="acking", filter_subject="sem"))
    await js.publish("sem", b"poison")
    giving_up = await js.pull_subscribe_bind(durable="giving-up", stream="SEMANTICS")
    for _ in range(2):
        await giving_up.fetch(1, timeout=5)  # never acked
        await asyncio.sleep(0.7)
    acking = await js.pull_subscribe_bind(durable="acking", stream="SEMANTICS")
    for msg in await acking.fetch(1, timeout=5):
        await msg.ack_sync()
    await asyncio.sleep(0.3)
    assert await held(js, "SEMANTICS") == [1]

    await js.delete_msg("SEMANTICS", 1)
    assert await held(js, "SEMANTICS") == []
    await js.publish("sem", b"next")  # the consumer goes on after the deleted message
    assert [m.data for m in await giving_up.fetch(1, timeout=5)] == [b"next"]

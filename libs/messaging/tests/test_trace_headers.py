"""The trace context travels in NATS headers, never in the event (ADR 0027), on a real
nats-server: a stored event keeps its `traceparent` header, and a subscriber continues the trace
from the headers of what it receives."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from atelier_contracts.generation import GenerationStarted
from atelier_contracts.subjects import JOBS_STREAM, Subject
from atelier_contracts.testing import job_requested
from atelier_devstack import NatsInfo
from atelier_messaging import ensure_streams, make_broker, publish_event, publish_notice

pytestmark = pytest.mark.integration

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
# What a service's own span looks like while it publishes (an HTTP request, a handled message).
PUBLISHING = NonRecordingSpan(
    SpanContext(
        trace_id=TRACE_ID,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
)


async def test_a_stored_event_carries_its_trace_in_its_headers_and_not_in_its_body(
    nats_server: NatsInfo,
) -> None:
    await ensure_streams(nats_server.url)
    broker = make_broker(nats_server.url, "gateway")
    await broker.connect()
    request = job_requested()
    try:
        with trace.use_span(PUBLISHING):
            await publish_event(broker, request, Subject.JOBS_REQUESTED)
    finally:
        await broker.stop()

    nc = await nats.connect(nats_server.url)
    try:
        stored = await nc.jetstream().get_last_msg(JOBS_STREAM.name, Subject.JOBS_REQUESTED)
    finally:
        await nc.close()
    headers = stored.headers or {}
    assert headers["Nats-Msg-Id"] == str(request.event_id)
    assert f"{TRACE_ID:032x}" in headers["traceparent"]
    body = json.loads(stored.data or b"{}")
    assert body["event_id"] == str(request.event_id)
    assert "trace_context" not in body


async def test_a_subscriber_continues_the_trace_of_what_it_receives(
    nats_server: NatsInfo,
) -> None:
    publisher = make_broker(nats_server.url, "workers")
    subscriber = make_broker(nats_server.url, "dispatch")
    subject = "test.trace.started"
    heard: asyncio.Queue[int] = asyncio.Queue()

    @subscriber.subscriber(subject)
    async def listen(event: GenerationStarted) -> None:
        await heard.put(trace.get_current_span().get_span_context().trace_id)

    await subscriber.start()
    await publisher.connect()
    try:
        started = GenerationStarted(task_id="t1", job_id="j1", project="alpha", provider="offline")
        with trace.use_span(PUBLISHING):
            await publish_notice(publisher, started, subject)
        assert await asyncio.wait_for(heard.get(), timeout=10) == TRACE_ID
    finally:
        await publisher.stop()
        await subscriber.stop()

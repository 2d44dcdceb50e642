"""Stream limits on a real nats-server: declared from settings, updated in place without losing a
message, and a full stream refusing a publish with `StreamFull` (503 `stream_full`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Literal

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StreamConfig
from nats.js.errors import NotFoundError

from atelier_contracts.envelope import Event
from atelier_contracts.errors import AtelierError
from atelier_contracts.subjects import ALL_STREAMS, JOBS_STREAM, STATUS_STREAM, TASKS_STREAM
from atelier_devstack import NatsInfo
from atelier_messaging import StreamFull, ensure_streams, make_broker, publish_event
from atelier_settings import StreamLimits
from atelier_web.app import install_error_handlers

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


class Filler(Event):
    type: Literal["jobs.requested"] = "jobs.requested"
    blob: str


@pytest.fixture
async def js(nats_server: NatsInfo) -> AsyncIterator[JetStreamContext]:
    """The server with none of Atelier's streams: each test declares them as it needs."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    for spec in ALL_STREAMS:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(spec.name)
    try:
        yield js
    finally:
        await nc.close()


def test_every_stream_has_a_limit_and_a_policy() -> None:
    limits = StreamLimits()
    for spec in ALL_STREAMS:
        max_bytes, discard = limits.for_stream(spec.name)
        assert max_bytes > 0 and discard in ("new", "old"), spec.name
    # The streams whose publishers can be told no, and the work queue, refuse rather than drop.
    assert limits.for_stream(JOBS_STREAM.name) == (1024 * MiB, "new")
    assert limits.for_stream(TASKS_STREAM.name)[1] == "new"


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_STREAM_JOBS_MAX_BYTES", "4096")
    monkeypatch.setenv("ATELIER_STREAM_STATUS_DISCARD", "new")
    limits = StreamLimits()
    assert limits.for_stream("ATELIER_JOBS") == (4096, "new")
    assert limits.for_stream("ATELIER_STATUS")[1] == "new"
    assert StreamLimits.env_of("ATELIER_JOBS") == "ATELIER_STREAM_JOBS_MAX_BYTES"


async def test_the_defaults_are_declared_and_fit_the_dev_server(
    nats_server: NatsInfo, js: JetStreamContext
) -> None:
    await ensure_streams(nats_server.url)
    await ensure_streams(nats_server.url)  # a second service starting: same streams, no error
    limits = StreamLimits()
    for spec in ALL_STREAMS:
        config = (await js.stream_info(spec.name)).config
        max_bytes, discard = limits.for_stream(spec.name)
        assert config.max_bytes == max_bytes, spec.name
        assert config.discard == (DiscardPolicy.NEW if discard == "new" else DiscardPolicy.OLD)


async def test_an_existing_stream_gets_its_limits_in_place_and_keeps_its_messages(
    nats_server: NatsInfo, js: JetStreamContext
) -> None:
    # As declared before limits existed: no max_bytes, discard old.
    await js.add_stream(StreamConfig(name=JOBS_STREAM.name, subjects=list(JOBS_STREAM.subjects)))
    await js.add_stream(
        StreamConfig(name=STATUS_STREAM.name, subjects=list(STATUS_STREAM.subjects))
    )
    for n in range(20):
        await js.publish("jobs.requested", b"x" * 1000, headers={"Nats-Msg-Id": f"j{n}"})
        await js.publish("jobs.status.p.j", b"y" * 1000, headers={"Nats-Msg-Id": f"s{n}"})
    held = (await js.stream_info(STATUS_STREAM.name)).state.bytes

    # The status stream's new limit is below what it holds: nothing may be dropped for that.
    await ensure_streams(nats_server.url, limits=StreamLimits(status_max_bytes=held // 2))

    jobs = await js.stream_info(JOBS_STREAM.name)
    assert (jobs.state.messages, jobs.config.max_bytes) == (20, 1024 * MiB)
    assert jobs.config.discard == DiscardPolicy.NEW
    status = await js.stream_info(STATUS_STREAM.name)
    assert status.state.messages == 20
    assert status.config.max_bytes == held  # applied as held; the setting wins at a later start
    assert (await js.get_msg(JOBS_STREAM.name, 1)).data == b"x" * 1000


async def test_a_full_stream_refuses_with_stream_full_naming_the_stream_and_limit(
    nats_server: NatsInfo, js: JetStreamContext
) -> None:
    await ensure_streams(nats_server.url, limits=StreamLimits(jobs_max_bytes=8192))
    broker = make_broker(nats_server.url, "gateway")
    await broker.connect()
    try:
        with pytest.raises(StreamFull) as caught:
            for _ in range(20):
                await publish_event(broker, Filler(blob="z" * 1000), "jobs.requested")
        stored = (await js.stream_info(JOBS_STREAM.name)).state
        # Other streams still take messages: a full stream fills alone.
        await publish_event(broker, Filler(blob="s"), "jobs.status.p.j")
    finally:
        await broker.stop()

    error = caught.value
    assert isinstance(error, AtelierError)
    assert (error.status_code, error.code, error.stream) == (503, "stream_full", "ATELIER_JOBS")
    assert "ATELIER_JOBS is full" in error.message
    assert "8,192 bytes" in error.message and "ATELIER_STREAM_JOBS_MAX_BYTES" in error.message
    assert "temporary" in error.message
    assert 0 < stored.bytes <= 8192  # nothing was dropped to make room: the new one was refused
    assert (await js.stream_info(STATUS_STREAM.name)).state.messages == 1


async def test_an_app_answers_stream_full_as_503_with_its_message() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/jobs")
    async def submit() -> None:
        raise StreamFull("Atelier's queue ATELIER_JOBS is full ...", stream="ATELIER_JOBS")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.post("/jobs")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "stream_full"
    assert "ATELIER_JOBS is full" in response.json()["error"]["message"]

"""Cancellation marks in the JetStream KV bucket and the local copy a watching process keeps,
against a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from atelier_devstack import NatsInfo
from atelier_messaging import CancelledJobs, make_broker

pytestmark = pytest.mark.integration


@pytest.fixture
async def pair(nats_server: NatsInfo) -> AsyncIterator[tuple[CancelledJobs, CancelledJobs]]:
    """Dispatch's side (marks) and a watching process's side, on two connections."""
    marker, watcher = make_broker(nats_server.url, "dispatch"), make_broker(nats_server.url, "w")
    await marker.connect()
    await watcher.connect()
    try:
        yield CancelledJobs(marker), CancelledJobs(watcher)
    finally:
        await marker.stop()
        await watcher.stop()


async def eventually(check: asyncio.Event) -> None:
    await asyncio.wait_for(check.wait(), timeout=10)


async def asked_the_bucket() -> None:
    raise AssertionError("the bucket was asked")


async def test_a_watching_process_answers_from_its_copy_of_the_marks(
    pair: tuple[CancelledJobs, CancelledJobs], monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatch, media = pair
    await dispatch.mark("job-before")  # marked before the process started watching
    # Not watching yet: the bucket is asked.
    assert await media.is_cancelled("job-before") is True
    assert await media.is_cancelled("job-fine") is False

    seen: list[str] = []
    arrived = asyncio.Event()

    async def on_cancel(job_id: str) -> None:
        seen.append(job_id)
        if job_id == "job-later":
            arrived.set()

    watch = asyncio.create_task(media.watch(on_cancel))
    try:
        await dispatch.mark("job-later")
        await eventually(arrived)
        assert seen == ["job-before", "job-later"]  # existing marks first, then new ones
        # Caught up: answered from the copy, the bucket is not asked.
        with monkeypatch.context() as patched:
            patched.setattr(media, "kv", asked_the_bucket)
            assert await media.is_cancelled("job-later") is True
            assert await media.is_cancelled("job-before") is True
            assert await media.is_cancelled("job-fine") is False
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
    # Stopped watching: back to asking the bucket.
    assert await media.is_cancelled("job-later") is True

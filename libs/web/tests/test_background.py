"""Background work of a service app: started with the app, cancelled and awaited when it stops;
`every` runs its work again after a failed round and never with an interval of 0."""

from __future__ import annotations

import asyncio
import logging

import pytest

from atelier_web import create_service_app, every


async def test_background_work_runs_with_the_app_and_stops_before_the_shutdown_hooks() -> None:
    events: list[str] = []
    started = asyncio.Event()

    async def watch() -> None:
        events.append("started")
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def shutdown() -> None:
        events.append("shutdown")

    app = create_service_app("Atelier background test", background=[watch], on_shutdown=[shutdown])
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(started.wait(), 5)
    assert events == ["started", "cancelled", "shutdown"]


async def test_every_tries_again_after_a_failed_round(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []
    third = asyncio.Event()

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 3:
            third.set()
        if len(rounds) == 1:
            raise ConnectionError("storage away")

    loop = asyncio.create_task(
        every(0.01, work, failure="the test sweep failed", log=logging.getLogger("atelier.test"))()
    )

    await asyncio.wait_for(third.wait(), 5)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert "the test sweep failed" in caplog.text


async def test_every_with_no_interval_never_runs() -> None:
    async def work() -> None:
        raise AssertionError("ran")

    await asyncio.wait_for(every(0, work, failure="", log=logging.getLogger("atelier.test"))(), 1)

"""Work a service does beside its handlers, for `create_service_app(background=...)`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

Background = Callable[[], Coroutine[Any, Any, None]]


def every(
    interval_s: float, work: Callable[[], Awaitable[object]], *, failure: str, log: logging.Logger
) -> Background:
    """A loop that waits `interval_s` seconds, then runs `work`, until it is cancelled; 0 or
    less: never. A round that fails is logged as `failure` and the next one tries again (the
    storage, the database or the broker away for a while)."""

    async def loop() -> None:
        if interval_s <= 0:
            return
        while True:
            await asyncio.sleep(interval_s)
            try:
                await work()
            except Exception:
                log.exception(failure)

    return loop

"""How fast a worker talks to its provider, and how often it reports progress.

- `TokenBucket`: the worker's own request rate limit for its provider
  (`ATELIER_WORKERS_MAX_REQUESTS_PER_MINUTE`), so a burst of jobs does not earn 429s.
- `ProgressThrottle`: turns a provider's progress ticks (a websocket may send dozens a second)
  into at most one report a second per task.

No broker here either: both take plain callables and a clock, so they are tested in isolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("atelier.workers")

Clock = Callable[[], float]


class TokenBucket:
    """`per_minute` requests a minute on average, up to `burst` at once.

    `reserve()` takes a token now or books the next free one and says how long to wait for it,
    so concurrent callers queue up fairly instead of all waking at once; `release()` gives a
    booked token back when the caller will not use it after all.
    """

    def __init__(self, per_minute: float, burst: int = 1, clock: Clock = time.monotonic) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("a rate limit needs per_minute > 0 and burst >= 1")
        self.rate_per_s = per_minute / 60.0
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)  # may go negative: tokens booked ahead
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now

    def reserve(self) -> float:
        """Take a token; the seconds to wait before using it (0 when one was free)."""
        self._refill()
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s

    def release(self) -> None:
        self._refill()
        self._tokens = min(self.burst, self._tokens + 1)


ProgressSink = Callable[[float | None, str | None], Awaitable[None]]


class ProgressThrottle:
    """Forwards a task's progress to `sink` at most once per `min_interval_s`.

    The first report goes out at once; later ones within the interval are held, and only the
    newest of them is sent when the interval is over, so the last word is never lost to the
    throttle. A report equal to the last one sent is dropped. Sending happens in the background:
    a slow publish never slows the provider call that reports. `close()` drops what is held.
    """

    def __init__(
        self, sink: ProgressSink, min_interval_s: float = 1.0, clock: Clock = time.monotonic
    ) -> None:
        self._sink = sink
        self._interval = min_interval_s
        self._clock = clock
        self._last_sent_at = -math.inf
        self._last_sent: tuple[float | None, str | None] | None = None
        self._held: tuple[float | None, str | None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    async def report(self, fraction: float | None, detail: str | None) -> None:
        """The adapter's `on_progress`: returns at once."""
        if self._closed:
            return
        self._held = (fraction, detail)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_held())

    async def _send_held(self) -> None:
        while self._held is not None:
            wait = self._last_sent_at + self._interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            held, self._held = self._held, None
            if held is None or held == self._last_sent:
                continue
            self._last_sent, self._last_sent_at = held, self._clock()
            try:
                await self._sink(*held)
            except Exception:  # progress is a nicety; losing a report must not fail the task
                log.warning("progress report failed", exc_info=True)

    async def close(self) -> None:
        self._closed = True
        self._held = None
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

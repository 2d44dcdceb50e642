"""How the logic (`service.py`, `budgets.py`, `webhooks.py`) reaches NATS without knowing it:
publishing is an injected callable, and a failure out there is said as `Unavailable` (503)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from atelier_contracts.errors import Unavailable

E = TypeVar("E")

# Publishes one event (`main` binds it to the broker; tests record what it is given).
Publish = Callable[[E], Awaitable[None]]


@contextmanager
def unavailable_on_failure(
    log: logging.Logger, event: str, message: str, **extra: object
) -> Iterator[None]:
    """Any failure of the block becomes `Unavailable(message)`, logged once as `event` with its
    traceback and `extra`: what failed is outside this service, and the admin may try again."""
    try:
        yield
    except Exception as exc:
        log.exception(event, extra=extra)
        raise Unavailable(message) from exc

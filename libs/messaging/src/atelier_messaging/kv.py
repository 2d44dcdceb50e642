"""Small shared state on JetStream key-value buckets.

- Cancelled jobs: dispatch marks a job; workers and media check before spending money or landing
  bytes, and workers watch the bucket to abandon calls already in flight.
- Provider handles: a worker saves the provider's own job id before waiting on it, so a restarted
  worker resumes the same provider job instead of paying for a second one.
- Provider budgets: how many calls a provider may run at once across every worker; admins set
  them through the profiles service, dispatch admits tasks within them (ADR 0020).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.nats import NatsBroker
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from atelier_contracts.subjects import (
    CANCELLED_JOBS_BUCKET,
    PROVIDER_BUDGETS_BUCKET,
    PROVIDER_HANDLES_BUCKET,
)

log = logging.getLogger("atelier.messaging.kv")

_WEEK_S = 7 * 24 * 3600.0


class _Bucket:
    def __init__(self, broker: NatsBroker, name: str, ttl_s: float | None, replicas: int) -> None:
        self.broker = broker
        self.name = name
        self.ttl_s = ttl_s
        self.replicas = replicas
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.broker.key_value(
                self.name, ttl=self.ttl_s, replicas=self.replicas
            )
        return self._kv


async def _nothing(_: str) -> None:
    return None


class CancelledJobs(_Bucket):
    """The marks of cancelled jobs. A process that runs `watch` keeps a local copy of every mark
    and answers `is_cancelled` from it, without a request per message; until the watch has
    caught up (or after it broke) the bucket is asked."""

    def __init__(self, broker: NatsBroker, replicas: int = 1) -> None:
        super().__init__(broker, CANCELLED_JOBS_BUCKET, _WEEK_S, replicas)
        self._marked: set[str] = set()
        self._caught_up = False

    async def mark(self, job_id: str) -> None:
        await (await self.kv()).put(job_id, b"cancelled")

    async def is_cancelled(self, job_id: str) -> bool:
        if self._caught_up:
            # A mark made this very moment may not be here yet; a worker's watch still stops
            # the call it is making when the mark arrives.
            return job_id in self._marked
        try:
            await (await self.kv()).get(job_id)
            return True
        except KeyNotFoundError:
            return False

    async def watch(self, on_cancel: Callable[[str], Awaitable[None]] = _nothing) -> None:
        """Keep the local copy of the marks and call `on_cancel(job_id)` for each (at start for
        the marks that exist, then as they come); runs until cancelled."""
        while True:
            try:
                watcher = await (await self.kv()).watchall(include_history=False)
                async for entry in watcher:
                    if entry is None:  # the existing marks are in: answer from the copy
                        self._caught_up = True
                    elif entry.value:
                        self._marked.add(entry.key)
                        await on_cancel(entry.key)
            except asyncio.CancelledError:
                self._caught_up = False
                raise
            except Exception:
                self._caught_up = False
                log.exception("cancellation watch broke; asking the bucket until it is back")
                await asyncio.sleep(1.0)


class ProviderBudgets(_Bucket):
    """Each provider's budget of calls at once (a positive integer; no key: no limit).

    `watch` keeps `known` current and calls `on_change(provider)` for every change (and for each
    budget that exists when it starts), so a process answers from memory.
    """

    def __init__(self, broker: NatsBroker, replicas: int = 1) -> None:
        super().__init__(broker, PROVIDER_BUDGETS_BUCKET, None, replicas)
        self.known: dict[str, int] = {}

    async def set(self, provider: str, max_concurrent: int | None) -> None:
        kv = await self.kv()
        if max_concurrent is None:
            with contextlib.suppress(KeyNotFoundError):
                await kv.delete(provider)
        else:
            await kv.put(provider, str(max_concurrent).encode())

    async def read_all(self) -> dict[str, int]:
        kv = await self.kv()
        budgets: dict[str, int] = {}
        try:
            keys = await kv.keys()
        except NoKeysError:
            return budgets
        for key in keys:
            with contextlib.suppress(KeyNotFoundError, KeyDeletedError):
                entry = await kv.get(key)
                if entry.value:
                    budgets[key] = int(entry.value)
        return budgets

    async def watch(self, on_change: Callable[[str], Awaitable[None]] = _nothing) -> None:
        """Follow the bucket until cancelled; a broken watch is started again."""
        while True:
            try:
                watcher = await (await self.kv()).watchall(include_history=False)
                async for entry in watcher:
                    if entry is None:
                        continue  # the existing budgets are in
                    if entry.value and entry.operation is None:
                        self.known[entry.key] = int(entry.value)
                    else:  # deleted or purged: no limit
                        self.known.pop(entry.key, None)
                    await on_change(entry.key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("provider budget watch broke; starting it again")
                await asyncio.sleep(1.0)


class ProviderHandles(_Bucket):
    def __init__(self, broker: NatsBroker, replicas: int = 1) -> None:
        super().__init__(broker, PROVIDER_HANDLES_BUCKET, _WEEK_S, replicas)

    def for_task(self, task_id: str) -> TaskHandle:
        return TaskHandle(self, task_id)

    async def load(self, task_id: str) -> dict[str, Any] | None:
        try:
            entry = await (await self.kv()).get(task_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        loaded: dict[str, Any] = json.loads(entry.value)
        return loaded

    async def save(self, task_id: str, handle: dict[str, Any]) -> None:
        await (await self.kv()).put(task_id, json.dumps(handle).encode())

    async def forget(self, task_id: str) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await (await self.kv()).delete(task_id)


class TaskHandle:
    """The `ResumeStore` an adapter sees: the handle of one task."""

    def __init__(self, handles: ProviderHandles, task_id: str) -> None:
        self.handles = handles
        self.task_id = task_id
        # Whether a handle was saved or found: only then is there anything to forget. Adapters
        # of providers that answer in one call never touch the store.
        self.in_use = False

    async def load(self) -> dict[str, Any] | None:
        handle = await self.handles.load(self.task_id)
        self.in_use = self.in_use or handle is not None
        return handle

    async def save(self, handle: dict[str, Any]) -> None:
        self.in_use = True
        await self.handles.save(self.task_id, handle)

    async def forget(self) -> None:
        """Drop the handle once the provider job is settled; no request when there is none."""
        if self.in_use:
            await self.handles.forget(self.task_id)
            self.in_use = False

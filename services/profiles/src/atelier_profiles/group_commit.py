"""Group commit: the quota writes of many callers in one transaction, each answered once it
committed (docs/adr/0016-quota-reservation-without-waiting.md).

Every submission reserves quota and every finished job settles it. A transaction each makes them
wait for one another: each takes the one SQLite connection (or a pooled PostgreSQL one) in turn,
hops to a thread and back, and commits. Here whatever arrives while a transaction runs joins the
next one: one commit for everything that arrived meanwhile, so a burst costs a few batches, not
a queue as long as the burst.

Members of a batch run one after another on one connection, ordered by their `key` (a user id;
stable, so one user's members keep their arrival order): each sees the writes of those before
it, exactly as if they had committed one by one, and two replicas' batches take PostgreSQL's row
locks in the same order, so they cannot deadlock. A member whose rows' order is not known before
it runs (`alone=True`) gets a transaction of its own. A batch that fails rolls back whole:
nothing of it is kept, and every member's caller gets `BatchFailed`.

Where the batch runs. On SQLite, right here on the event loop's thread, when SQLite's write lock
is free at once (`BEGIN IMMEDIATE` without waiting): a batch is a few statements a member on a
local file, about 0.1 ms each. In a worker thread the same batch pays a hand-over of the GIL for
every statement, up to 5 ms each (`sys.getswitchinterval()`) while the loop is busy decoding
requests, and that convoy, not SQL, was most of a reservation's time under load. When the lock
is taken (the admin API writes through the async engine, and such a transaction may hold it
while it waits for this very loop) the batch goes to a thread, where waiting is harmless. On
PostgreSQL it always runs in a thread: there the wait is the network.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlmodel import Session

from atelier_database import Database

log = logging.getLogger("atelier.profiles.group_commit")

R = TypeVar("R")

# Most members per transaction. Whoever arrives while a batch runs waits for it, and on SQLite
# the event loop does too: a bound on the batch is a bound on that wait (about 10 ms for a full
# batch of reservations on SQLite).
DEFAULT_MAX_BATCH = 64
# What the service's SQLite connections wait for a lock (`atelier_database`'s pragma), restored
# after the batch asked for it without waiting.
_SQLITE_BUSY_TIMEOUT_MS = 30_000


class BatchFailed(RuntimeError):
    """The transaction holding this member failed and was rolled back: nothing of it was kept."""


@dataclass
class _Member:
    work: Callable[[Connection], Any]
    key: str
    alone: bool
    answer: asyncio.Future[Any]


class GroupCommit:
    def __init__(
        self, database: Database, *, name: str, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        self._db = database
        self._name = name
        self._max_batch = max_batch
        self._waiting: list[_Member] = []
        self._committer: asyncio.Task[None] | None = None

    async def submit(
        self, work: Callable[[Connection], R], *, key: str = "", alone: bool = False
    ) -> R:
        """Run `work(connection)` in the next transaction; its result once that committed."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._waiting.append(_Member(work, key, alone, answer))
        if self._committer is None or self._committer.done():
            # One committer at a time, and only while there is work: no task to stop at exit.
            self._committer = loop.create_task(self._commit_waiting(), name=self._name)
        return await answer

    def _next_batch(self) -> list[_Member]:
        if self._waiting[0].alone:
            return [self._waiting.pop(0)]
        size = 0
        while (
            size < len(self._waiting) and size < self._max_batch and not self._waiting[size].alone
        ):
            size += 1
        batch = self._waiting[:size]
        del self._waiting[:size]
        return batch

    async def _commit_waiting(self) -> None:
        while self._waiting:
            batch = self._next_batch()
            try:
                results = await self._commit(batch)
            except Exception as exc:
                self._fail(batch, exc)
                continue
            except BaseException:
                # Stopped (the process is shutting down) while a thread may still be ending its
                # transaction either way: nobody is told it was rolled back, or that it held.
                for member in [*batch, *self._waiting]:
                    member.answer.cancel()
                self._waiting.clear()
                raise
            for member, result in zip(batch, results, strict=True):
                if not member.answer.done():  # a caller that gave up has a cancelled future
                    member.answer.set_result(result)

    async def _commit(self, batch: list[_Member]) -> list[Any]:
        order = sorted(range(len(batch)), key=lambda i: batch[i].key)

        def run(conn: Connection) -> list[Any]:
            results: dict[int, Any] = {}
            for i in order:
                results[i] = batch[i].work(conn)
            return [results[i] for i in range(len(batch))]

        if self._db.is_sqlite:
            done, results = self._try_on_this_thread(run)
            if done:
                return results

        def in_session(session: Session) -> list[Any]:
            return run(session.connection())

        return await self._db.run_sync(in_session, in_thread=True)

    def _try_on_this_thread(self, run: Callable[[Connection], list[Any]]) -> tuple[bool, list[Any]]:
        """Run the batch here if SQLite's write lock is free now; (False, []) when it is not."""
        engine = self._db.sync_engine
        if engine.pool.checkedout():  # type: ignore[attr-defined]
            return False, []  # a thread of ours holds the one connection: never wait for it here
        with engine.connect() as conn:
            # The driver's own (not SQLAlchemy's) statements: they take the place of the BEGIN
            # the driver would have sent anyway, and are no round trip.
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA busy_timeout = 0")
            try:
                raw.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # "database is locked": another writer has it
                return False, []
            finally:
                raw.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
            try:
                results = run(conn)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            return True, results

    def _fail(self, batch: list[_Member], exc: Exception) -> None:
        log.error(
            "group commit failed; rolled back",
            extra={"batch": self._name, "members": len(batch), "error": type(exc).__name__},
        )
        for member in batch:
            if not member.answer.done():
                failed = BatchFailed(
                    f"the {self._name} transaction of {len(batch)} failed and was rolled back: "
                    f"{type(exc).__name__}: {exc}"
                )
                failed.__cause__ = exc
                member.answer.set_exception(failed)

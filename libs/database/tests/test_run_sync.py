"""`Database.run_sync`: one transaction on a worker thread, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlmodel import Field, Session, SQLModel, col, select, update

from atelier_database import Database


class Counter(SQLModel, table=True):
    __tablename__ = "toy_counters"

    name: str = Field(primary_key=True)
    value: int = 0


async def test_run_sync_commits_on_return_and_rolls_back_on_raise(database_url: str) -> None:
    db = Database(database_url)
    await db.create_tables([Counter])
    threads: set[int] = set()
    try:

        def add(session: Session) -> str:
            threads.add(threading.get_ident())
            session.add(Counter(name="a", value=1))
            return "added"

        assert await db.run_sync(add) == "added"
        # PostgreSQL: on a worker thread; SQLite: right on the loop's (a local file, no wait).
        assert (threading.get_ident() in threads) == db.is_sqlite
        threads.clear()
        await db.run_sync(lambda session: threads.add(threading.get_ident()), in_thread=True)
        assert threading.get_ident() not in threads  # asked for: a worker thread on both

        def add_then_fail(session: Session) -> None:
            session.add(Counter(name="b", value=2))
            session.flush()
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await db.run_sync(add_then_fail)

        def names(session: Session) -> list[str]:
            return sorted(c.name for c in session.exec(select(Counter)).all())

        assert await db.run_sync(names) == ["a"]  # b was rolled back

        # The async engine sees what the blocking one committed: one database.
        async with db.session() as session:
            row = await session.get(Counter, "a")
            assert row is not None and row.value == 1
    finally:
        await db.drop_tables([Counter])
        await db.dispose()


async def test_concurrent_transactions_each_commit(database_url: str) -> None:
    db = Database(database_url)
    await db.create_tables([Counter])
    try:
        await db.run_sync(lambda session: session.add(Counter(name="n", value=0)))

        def bump(session: Session) -> None:
            # An atomic increment: SQLite ignores FOR UPDATE, so read-modify-write would need
            # the caller's own serialization (dispatch's per-job lock).
            statement = update(Counter).where(col(Counter.name) == "n")
            session.exec(statement.values(value=col(Counter.value) + 1))

        await asyncio.gather(*(db.run_sync(bump) for _ in range(20)))
        final = await db.run_sync(lambda session: session.get(Counter, "n"))
        assert final is not None and final.value == 20
    finally:
        await db.drop_tables([Counter])
        await db.dispose()

"""One `Database` per service: engine, sessions, table creation, a readiness probe."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import Counter
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import Session, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

T = TypeVar("T")

WRITE_TRANSACTIONS = Counter(
    "atelier_db_write_transactions",
    "Transactions this process committed that wrote (at least one INSERT, UPDATE or DELETE)",
)
_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
_WROTE = "atelier_wrote"


def _count_write_transactions(engine: Engine) -> None:
    """Count committed transactions that wrote: what a job costs the database, per service."""

    def began(connection: Any) -> None:
        connection.info[_WROTE] = False

    def statement(connection: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if not connection.info.get(_WROTE) and _WRITE.match(sql):
            connection.info[_WROTE] = True

    def committed(connection: Any) -> None:
        if connection.info.pop(_WROTE, False):
            WRITE_TRANSACTIONS.inc()

    event.listen(engine, "begin", began)
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", committed)


def normalize_url(url: str) -> str:
    """Accept the URLs operators write (`postgresql://`, `sqlite:///`) and pick async drivers."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    return url


def sync_url(url: str) -> str:
    """The same database through a blocking driver: psycopg is both; SQLite is the stdlib's."""
    url = normalize_url(url)
    if url.startswith("sqlite+aiosqlite://"):
        return "sqlite://" + url.removeprefix("sqlite+aiosqlite://")
    return url


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._echo = echo
        self._sync_engine: Engine | None = None
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        _count_write_transactions(self.engine.sync_engine)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )

    async def create_tables(self, tables: Sequence[type[SQLModel]]) -> None:
        """Create this service's tables only: in one process (tests) SQLModel's shared metadata
        holds every service's tables, and a service must not create another's."""
        objects = [model.__table__ for model in tables]  # type: ignore[attr-defined]

        def create(conn: Any) -> None:
            SQLModel.metadata.create_all(conn, tables=objects)

        async with self.engine.begin() as conn:
            await conn.run_sync(create)

    async def drop_tables(self, tables: Sequence[type[SQLModel]]) -> None:
        objects = [model.__table__ for model in tables]  # type: ignore[attr-defined]

        def drop(conn: Any) -> None:
            SQLModel.metadata.drop_all(conn, tables=objects)

        async with self.engine.begin() as conn:
            await conn.run_sync(drop)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            yield session

    @property
    def sync_engine(self) -> Engine:
        """A blocking engine on the same database, made on first use (see `run_sync`)."""
        if self._sync_engine is None:
            kwargs: dict[str, Any] = {"echo": self._echo}
            if self.is_sqlite:
                # One connection (SQLite has one writer at a time anyway), handed from thread to
                # thread by the pool when `run_sync` runs in one.
                kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
                kwargs.update(pool_size=1, max_overflow=0)
            else:
                kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
            self._sync_engine = create_engine(sync_url(self.url), **kwargs)
            _count_write_transactions(self._sync_engine)
            if self.is_sqlite:
                event.listen(self._sync_engine, "connect", _sqlite_pragmas)
        return self._sync_engine

    async def run_sync(self, work: Callable[[Session], T], *, in_thread: bool = False) -> T:
        """Run `work` as one transaction with a blocking session; commit when it returns, roll
        back when it raises.

        For hot paths: through the async driver every statement is a hop to aiosqlite's thread
        and back (and a greenlet switch). Here a PostgreSQL transaction is one hop to a worker
        thread, and a SQLite one none at all: it runs right here, on the event loop's thread.
        A SQLite transaction is a few statements on a local file with a single writer (this
        process), well under a millisecond, less than the hop itself would cost; nothing else
        can run meanwhile, so the one pooled connection is always free.

        `in_thread=True` takes the hop on SQLite too. A service that also writes through the
        async engine needs it: there, an async transaction may hold SQLite's write lock while
        it waits for the event loop, and a transaction blocking the loop would wait for it.
        """
        engine = self.sync_engine

        def run() -> T:
            with Session(engine, expire_on_commit=False) as session:
                result = work(session)
                session.commit()
                return result

        if self.is_sqlite and not in_thread:
            return run()
        return await asyncio.to_thread(run)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._sync_engine is not None:
            self._sync_engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (queries) run beside the single writer (event handlers).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()

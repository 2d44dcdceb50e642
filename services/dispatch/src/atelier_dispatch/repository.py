"""Dispatch's tables: jobs, their tasks, and the images that landed. All SQL lives here.

The repository works on the blocking connection of one transaction: dispatch runs each job
transaction whole (`Database.run_sync`, ADR 0010). The tables are SQLModel models (migrations,
schema), but rows are read and written with SQLAlchemy Core statements (those of job events built
once, at import) and handed over as plain records: a job event is a handful of small statements,
and the ORM's unit of work (autoflush, identity map, change tracking, flush ordering) cost several
times what the statements themselves did. So nothing is written behind the caller's back: every
write is a call below, in the order the caller makes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Index,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.dml import Update
from sqlmodel import Field, Session, SQLModel

from atelier_contracts.clock import as_utc
from atelier_contracts.jobs import FINAL_STATUSES


def _when() -> Any:
    return Column(DateTime(timezone=True), nullable=False)


class JobRow(SQLModel, table=True):
    __tablename__ = "dispatch_jobs"

    id: str = Field(primary_key=True)
    project: str = Field(index=True)
    user_id: str = Field(index=True)
    status: str = Field(index=True)
    # What dispatch needs of the request, in its own columns (ADR 0018): shown by every view and
    # listing without parsing anything. `profile` (the snapshot the tasks carry) is read only
    # when tasks are made or retried; `options` only by views and tasks.
    profile_id: str
    profile_name: str
    provider: str
    model: str
    credit_cost: float
    profile: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    size: str
    count: int
    options: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    target_kind: str
    target_element_id: str | None = None
    request_digest: str | None = None
    # The profile's fallback chain as planned at submission (`JobRequested.fallbacks`).
    fallbacks: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    assembled: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    landed: int = 0
    failed: int = 0
    # The provider's own progress of the running tasks (`gen.progress`), shown by GET.
    progress_fraction: float | None = None
    progress_detail: str | None = None
    created_at: datetime = Field(sa_column=_when())
    updated_at: datetime = Field(sa_column=_when())
    deadline_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), index=True)
    )


class TaskRow(SQLModel, table=True):
    __tablename__ = "dispatch_tasks"
    # Admission (ADR 0020): a provider's waiting tasks by user, oldest first; its tasks in flight.
    __table_args__ = (
        Index("ix_dispatch_tasks_admission", "provider", "status", "user_id", "queued_at"),
    )

    id: str = Field(primary_key=True)
    job_id: str = Field(index=True, foreign_key="dispatch_jobs.id")
    first_index: int
    n: int
    # queued (waits for a free call of its provider) | pending (in its provider's queue or
    # running) | landed | failed | retry_wait | cancelled
    status: str
    attempt: int = 1
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    next_attempt_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), index=True)
    )
    # The provider the task runs on (the job's, or a fallback's), and whose turn it is.
    provider: str
    user_id: str
    queued_at: datetime = Field(sa_column=_when())
    # The profile the task runs on when it is not the job's (it fell back), and why.
    profile: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    fallback_reason: str | None = Field(default=None, sa_column=Column(Text))


class JobImageRow(SQLModel, table=True):
    __tablename__ = "dispatch_job_images"

    media_id: str = Field(primary_key=True)
    job_id: str = Field(index=True, foreign_key="dispatch_jobs.id")
    task_id: str
    index: int
    width: int
    height: int
    content_type: str


class ProviderRow(SQLModel, table=True):
    """One row per provider dispatch has sent tasks to: admission locks it (ADR 0020)."""

    __tablename__ = "dispatch_providers"

    provider: str = Field(primary_key=True)


class ProviderTurnRow(SQLModel, table=True):
    """When a user's task was last admitted to a provider: the next turn is the oldest's."""

    __tablename__ = "dispatch_provider_turns"

    provider: str = Field(primary_key=True)
    user_id: str = Field(primary_key=True)
    last_admitted_at: datetime = Field(sa_column=_when())


TABLES: tuple[type[SQLModel], ...] = (
    JobRow,
    TaskRow,
    JobImageRow,
    ProviderRow,
    ProviderTurnRow,
)


# -- records: one row each, as read or about to be written -----------------------------------------


@dataclass(slots=True)
class JobRecord:
    """A `dispatch_jobs` row. `profile`, `options`, `assembled` and `error` hold stored JSON."""

    id: str
    project: str
    user_id: str
    status: str
    profile_id: str
    profile_name: str
    provider: str
    model: str
    credit_cost: float
    profile: dict[str, Any]
    prompt: str
    size: str
    count: int
    options: dict[str, Any]
    target_kind: str
    target_element_id: str | None
    request_digest: str | None
    fallbacks: list[dict[str, Any]] | None
    assembled: dict[str, Any] | None
    error: dict[str, Any] | None
    landed: int
    failed: int
    progress_fraction: float | None
    progress_detail: str | None
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime | None


@dataclass(slots=True)
class TaskRecord:
    """A `dispatch_tasks` row: one provider call of a job."""

    id: str
    job_id: str
    first_index: int
    n: int
    # queued | pending | landed | failed | retry_wait | cancelled (see `TaskRow`)
    status: str
    provider: str
    user_id: str
    queued_at: datetime
    attempt: int = 1
    error: dict[str, Any] | None = None
    next_attempt_at: datetime | None = None
    profile: dict[str, Any] | None = None
    fallback_reason: str | None = None


@dataclass(slots=True)
class ImageRecord:
    """A `dispatch_job_images` row: an image of the job that media stored."""

    media_id: str
    job_id: str
    task_id: str
    index: int
    width: int
    height: int
    content_type: str


# -- statements, built once: SQLAlchemy caches their compiled form by statement -------------------

_JOBS: Table = JobRow.__table__  # type: ignore[attr-defined]
_TASKS: Table = TaskRow.__table__  # type: ignore[attr-defined]
_IMAGES: Table = JobImageRow.__table__  # type: ignore[attr-defined]

# Selected in the records' field order, so a row unpacks into its record.
_PROVIDERS: Table = ProviderRow.__table__  # type: ignore[attr-defined]
_TURNS: Table = ProviderTurnRow.__table__  # type: ignore[attr-defined]

_SELECT_JOBS = select(*(_JOBS.c[name] for name in JobRecord.__dataclass_fields__))
_SELECT_TASKS = select(*(_TASKS.c[name] for name in TaskRecord.__dataclass_fields__))
_SELECT_IMAGES = select(*(_IMAGES.c[name] for name in ImageRecord.__dataclass_fields__))

_JOB_BY_ID = _SELECT_JOBS.where(_JOBS.c.id == bindparam("job_id"))
# Several dispatch replicas may handle events of one job at once (PostgreSQL).
_JOB_BY_ID_FOR_UPDATE = _JOB_BY_ID.with_for_update()
_TASK_BY_ID = _SELECT_TASKS.where(_TASKS.c.id == bindparam("task_id"))
_TASKS_OF_JOB = _SELECT_TASKS.where(_TASKS.c.job_id == bindparam("job_id")).order_by(
    _TASKS.c.first_index
)
_IMAGES_OF_JOB = _SELECT_IMAGES.where(_IMAGES.c.job_id == bindparam("job_id")).order_by(
    _IMAGES.c.index
)
_NOT_FINAL = _JOBS.c.status.not_in([s.value for s in FINAL_STATUSES])
_OVERDUE_JOB_IDS = (
    select(_JOBS.c.id)
    .where(_NOT_FINAL, _JOBS.c.deadline_at.is_not(None), _JOBS.c.deadline_at < bindparam("now"))
    .limit(bindparam("limit"))
)
_DUE_RETRIES = (
    _SELECT_TASKS.where(
        _TASKS.c.status == "retry_wait", _TASKS.c.next_attempt_at <= bindparam("now")
    )
).limit(bindparam("limit"))

# Admission (ADR 0020).
_OF_PROVIDER = _TASKS.c.provider == bindparam("provider")
_IN_FLIGHT = (
    select(func.count()).select_from(_TASKS).where(_OF_PROVIDER, _TASKS.c.status == "pending")
)
_WAITING_BY_USER = (
    select(_TASKS.c.user_id, func.count())
    .where(_OF_PROVIDER, _TASKS.c.status == "queued")
    .group_by(_TASKS.c.user_id)
)
_TURNS_OF_PROVIDER = select(_TURNS.c.user_id, _TURNS.c.last_admitted_at).where(
    _TURNS.c.provider == bindparam("provider")
)
_WAITING_OF_USER = (
    _SELECT_TASKS.where(
        _OF_PROVIDER, _TASKS.c.status == "queued", _TASKS.c.user_id == bindparam("user_id")
    )
    .order_by(_TASKS.c.queued_at, _TASKS.c.id)
    .limit(bindparam("limit"))
)
# Another replica's transaction may hold some of them (cancelling their job): skip those.
_WAITING_OF_USER_FOR_UPDATE = _WAITING_OF_USER.with_for_update(skip_locked=True)
_PROVIDER_FOR_UPDATE = (
    select(_PROVIDERS.c.provider)
    .where(_PROVIDERS.c.provider == bindparam("provider"))
    .with_for_update()
)
# A provider's whole line, for queue positions: two short columns per waiting task.
_LINE_OF_PROVIDER = (
    select(_TASKS.c.user_id, _TASKS.c.job_id)
    .where(_OF_PROVIDER, _TASKS.c.status == "queued")
    .order_by(_TASKS.c.queued_at, _TASKS.c.id)
)
_PROVIDERS_WAITING = select(_TASKS.c.provider).where(_TASKS.c.status == "queued").distinct()

_INSERT_JOB = insert(_JOBS)
_INSERT_TASKS = insert(_TASKS)
_INSERT_IMAGES = insert(_IMAGES)
# What a job transaction may change of a job, and of a task; the rest is fixed at insert.
_JOB_CHANGES = ("status", "assembled", "error", "landed", "failed", "updated_at", "deadline_at")
_TASK_CHANGES = (
    "status",
    "attempt",
    "error",
    "next_attempt_at",
    "provider",
    "queued_at",
    "profile",
    "fallback_reason",
)


def _update_by_id(table: Table, id_param: str, columns: Sequence[str]) -> Update:
    """An UPDATE of `columns` of the row whose id is `id_param`; each value is a parameter named
    as its column."""
    return (
        update(table)
        .where(table.c.id == bindparam(id_param))
        .values({name: bindparam(name) for name in columns})
    )


_UPDATE_JOB = _update_by_id(_JOBS, "job_id", _JOB_CHANGES)
# Progress only: no transition writes these columns, so this needs no lock on the job.
_UPDATE_PROGRESS = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job_id"), _NOT_FINAL)
    .values(progress_fraction=bindparam("fraction"), progress_detail=bindparam("detail"))
)
_UPDATE_TASK = _update_by_id(_TASKS, "task_id", _TASK_CHANGES)


def _values(record: JobRecord | TaskRecord | ImageRecord) -> dict[str, Any]:
    """A record as statement parameters: its fields are its table's columns, by name."""
    return {field.name: getattr(record, field.name) for field in fields(record)}


class JobRepository:
    """Reads return records; a record changed in memory is written by `save_job`/`save_tasks`."""

    def __init__(self, session: Session, *, lock_rows: bool) -> None:
        # The session's own connection, so everything is the session's one transaction.
        self.connection: Connection = session.connection()
        self.lock_rows = lock_rows

    # -- reads ---------------------------------------------------------------------------------

    def get_job(self, job_id: str, *, for_update: bool = False) -> JobRecord | None:
        query = _JOB_BY_ID_FOR_UPDATE if for_update and self.lock_rows else _JOB_BY_ID
        row = self.connection.execute(query, {"job_id": job_id}).first()
        return JobRecord(*row) if row is not None else None

    def list_jobs(self, project: str, *, active_only: bool, limit: int) -> list[JobRecord]:
        query = _SELECT_JOBS.where(_JOBS.c.project == project)
        if active_only:
            query = query.where(_NOT_FINAL)
        query = query.order_by(_JOBS.c.created_at.desc()).limit(limit)
        return [JobRecord(*row) for row in self.connection.execute(query)]

    def overdue_job_ids(self, now: datetime, limit: int = 100) -> list[str]:
        rows = self.connection.execute(_OVERDUE_JOB_IDS, {"now": now, "limit": limit})
        return list(rows.scalars())

    def due_retries(self, now: datetime, limit: int = 100) -> list[TaskRecord]:
        rows = self.connection.execute(_DUE_RETRIES, {"now": now, "limit": limit})
        return [TaskRecord(*row) for row in rows]

    def tasks_of(self, job_id: str) -> list[TaskRecord]:
        """The job's tasks by their first image."""
        return [
            TaskRecord(*row) for row in self.connection.execute(_TASKS_OF_JOB, {"job_id": job_id})
        ]

    def get_task(self, task_id: str) -> TaskRecord | None:
        row = self.connection.execute(_TASK_BY_ID, {"task_id": task_id}).first()
        return TaskRecord(*row) if row is not None else None

    def images_of(self, job_id: str) -> list[ImageRecord]:
        """The job's images by index."""
        rows = self.connection.execute(_IMAGES_OF_JOB, {"job_id": job_id})
        return [ImageRecord(*row) for row in rows]

    # -- admission (ADR 0020) ------------------------------------------------------------------

    def lock_provider(self, provider: str) -> None:
        """Hold `provider`'s row until the transaction ends: one admission at a time per
        provider across dispatch replicas (PostgreSQL; SQLite has one writer anyway)."""
        dialect = self.connection.dialect.name
        if dialect == "postgresql":
            self.connection.execute(
                pg_insert(_PROVIDERS).values(provider=provider).on_conflict_do_nothing()
            )
            self.connection.execute(_PROVIDER_FOR_UPDATE, {"provider": provider})
        else:
            self.connection.execute(
                sqlite_insert(_PROVIDERS).values(provider=provider).on_conflict_do_nothing()
            )

    def in_flight(self, provider: str) -> int:
        """Tasks handed to `provider`'s queue and not finished: its calls running or about to."""
        return int(self.connection.execute(_IN_FLIGHT, {"provider": provider}).scalar_one())

    def waiting_by_user(self, provider: str) -> dict[str, int]:
        rows = self.connection.execute(_WAITING_BY_USER, {"provider": provider})
        return {user: int(count) for user, count in rows}

    def turns(self, provider: str) -> dict[str, datetime]:
        rows = self.connection.execute(_TURNS_OF_PROVIDER, {"provider": provider})
        return {user: as_utc(at) for user, at in rows}

    def waiting_of_user(self, provider: str, user_id: str, limit: int) -> list[TaskRecord]:
        """The user's oldest waiting tasks for `provider`, locked (those another transaction
        holds are skipped)."""
        query = _WAITING_OF_USER_FOR_UPDATE if self.lock_rows else _WAITING_OF_USER
        rows = self.connection.execute(
            query, {"provider": provider, "user_id": user_id, "limit": limit}
        )
        return [TaskRecord(*row) for row in rows]

    def save_turns(self, provider: str, admitted: dict[str, datetime]) -> None:
        if not admitted:
            return
        values = [
            {"provider": provider, "user_id": user, "last_admitted_at": at}
            for user, at in admitted.items()
        ]
        dialect_insert = (
            pg_insert if self.connection.dialect.name == "postgresql" else sqlite_insert
        )
        statement = dialect_insert(_TURNS)
        self.connection.execute(
            statement.on_conflict_do_update(
                index_elements=["provider", "user_id"],
                set_={"last_admitted_at": statement.excluded.last_admitted_at},
            ),
            values,
        )

    def line(self, provider: str) -> list[tuple[str, str]]:
        """Every task waiting for `provider` as (user, job), oldest first (not locked)."""
        rows = self.connection.execute(_LINE_OF_PROVIDER, {"provider": provider})
        return [(user, job) for user, job in rows]

    def providers_with_waiting_tasks(self) -> list[str]:
        return list(self.connection.execute(_PROVIDERS_WAITING).scalars())

    # -- writes --------------------------------------------------------------------------------

    def insert_job(self, job: JobRecord) -> None:
        self.connection.execute(_INSERT_JOB, _values(job))

    def save_job(self, job: JobRecord) -> None:
        """Write what a job transaction may change of an existing job."""
        self.connection.execute(
            _UPDATE_JOB, {"job_id": job.id, **{name: getattr(job, name) for name in _JOB_CHANGES}}
        )

    def save_progress(self, job_id: str, fraction: float | None, detail: str | None) -> None:
        """The provider's progress of a job still running (a final job is left as it is)."""
        self.connection.execute(
            _UPDATE_PROGRESS, {"job_id": job_id, "fraction": fraction, "detail": detail}
        )

    def insert_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        """New tasks, after their job's row (a foreign key)."""
        if tasks:
            self.connection.execute(_INSERT_TASKS, [_values(t) for t in tasks])

    def save_tasks(self, tasks: Iterable[TaskRecord]) -> None:
        """Write what a job transaction may change of existing tasks."""
        values = [
            {"task_id": t.id, **{name: getattr(t, name) for name in _TASK_CHANGES}} for t in tasks
        ]
        if values:
            self.connection.execute(_UPDATE_TASK, values)

    def insert_images(self, images: Sequence[ImageRecord]) -> None:
        if images:
            self.connection.execute(_INSERT_IMAGES, [_values(i) for i in images])

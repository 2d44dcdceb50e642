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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlmodel import Field, Session, SQLModel

from atelier_contracts.jobs import FINAL_STATUSES


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; every one we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _when() -> Any:
    return Column(DateTime(timezone=True), nullable=False)


class JobRow(SQLModel, table=True):
    __tablename__ = "dispatch_jobs"

    id: str = Field(primary_key=True)
    project: str = Field(index=True)
    user_id: str = Field(index=True)
    status: str = Field(index=True)
    request: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    assembled: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    landed: int = 0
    failed: int = 0
    created_at: datetime = Field(sa_column=_when())
    updated_at: datetime = Field(sa_column=_when())
    deadline_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), index=True)
    )


class TaskRow(SQLModel, table=True):
    __tablename__ = "dispatch_tasks"

    id: str = Field(primary_key=True)
    job_id: str = Field(index=True, foreign_key="dispatch_jobs.id")
    first_index: int
    n: int
    # pending | started | completed | landed | failed | retry_wait | cancelled
    status: str
    attempt: int = 1
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    next_attempt_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), index=True)
    )


class JobImageRow(SQLModel, table=True):
    __tablename__ = "dispatch_job_images"

    media_id: str = Field(primary_key=True)
    job_id: str = Field(index=True, foreign_key="dispatch_jobs.id")
    task_id: str
    index: int
    width: int
    height: int
    content_type: str


TABLES: tuple[type[SQLModel], ...] = (JobRow, TaskRow, JobImageRow)


# -- records: one row each, as read or about to be written -----------------------------------------


@dataclass(slots=True)
class JobRecord:
    """A `dispatch_jobs` row. `request`, `assembled` and `error` hold the stored JSON."""

    id: str
    project: str
    user_id: str
    status: str
    request: dict[str, Any]
    assembled: dict[str, Any] | None
    error: dict[str, Any] | None
    landed: int
    failed: int
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
    # pending | started | completed | landed | failed | retry_wait | cancelled
    status: str
    attempt: int = 1
    error: dict[str, Any] | None = None
    next_attempt_at: datetime | None = None


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
_COUNT_JOBS = select(func.count()).select_from(_JOBS)

_INSERT_JOB = insert(_JOBS)
_INSERT_TASKS = insert(_TASKS)
_INSERT_IMAGES = insert(_IMAGES)
# What a job transaction may change of a job, and of a task; the rest is fixed at insert.
_UPDATE_JOB = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job_id"))
    .values(
        status=bindparam("status"),
        assembled=bindparam("assembled"),
        error=bindparam("error"),
        landed=bindparam("landed"),
        failed=bindparam("failed"),
        updated_at=bindparam("updated_at"),
        deadline_at=bindparam("deadline_at"),
    )
)
_UPDATE_TASK = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("task_id"))
    .values(
        status=bindparam("status"),
        attempt=bindparam("attempt"),
        error=bindparam("error"),
        next_attempt_at=bindparam("next_attempt_at"),
    )
)


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

    def count_jobs(self) -> int:
        return int(self.connection.execute(_COUNT_JOBS).scalar_one())

    # -- writes --------------------------------------------------------------------------------

    def insert_job(self, job: JobRecord) -> None:
        self.connection.execute(_INSERT_JOB, _values(job))

    def save_job(self, job: JobRecord) -> None:
        """Write what a job transaction may change of an existing job."""
        self.connection.execute(
            _UPDATE_JOB,
            {
                "job_id": job.id,
                "status": job.status,
                "assembled": job.assembled,
                "error": job.error,
                "landed": job.landed,
                "failed": job.failed,
                "updated_at": job.updated_at,
                "deadline_at": job.deadline_at,
            },
        )

    def insert_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        """New tasks, after their job's row (a foreign key)."""
        if tasks:
            self.connection.execute(_INSERT_TASKS, [_values(t) for t in tasks])

    def save_tasks(self, tasks: Iterable[TaskRecord]) -> None:
        """Write what a job transaction may change of existing tasks."""
        values = [
            {
                "task_id": t.id,
                "status": t.status,
                "attempt": t.attempt,
                "error": t.error,
                "next_attempt_at": t.next_attempt_at,
            }
            for t in tasks
        ]
        if values:
            self.connection.execute(_UPDATE_TASK, values)

    def insert_images(self, images: Sequence[ImageRecord]) -> None:
        if images:
            self.connection.execute(_INSERT_IMAGES, [_values(i) for i in images])

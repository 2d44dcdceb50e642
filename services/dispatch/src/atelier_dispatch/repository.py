"""Dispatch's tables: jobs, their tasks, and the images that landed. All SQL lives here.

The repository works on a blocking session: dispatch runs each job transaction whole on a worker
thread (`Database.run_sync`), one hop instead of one per statement (ADR 0010)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, func
from sqlmodel import Field, Session, SQLModel, col, select

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


class JobRepository:
    def __init__(self, session: Session, *, lock_rows: bool) -> None:
        self.session = session
        self.lock_rows = lock_rows

    def get_job(self, job_id: str, *, for_update: bool = False) -> JobRow | None:
        query = select(JobRow).where(JobRow.id == job_id)
        if for_update and self.lock_rows:
            # Several dispatch replicas may handle events of one job at once (PostgreSQL).
            query = query.with_for_update()
        return self.session.exec(query).first()

    def list_jobs(self, project: str, *, active_only: bool, limit: int) -> list[JobRow]:
        query = select(JobRow).where(JobRow.project == project)
        if active_only:
            query = query.where(col(JobRow.status).not_in([s.value for s in FINAL_STATUSES]))
        query = query.order_by(col(JobRow.created_at).desc()).limit(limit)
        return list(self.session.exec(query).all())

    def overdue_job_ids(self, now: datetime, limit: int = 100) -> list[str]:
        query = (
            select(JobRow.id)
            .where(col(JobRow.status).not_in([s.value for s in FINAL_STATUSES]))
            .where(col(JobRow.deadline_at).is_not(None))
            .where(col(JobRow.deadline_at) < now)
            .limit(limit)
        )
        return list(self.session.exec(query).all())

    def due_retries(self, now: datetime, limit: int = 100) -> list[TaskRow]:
        query = (
            select(TaskRow)
            .where(TaskRow.status == "retry_wait")
            .where(col(TaskRow.next_attempt_at) <= now)
            .limit(limit)
        )
        return list(self.session.exec(query).all())

    def tasks_of(self, job_id: str) -> list[TaskRow]:
        query = select(TaskRow).where(TaskRow.job_id == job_id).order_by(col(TaskRow.first_index))
        return list(self.session.exec(query).all())

    def get_task(self, task_id: str) -> TaskRow | None:
        return self.session.get(TaskRow, task_id)

    def images_of(self, job_id: str) -> list[JobImageRow]:
        query = (
            select(JobImageRow).where(JobImageRow.job_id == job_id).order_by(col(JobImageRow.index))
        )
        return list(self.session.exec(query).all())

    def image_exists(self, media_id: str) -> bool:
        return self.session.get(JobImageRow, media_id) is not None

    def count_jobs(self) -> int:
        return int(self.session.exec(select(func.count()).select_from(JobRow)).one())

    def add(self, row: SQLModel) -> None:
        self.session.add(row)


TABLES: tuple[type[SQLModel], ...] = (JobRow, TaskRow, JobImageRow)

"""The webhook tables (ADR 0025): endpoints operators registered, one row per event and endpoint
(delivered, waiting or given up), and every attempt. All their SQL lives here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Table, Text, delete, func
from sqlalchemy import select as core_select
from sqlmodel import Field, Session, SQLModel, col, select

from atelier_database import Database


def _when(*, nullable: bool = False) -> Any:
    return Column(DateTime(timezone=True), nullable=nullable)


class WebhookEndpointRow(SQLModel, table=True):
    __tablename__ = "profiles_webhook_endpoint"

    id: str = Field(primary_key=True, max_length=40)
    url: str = Field(sa_column=Column(Text, nullable=False))
    project: str | None = Field(default=None, max_length=100, index=True)
    events: list[str] = Field(sa_column=Column(JSON, nullable=False))
    # The signing secret, sealed with the at-rest key (as provider keys are); shown once.
    sealed_secret: str = Field(sa_column=Column(Text, nullable=False))
    allow_private: bool = False
    description: str | None = Field(default=None, max_length=300)
    created_at: datetime = Field(sa_column=_when())


class WebhookMessageRow(SQLModel, table=True):
    """One event for one endpoint: `pending` until accepted (`delivered`) or its retries are
    over (`failed`). A redelivered event finds its row and is not sent again once delivered."""

    __tablename__ = "profiles_webhook_message"

    endpoint_id: str = Field(primary_key=True, max_length=40)
    webhook_id: str = Field(primary_key=True, max_length=80)
    event_type: str = Field(max_length=40)
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    created_at: datetime = Field(sa_column=_when())
    finished_at: datetime | None = Field(default=None, sa_column=_when(nullable=True))


class WebhookAttemptRow(SQLModel, table=True):
    __tablename__ = "profiles_webhook_attempt"

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: str = Field(max_length=40, index=True)
    webhook_id: str = Field(max_length=80)
    event_type: str = Field(max_length=40)
    attempt: int
    at: datetime = Field(sa_column=_when())
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
    duration_ms: int
    outcome: str = Field(max_length=16, description="delivered | retrying | failed")


_ENDPOINTS: Table = WebhookEndpointRow.__table__  # type: ignore[attr-defined]
_MESSAGES: Table = WebhookMessageRow.__table__  # type: ignore[attr-defined]
_ATTEMPTS: Table = WebhookAttemptRow.__table__  # type: ignore[attr-defined]
WEBHOOK_TABLES: list[Table] = [_ENDPOINTS, _MESSAGES, _ATTEMPTS]


class WebhookRepository:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def add_endpoint(self, row: WebhookEndpointRow) -> None:
        def work(session: Session) -> None:
            session.add(row)

        await self.database.run_sync(work, in_thread=True)

    async def count_endpoints(self) -> int:
        def work(session: Session) -> int:
            return int(
                session.execute(core_select(func.count()).select_from(_ENDPOINTS)).scalar_one()
            )

        return await self.database.run_sync(work, in_thread=True)

    async def endpoints(self) -> list[WebhookEndpointRow]:
        def work(session: Session) -> list[WebhookEndpointRow]:
            query = select(WebhookEndpointRow).order_by(
                col(WebhookEndpointRow.created_at), col(WebhookEndpointRow.id)
            )
            return list(session.exec(query).all())

        return await self.database.run_sync(work, in_thread=True)

    async def endpoint(self, endpoint_id: str) -> WebhookEndpointRow | None:
        def work(session: Session) -> WebhookEndpointRow | None:
            row = session.get(WebhookEndpointRow, endpoint_id)
            return row

        return await self.database.run_sync(work, in_thread=True)

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        def work(session: Session) -> bool:
            gone = session.execute(delete(_ENDPOINTS).where(_ENDPOINTS.c.id == endpoint_id))
            session.execute(delete(_MESSAGES).where(_MESSAGES.c.endpoint_id == endpoint_id))
            session.execute(delete(_ATTEMPTS).where(_ATTEMPTS.c.endpoint_id == endpoint_id))
            return bool(gone.rowcount)  # type: ignore[attr-defined]

        return await self.database.run_sync(work, in_thread=True)

    async def message_status(self, endpoint_id: str, webhook_id: str) -> str | None:
        def work(session: Session) -> str | None:
            row = session.get(WebhookMessageRow, (endpoint_id, webhook_id))
            return row.status if row is not None else None

        return await self.database.run_sync(work, in_thread=True)

    async def record_attempt(
        self, attempt: WebhookAttemptRow, message_status: str, created_at: datetime
    ) -> None:
        """The attempt, and its message's state after it, in one transaction."""

        def work(session: Session) -> None:
            message = session.get(WebhookMessageRow, (attempt.endpoint_id, attempt.webhook_id))
            if message is None:
                message = WebhookMessageRow(
                    endpoint_id=attempt.endpoint_id,
                    webhook_id=attempt.webhook_id,
                    event_type=attempt.event_type,
                    created_at=created_at,
                )
            message.attempts += 1
            message.status = message_status
            if message_status != "pending":
                message.finished_at = attempt.at
            session.add(message)
            session.add(attempt)

        await self.database.run_sync(work, in_thread=True)

    async def attempts(self, endpoint_id: str, limit: int) -> list[WebhookAttemptRow]:
        def work(session: Session) -> list[WebhookAttemptRow]:
            query = (
                select(WebhookAttemptRow)
                .where(WebhookAttemptRow.endpoint_id == endpoint_id)
                .order_by(col(WebhookAttemptRow.id).desc())
                .limit(limit)
            )
            return list(session.exec(query).all())

        return await self.database.run_sync(work, in_thread=True)

    async def counts(self, endpoint_id: str) -> dict[str, int]:
        """Messages of the endpoint by status: delivered, pending, failed."""

        def work(session: Session) -> dict[str, int]:
            rows = session.execute(
                core_select(_MESSAGES.c.status).where(_MESSAGES.c.endpoint_id == endpoint_id)
            ).all()
            counts = {"delivered": 0, "pending": 0, "failed": 0}
            for (status,) in rows:
                counts[status] = counts.get(status, 0) + 1
            return counts

        return await self.database.run_sync(work, in_thread=True)

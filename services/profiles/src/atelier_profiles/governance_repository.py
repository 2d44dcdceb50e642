"""SQL of governance: provider credentials, quota policy and overrides, reservations and
settlements (run by the quota ledger, `quota_ledger.py`, in group commits), and the audit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import delete, func, or_, update
from sqlmodel import col, select

from atelier_contracts.clock import utcnow
from atelier_database import Database
from atelier_profiles.group_commit import DEFAULT_MAX_BATCH, GroupCommit
from atelier_profiles.quota_ledger import (
    READ_TERMS,
    EstimateOutcome,
    QuotaPolicyValues,
    Reservation,
    ReserveOutcome,
    Terms,
    release_in,
    reserve_in,
    settle_in,
)
from atelier_profiles.repository import update_or_insert
from atelier_profiles.tables import (
    SETTINGS_ROW_ID,
    AuditRow,
    CredentialRow,
    ProfileRow,
    QuotaOverrideRow,
    QuotaPolicyRow,
    QuotaUsageRow,
    ReservationRow,
)


@dataclass(frozen=True)
class AuditFilter:
    user_id: str | None = None
    profile_id: str | None = None
    status: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None

    def clauses(self) -> list[Any]:
        where: list[Any] = []
        if self.user_id is not None:
            where.append(col(AuditRow.user_id) == self.user_id)
        if self.profile_id is not None:
            where.append(col(AuditRow.profile_id) == self.profile_id)
        if self.status is not None:
            where.append(col(AuditRow.status) == self.status)
        if self.error_class is not None:
            where.append(col(AuditRow.error_class) == self.error_class)
        if self.since is not None:
            where.append(col(AuditRow.finished_at) >= self.since)
        if self.until is not None:
            where.append(col(AuditRow.finished_at) < self.until)
        if self.text:
            needle = self.text.lower()
            where.append(
                or_(
                    func.lower(AuditRow.prompt).contains(needle, autoescape=True),
                    func.lower(AuditRow.user_prompt).contains(needle, autoescape=True),
                )
            )
        return where


class GovernanceRepository:
    """SQL of credentials, quotas, reservations and the audit."""

    def __init__(self, database: Database, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._db = database
        self._dialect = database.engine.dialect.name  # "sqlite" or "postgresql"
        # Reservations, releases and settlements: every write of the quota tables.
        self._quota_writes = GroupCommit(database, name="quota writes", max_batch=max_batch)

    # Credentials.

    async def list_credentials(self) -> list[CredentialRow]:
        async with self._db.session() as session:
            statement = select(CredentialRow).order_by(col(CredentialRow.provider))
            return list((await session.exec(statement)).all())

    async def get_credential(self, provider: str) -> CredentialRow | None:
        async with self._db.session() as session:
            return await session.get(CredentialRow, provider)

    async def put_credential(
        self, provider: str, ciphertext: str, hint: str, allowed_origins: list[str]
    ) -> CredentialRow:
        now = utcnow()
        values: dict[str, Any] = {
            "ciphertext": ciphertext,
            "hint": hint,
            "allowed_origins": allowed_origins,
            "updated_at": now,
        }
        await update_or_insert(
            self._db,
            update(CredentialRow).where(col(CredentialRow.provider) == provider).values(**values),
            lambda: CredentialRow(provider=provider, created_at=now, **values),
        )
        stored = await self.get_credential(provider)
        assert stored is not None
        return stored

    async def delete_credential(self, provider: str) -> bool:
        async with self._db.session() as session:
            result = await session.exec(
                delete(CredentialRow).where(col(CredentialRow.provider) == provider)
            )
            await session.commit()
            return bool(result.rowcount)

    async def providers_in_profiles(self) -> dict[str, int]:
        statement = select(ProfileRow.provider, func.count()).group_by(col(ProfileRow.provider))
        async with self._db.session() as session:
            return {row[0]: int(row[1]) for row in (await session.exec(statement)).all()}

    # Quota policy and overrides.

    async def get_policy(self) -> QuotaPolicyRow | None:
        async with self._db.session() as session:
            return await session.get(QuotaPolicyRow, SETTINGS_ROW_ID)

    async def save_policy(self, values: QuotaPolicyValues) -> None:
        fields: dict[str, Any] = {
            "credits_milli": values.credits_milli,
            "period": values.period,
            "rate_limit_count": values.rate_limit_count,
            "rate_limit_window_s": values.rate_limit_window_s,
            "updated_at": utcnow(),
        }
        await update_or_insert(
            self._db,
            update(QuotaPolicyRow)
            .where(col(QuotaPolicyRow.id) == SETTINGS_ROW_ID)
            .values(**fields),
            lambda: QuotaPolicyRow(id=SETTINGS_ROW_ID, **fields),
        )

    async def list_overrides(self) -> list[QuotaOverrideRow]:
        async with self._db.session() as session:
            statement = select(QuotaOverrideRow).order_by(col(QuotaOverrideRow.user_id))
            return list((await session.exec(statement)).all())

    async def get_override(self, user_id: str) -> QuotaOverrideRow | None:
        async with self._db.session() as session:
            return await session.get(QuotaOverrideRow, user_id)

    async def put_override(
        self, user_id: str, credits_milli: int | None, note: str | None
    ) -> QuotaOverrideRow:
        values: dict[str, Any] = {
            "credits_milli": credits_milli,
            "note": note,
            "updated_at": utcnow(),
        }
        await update_or_insert(
            self._db,
            update(QuotaOverrideRow)
            .where(col(QuotaOverrideRow.user_id) == user_id)
            .values(**values),
            lambda: QuotaOverrideRow(user_id=user_id, **values),
        )
        stored = await self.get_override(user_id)
        assert stored is not None
        return stored

    async def delete_override(self, user_id: str) -> bool:
        async with self._db.session() as session:
            result = await session.exec(
                delete(QuotaOverrideRow).where(col(QuotaOverrideRow.user_id) == user_id)
            )
            await session.commit()
            return bool(result.rowcount)

    async def used_milli(self, user_id: str, period_key: str) -> int:
        async with self._db.session() as session:
            row = await session.get(QuotaUsageRow, (user_id, period_key))
            return row.used_milli if row is not None else 0

    # Reservations (their statements and their work: `quota_ledger.py`).

    async def reserve(self, reservation: Reservation) -> ReserveOutcome:
        """Hold credits for a job, atomically: never more than the user's limit in the period.

        Reservations asked for while a transaction of them runs are committed together in the
        next one (`GroupCommit`): one commit for a burst, each answered once it is durable. A
        batch that fails is rolled back whole (nothing reserved) and each of its callers gets
        `BatchFailed`. Within a batch they run one by one, ordered by user, on one connection.

        Each runs as `reserve_in` describes.
        """
        return await self._quota_writes.submit(
            lambda conn: reserve_in(conn, self._dialect, reservation),
            key=reservation.request.user_id,
        )

    async def estimate(
        self,
        *,
        user_id: str,
        profile_id: str,
        count: int,
        default_policy: QuotaPolicyValues,
        period_key: Callable[[str], str],
    ) -> EstimateOutcome:
        """What `reserve` would hold for this request now, holding nothing (ADR 0024): the same
        terms statement and the same arithmetic, and the period's usage as committed."""
        async with self._db.session() as session:
            row = (
                await session.execute(READ_TERMS, {"user": user_id, "profile": profile_id})
            ).one()
            terms = Terms.of(row, default_policy)
            usage = await session.get(QuotaUsageRow, (user_id, period_key(terms.policy.period)))
        return EstimateOutcome(
            cost_milli=terms.per_image_milli * count,
            per_image_milli=terms.per_image_milli,
            used_milli=usage.used_milli if usage is not None else 0,
            policy=terms.policy,
            limit_milli=terms.limit_milli,
            priced=terms.priced,
            price_per_image_usd=terms.price_per_image_usd,
        )

    async def release(self, job_id: str) -> bool:
        """Forget a reservation whose job was never queued, giving its credits back.

        A transaction of its own (in turn with the batches): whose usage row it locks is known
        only once it ran, so it cannot be put in a batch's order of locks.
        """
        return await self._quota_writes.submit(lambda conn: release_in(conn, job_id), alone=True)

    async def get_reservation(self, job_id: str) -> ReservationRow | None:
        async with self._db.session() as session:
            return await session.get(ReservationRow, job_id)

    # Job outcomes: settle the reservation and write the audit, in one transaction.

    async def record_outcome(
        self, audit: AuditRow, landed: int, *, priced: int = 0, priced_milli: int = 0
    ) -> bool:
        """Settle the job's reservation (refunding what it was not charged) and record it.

        `audit.cost_milli` is not used: the entry is charged what the job's images cost. Of the
        `landed` images, `priced` carry the price of the profile that made them (a fallback's
        may differ from the job's own), together `priced_milli`; the others are charged the
        price the reservation was made at (the profile's current price for a job that reserved
        nothing). What the reservation held beyond that is given back; a charge over it (a
        pricier fallback) is added to the period's usage, past the user's limit if need be: the
        images were made.

        False when the outcome was recorded before (a redelivered status event): nothing changes.
        The reservation is flipped to settled by a conditional UPDATE, so two deliveries racing
        cannot both refund; the audit's primary key makes the entry happen once. It joins the
        reservations' group commit, ordered by the job's user.
        """
        landed = max(0, landed)
        priced = min(max(0, priced), landed)
        unpriced = landed - priced
        priced_milli = max(0, priced_milli)
        now = utcnow()
        return await self._quota_writes.submit(
            lambda conn: settle_in(
                conn, self._dialect, audit, unpriced=unpriced, priced_milli=priced_milli, now=now
            ),
            key=audit.user_id,
        )

    # The audit.

    async def list_audits(
        self, where: AuditFilter, *, limit: int, offset: int
    ) -> tuple[list[AuditRow], int]:
        clauses = where.clauses()
        statement = (
            select(AuditRow)
            .where(*clauses)
            .order_by(col(AuditRow.finished_at).desc(), col(AuditRow.job_id))
            .limit(limit)
            .offset(offset)
        )
        counting = select(func.count()).select_from(AuditRow).where(*clauses)
        async with self._db.session() as session:
            rows = list((await session.exec(statement)).all())
            total = int((await session.exec(counting)).one())
        return rows, total

    async def audit_summary(self, where: AuditFilter) -> dict[str, list[tuple[Any, ...]]]:
        clauses = where.clauses()
        totals = [
            func.count(),
            func.coalesce(func.sum(AuditRow.landed), 0),
            func.coalesce(func.sum(AuditRow.cost_milli), 0),
        ]
        queries = {
            "status": select(AuditRow.status, *totals).group_by(col(AuditRow.status)),
            "error_class": select(AuditRow.error_class, *totals)
            .where(col(AuditRow.error_class).is_not(None))
            .group_by(col(AuditRow.error_class)),
            "user": select(AuditRow.user_id, *totals).group_by(col(AuditRow.user_id)),
            "profile": select(
                AuditRow.profile_id, func.max(AuditRow.profile_name), *totals
            ).group_by(col(AuditRow.profile_id)),
            "all": select(*totals),
        }
        answers: dict[str, list[tuple[Any, ...]]] = {}
        async with self._db.session() as session:
            for name, query in queries.items():
                result = await session.exec(query.where(*clauses))
                answers[name] = [tuple(cast(Any, row)) for row in result.all()]
        return answers

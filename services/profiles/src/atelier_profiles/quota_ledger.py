"""The quota ledger: what runs inside a group commit's transaction (`GroupCommit`).

A reservation runs for every submitted job and a settlement for every finished one. Each runs
as one transaction on one connection, in Core statements (no ORM session: every statement is
a thread hop on aiosqlite and a round trip on PostgreSQL, and a session adds its own work).
The statements are built here once, with bind parameters: building one and computing its
cache key on every call costs about as much CPU as SQLite takes to run it. The functions below
run them on the batch's connection; `GovernanceRepository` hands them to its group commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Executable,
    Integer,
    Row,
    Select,
    Table,
    bindparam,
    case,
    delete,
    func,
    literal,
    update,
)
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

from atelier_contracts.clock import as_utc, utcnow
from atelier_contracts.profiles import QuotaReserveRequest
from atelier_profiles.money import to_milli
from atelier_profiles.tables import (
    AUDIT_TABLE,
    OVERRIDE_TABLE,
    POLICY_TABLE,
    PROFILE_TABLE,
    RESERVATION_TABLE,
    SETTINGS_ROW_ID,
    USAGE_TABLE,
    AuditRow,
)


@dataclass(frozen=True)
class QuotaPolicyValues:
    credits_milli: int | None
    period: str
    rate_limit_count: int | None
    rate_limit_window_s: float


@dataclass(frozen=True)
class InFlightLimits:
    """What one user may have queued or running at once (None: no limit)."""

    max_jobs: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class ReserveOutcome:
    outcome: str  # "reserved" | "quota_exceeded" | "rate_limited" | "too_much_in_flight"
    cost_milli: int
    used_milli: int  # the period's usage after this answer
    # The terms it was held to, as read in the reservation's own transaction.
    policy: QuotaPolicyValues
    limit_milli: int | None  # the user's override, else the policy's; None: no limit
    priced: bool  # False: the profile no longer exists (reserved at 0)
    retry_after_s: float | None = None
    in_flight_jobs: int = 0  # for "too_much_in_flight": what the user already has in flight
    in_flight_bytes: int = 0
    repeated: bool = False  # the job held a reservation already: nothing more was held


@dataclass(frozen=True)
class EstimateOutcome:
    """What a reservation would hold now, read with the reservation's own terms statement."""

    cost_milli: int
    per_image_milli: int
    used_milli: int
    policy: QuotaPolicyValues
    limit_milli: int | None
    priced: bool
    price_per_image_usd: float | None


@dataclass(frozen=True)
class Reservation:
    """One job's reservation as asked for, with the terms it runs under; waits for its batch
    (`GovernanceRepository.reserve`). `period_key(period)` names the usage row of the period
    holding `now`."""

    request: QuotaReserveRequest
    now: datetime
    default_policy: QuotaPolicyValues
    period_key: Callable[[str], str]
    in_flight: InFlightLimits


_RES = RESERVATION_TABLE.c
_USAGE = USAGE_TABLE.c
_AUDIT = AUDIT_TABLE.c


def _read_terms() -> Select[Any]:
    """Policy, the user's override and the profile's price: three primary-key lookups LEFT
    JOINed to one row, so that absent rows read as NULLs."""
    policy, override, profile = POLICY_TABLE.c, OVERRIDE_TABLE.c, PROFILE_TABLE.c
    anchor = core_select(literal(1).label("one")).subquery("anchor")
    return core_select(
        policy.id.label("policy_id"),
        policy.credits_milli.label("policy_credits_milli"),
        policy.period,
        policy.rate_limit_count,
        policy.rate_limit_window_s,
        override.user_id.label("override_user_id"),
        override.credits_milli.label("override_credits_milli"),
        profile.credit_cost,
        profile.price_per_image_usd,
    ).select_from(
        anchor.outerjoin(POLICY_TABLE, policy.id == SETTINGS_ROW_ID)
        .outerjoin(OVERRIDE_TABLE, override.user_id == bindparam("user"))
        .outerjoin(PROFILE_TABLE, profile.id == bindparam("profile"))
    )


READ_TERMS = _read_terms()  # parameters: user, profile


@dataclass(frozen=True)
class Terms:
    """What a reservation is held to, as one row of `READ_TERMS` says."""

    policy: QuotaPolicyValues
    limit_milli: int | None  # the user's override, else the policy's; None: no limit
    priced: bool  # False: the profile no longer exists
    per_image_milli: int
    price_per_image_usd: float | None

    @classmethod
    def of(cls, row: Row[Any], default_policy: QuotaPolicyValues) -> Terms:
        policy = default_policy
        if row.policy_id is not None:
            policy = QuotaPolicyValues(
                credits_milli=row.policy_credits_milli,
                period=row.period,
                rate_limit_count=row.rate_limit_count,
                rate_limit_window_s=row.rate_limit_window_s,
            )
        overridden = row.override_user_id is not None
        priced = row.credit_cost is not None
        return cls(
            policy=policy,
            limit_milli=row.override_credits_milli if overridden else policy.credits_milli,
            priced=priced,
            per_image_milli=to_milli(row.credit_cost) if priced else 0,
            price_per_image_usd=row.price_per_image_usd,
        )


def _lock_usage_row(insert: Callable[[Table], PostgresInsert | SqliteInsert]) -> Executable:
    """Create the user's usage row of the period, or touch it; either way it is then locked
    (`ON CONFLICT DO UPDATE` locks the row on PostgreSQL; on SQLite any write takes the lock).
    Parameters: the row's columns."""
    upsert = insert(USAGE_TABLE)
    return upsert.on_conflict_do_update(
        index_elements=[_USAGE.user_id, _USAGE.period_key],
        set_={"updated_at": upsert.excluded.updated_at},
    ).returning(_USAGE.used_milli)


def _record_audit(insert: Callable[[Table], PostgresInsert | SqliteInsert]) -> Executable:
    """Parameters: the audit row's columns; returns nothing when it was recorded before."""
    return (insert(AUDIT_TABLE).on_conflict_do_nothing(index_elements=[_AUDIT.job_id])).returning(
        _AUDIT.job_id
    )


# INSERT … ON CONFLICT differs per dialect (same API); keyed by `engine.dialect.name`.
_LOCK_USAGE_ROW = {
    "sqlite": _lock_usage_row(sqlite.insert),
    "postgresql": _lock_usage_row(postgresql.insert),
}
_RECORD_AUDIT = {
    "sqlite": _record_audit(sqlite.insert),
    "postgresql": _record_audit(postgresql.insert),
}

_HELD = core_select(_RES.reserved_milli).where(_RES.job_id == bindparam("job")).scalar_subquery()
# The oldest of the user's last `rate_limit_count` reservations in the window (OFFSET count-1):
# present only when that many were made, and then the next one may start once it leaves the
# window.
_LIMITING = (
    core_select(_RES.created_at)
    .where(_RES.user_id == bindparam("user"), _RES.created_at > bindparam("window_start"))
    .order_by(_RES.created_at.desc())
    .limit(1)
    .offset(bindparam("skip", type_=Integer))
    .scalar_subquery()
)
_IN_FLIGHT = core_select(
    func.count().label("jobs"), func.coalesce(func.sum(_RES.payload_bytes), 0).label("bytes")
).where(_RES.user_id == bindparam("user"), _RES.settled.is_(False))
_CHECK_HELD = core_select(_HELD.label("held"))
_CHECK_HELD_AND_RATE = core_select(_HELD.label("held"), _LIMITING.label("limiting"))


def _spend(*, within: bool) -> Executable:
    statement = (
        update(USAGE_TABLE)
        .where(_USAGE.user_id == bindparam("user"), _USAGE.period_key == bindparam("period"))
        .values(used_milli=_USAGE.used_milli + bindparam("cost"), updated_at=bindparam("now"))
        .returning(_USAGE.used_milli)
    )
    if within:
        statement = statement.where(_USAGE.used_milli + bindparam("cost") <= bindparam("limit"))
    return statement


_SPEND = _spend(within=False)
_SPEND_WITHIN_LIMIT = _spend(within=True)
_GIVE_BACK = (
    update(USAGE_TABLE)
    .where(_USAGE.user_id == bindparam("user"), _USAGE.period_key == bindparam("period"))
    .values(used_milli=_USAGE.used_milli - bindparam("amount"), updated_at=bindparam("now"))
)
_INSERT_RESERVATION = RESERVATION_TABLE.insert()  # parameters: the row's columns


def _settle() -> Executable:
    """Flip an unsettled reservation to settled, refunding what the job was not charged: the
    landed images priced by the profile that made them (`priced`, together), the others
    (`unpriced`) at the reservation's price; images that did not land cost nothing."""
    unpriced = bindparam("unpriced", type_=BigInteger)
    charged = _RES.credits_per_image_milli * case(
        (_RES.count < unpriced, _RES.count), else_=unpriced
    ) + bindparam("priced", type_=BigInteger)
    refund = case((_RES.reserved_milli > charged, _RES.reserved_milli - charged), else_=0)
    return (
        update(RESERVATION_TABLE)
        .where(_RES.job_id == bindparam("job"), _RES.settled.is_(False))
        .values(settled=True, settled_at=bindparam("now"), refunded_milli=refund)
        .returning(
            _RES.user_id,
            _RES.period_key,
            _RES.count.label("images"),  # `count` would be the row's tuple method
            _RES.reserved_milli,
            _RES.refunded_milli,
            _RES.credits_per_image_milli,
        )
    )


_SETTLE = _settle()
# When no reservation was settled: was the outcome recorded before (a redelivery)? If not, the
# price per image: the reservation's, else the profile's current one.
_UNSETTLED_OUTCOME = core_select(
    core_select(_AUDIT.job_id)
    .where(_AUDIT.job_id == bindparam("job"))
    .scalar_subquery()
    .label("recorded"),
    core_select(_RES.credits_per_image_milli)
    .where(_RES.job_id == bindparam("job"))
    .scalar_subquery()
    .label("per_image"),
    core_select(PROFILE_TABLE.c.credit_cost)
    .where(PROFILE_TABLE.c.id == bindparam("profile"))
    .scalar_subquery()
    .label("credit_cost"),
)
_FORGET = (
    delete(RESERVATION_TABLE)
    .where(_RES.job_id == bindparam("job"), _RES.settled.is_(False))
    .returning(_RES.user_id, _RES.period_key, _RES.reserved_milli)
)


def reserve_in(conn: Connection, dialect: str, r: Reservation) -> ReserveOutcome:
    """One reservation inside the batch's transaction.

    Its first statement reads the terms (policy, the user's override, the profile's price).
    The second upserts the user's usage row of the period, which serializes this user's
    reservations until the commit: a row lock on PostgreSQL (so a second replica's batch
    holding the same user waits for this one to commit), the single write lock on SQLite.
    Every statement after it (the idempotency and rate limit check, the in-flight count, the
    spend) therefore sees every reservation committed before and those earlier in this
    batch; on PostgreSQL each READ COMMITTED statement takes a fresh snapshot, which is why
    that check is a statement of its own after the lock. The spend itself is a conditional
    UPDATE as well, so even without that lock it could not overspend. A refusal writes
    nothing but the usage row's touch.
    """
    asked = r.request
    terms = Terms.of(
        conn.execute(READ_TERMS, {"user": asked.user_id, "profile": asked.profile_id}).one(),
        r.default_policy,
    )
    policy, limit = terms.policy, terms.limit_milli
    per_image = terms.per_image_milli
    cost = per_image * asked.count

    # Every answer states the terms it was held to.
    answer = partial(ReserveOutcome, policy=policy, limit_milli=limit, priced=terms.priced)

    period = r.period_key(policy.period)
    lock = _LOCK_USAGE_ROW[dialect]
    row = {"user_id": asked.user_id, "period_key": period, "used_milli": 0, "updated_at": r.now}
    # Locked from here on: nobody else changes it before this transaction ends.
    used = int(conn.execute(lock, row).scalar_one())

    if policy.rate_limit_count is None:
        found = conn.execute(_CHECK_HELD, {"job": asked.job_id}).one()
    else:
        window_start = r.now - timedelta(seconds=policy.rate_limit_window_s)
        found = (
            conn.execute(
                _CHECK_HELD_AND_RATE,
                {
                    "job": asked.job_id,
                    "user": asked.user_id,
                    "window_start": window_start,
                    "skip": policy.rate_limit_count - 1,
                },
            )
        ).one()
    if found.held is not None:
        # The same job asked again (an Idempotency-Key retry): it already holds credits.
        return answer("reserved", int(found.held), used, repeated=True)
    if policy.rate_limit_count is not None and found.limiting is not None:
        leaves = as_utc(found.limiting) + timedelta(seconds=policy.rate_limit_window_s)
        return answer(
            "rate_limited", 0, used, retry_after_s=max((leaves - r.now).total_seconds(), 0.001)
        )
    in_flight = r.in_flight
    if in_flight.max_jobs is not None or in_flight.max_bytes is not None:
        # Still under this user's lock: concurrent submissions see each other's rows.
        busy = conn.execute(_IN_FLIGHT, {"user": asked.user_id}).one()
        jobs, held_bytes = int(busy.jobs), int(busy.bytes)
        if (in_flight.max_jobs is not None and jobs >= in_flight.max_jobs) or (
            in_flight.max_bytes is not None
            and held_bytes + asked.payload_bytes > in_flight.max_bytes
        ):
            return answer(
                "too_much_in_flight", 0, used, in_flight_jobs=jobs, in_flight_bytes=held_bytes
            )
    if limit is not None and used + cost > limit:
        return answer("quota_exceeded", cost, used)

    where = {"user": asked.user_id, "period": period, "cost": cost, "now": r.now}
    if limit is None:
        spent = conn.execute(_SPEND, where).scalar_one_or_none()
    else:
        where["limit"] = limit
        spent = conn.execute(_SPEND_WITHIN_LIMIT, where).scalar_one_or_none()
    if spent is None:
        return answer("quota_exceeded", cost, used)
    conn.execute(
        _INSERT_RESERVATION,
        {
            "job_id": asked.job_id,
            "user_id": asked.user_id,
            "project": asked.project,
            "profile_id": asked.profile_id,
            "period_key": period,
            "count": asked.count,
            "credits_per_image_milli": per_image,
            "reserved_milli": cost,
            "payload_bytes": asked.payload_bytes,
            "settled": False,
            "refunded_milli": 0,
            "created_at": r.now,
            "settled_at": None,
        },
    )
    return answer("reserved", cost, int(spent))


def _give_back(conn: Connection, user_id: str, period_key: str, amount: int, now: datetime) -> None:
    conn.execute(_GIVE_BACK, {"user": user_id, "period": period_key, "amount": amount, "now": now})


def release_in(conn: Connection, job_id: str) -> bool:
    """Forget a reservation whose job was never queued, giving its credits back."""
    forgotten = conn.execute(_FORGET, {"job": job_id}).one_or_none()
    if forgotten is None:  # unknown, released before, or settled: nothing to give back
        return False
    _give_back(conn, forgotten.user_id, forgotten.period_key, forgotten.reserved_milli, utcnow())
    return True


def settle_in(
    conn: Connection,
    dialect: str,
    audit: AuditRow,
    *,
    unpriced: int,
    priced_milli: int,
    now: datetime,
) -> bool:
    """Settle the job's reservation and record its audit entry, as
    `GovernanceRepository.record_outcome` describes; False when recorded before."""
    settled = (
        conn.execute(
            _SETTLE,
            {"job": audit.job_id, "unpriced": unpriced, "priced": priced_milli, "now": now},
        )
    ).one_or_none()
    if settled is not None:
        per_image = int(settled.credits_per_image_milli)
        charged = per_image * min(int(settled.images), unpriced) + priced_milli
        if settled.refunded_milli:
            _give_back(conn, settled.user_id, settled.period_key, settled.refunded_milli, now)
        elif charged > settled.reserved_milli:
            conn.execute(
                _SPEND,
                {
                    "user": settled.user_id,
                    "period": settled.period_key,
                    "cost": charged - int(settled.reserved_milli),
                    "now": now,
                },
            )
    else:
        # Settled before (then the audit is there: a redelivery), or never reserved (a
        # job accepted before quotas existed, or by a gateway that did not reserve).
        known = (
            conn.execute(_UNSETTLED_OUTCOME, {"job": audit.job_id, "profile": audit.profile_id})
        ).one()
        if known.recorded is not None:
            return False
        if known.per_image is not None:
            per_image = int(known.per_image)
        elif known.credit_cost is not None:
            per_image = to_milli(known.credit_cost)
        else:
            per_image = 0
        charged = per_image * unpriced + priced_milli
    row = {column.name: getattr(audit, column.name) for column in AUDIT_TABLE.columns}
    row["cost_milli"] = charged
    recorded = conn.execute(_RECORD_AUDIT[dialect], row).one_or_none()
    if recorded is None:
        if settled is not None:
            # Cannot happen: whoever recorded it settled the reservation first, and the
            # settling UPDATE above waited for them. Failing rolls back the refund.
            raise RuntimeError(f"job {audit.job_id}: settled here, recorded elsewhere")
        # Recorded in the meantime by a transaction that also found nothing to settle.
        return False
    return True

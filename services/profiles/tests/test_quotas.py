"""Quotas and rate limits on a real database (SQLite, and PostgreSQL when one is configured):
reservations never overspend, settle on completion and refund images that failed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event as sqla_event

from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.jobs import JobImage, JobProgress, JobStatus, JobStatusChanged
from atelier_contracts.profiles import (
    Profile,
    ProfilesChanged,
    QuotaReleaseReply,
    QuotaReleaseRequest,
    QuotaReserveBatch,
    QuotaReserveBatchReply,
    QuotaReserveReply,
    QuotaReserveRequest,
)
from atelier_contracts.subjects import Subject
from atelier_contracts.testing import QUERY_TIMEOUT_S, job_view
from atelier_database import Database
from atelier_messaging import query
from atelier_profiles.governance import GovernanceService, period_bounds
from atelier_profiles.governance_models import QuotaOverrideInput, QuotaPolicy
from atelier_profiles.governance_repository import AuditFilter, GovernanceRepository
from atelier_profiles.group_commit import BatchFailed
from atelier_profiles.quota_ledger import InFlightLimits
from atelier_profiles.repository import ProfileRepository
from atelier_profiles.service import ProfileService
from atelier_security import at_rest_sealer, transport_sealer

from .conftest import RunningApp, profile_fields

NOON = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)  # a Wednesday


class Clock:
    def __init__(self, now: datetime = NOON) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Governed:
    governance: GovernanceService
    profiles: ProfileService
    repo: GovernanceRepository
    clock: Clock
    database: Database

    async def profile(self, credit_cost: float, name: str = "Priced") -> Profile:
        return await self.profiles.create_profile(
            profile_fields(name=name, credit_cost=credit_cost)
        )

    async def reserve(self, job_id: str, profile: Profile, **overrides: Any) -> QuotaReserveReply:
        fields: dict[str, Any] = {
            "job_id": job_id,
            "user_id": "alice",
            "project": "alpha",
            "profile_id": profile.id,
            "count": 1,
        }
        fields.update(overrides)
        return await self.governance.reserve(QuotaReserveRequest(**fields))

    async def used(self, user_id: str = "alice") -> float:
        return (await self.governance.user_quota(user_id)).used


@pytest.fixture
async def governed(database_url: str) -> AsyncIterator[Governed]:
    """Profiles and governance on a fresh database (`database_url`: SQLite file, or a throwaway
    PostgreSQL database)."""
    database = Database(database_url)
    profiles_repo = ProfileRepository(database)
    await profiles_repo.create_tables()

    async def publish(_: ProfilesChanged) -> None:
        return None

    profiles = ProfileService(profiles_repo, publish)
    clock = Clock()
    repo = GovernanceRepository(database)
    governance = GovernanceService(
        repo,
        profiles,
        at_rest=at_rest_sealer("at rest"),
        transport=transport_sealer("transport"),
        clock=clock,
    )
    try:
        yield Governed(governance, profiles, repo, clock, database)
    finally:
        await database.dispose()


def final_job(
    job_id: str,
    status: JobStatus,
    *,
    count: int,
    landed: int,
    profile: Profile,
    user_id: str = "alice",
    error: ErrorInfo | None = None,
    prompt: str = "A lighthouse",
    finished: datetime = NOON,
    images: list[JobImage] | None = None,
) -> JobStatusChanged:
    view = job_view(
        id=job_id,
        project="alpha",
        user_id=user_id,
        profile=profile,
        status=status,
        prompt=prompt,
        assembled_prompt=f"{prompt}. Mara (character): A smuggler.",
        count=count,
        progress=JobProgress(total=count, landed=landed, failed=count - landed),
        images=images or [],
        error=error,
        created_at=finished - timedelta(seconds=30),
        updated_at=finished,
    )
    return JobStatusChanged(job=view)


@pytest.mark.parametrize(("limit", "cost", "count"), [(10, 1.0, 1), (3.0, 0.3, 1), (9, 1.5, 2)])
async def test_fifty_parallel_reservations_never_overspend(
    governed: Governed, limit: float, cost: float, count: int
) -> None:
    await governed.governance.set_policy(
        QuotaPolicy(credits_per_period=limit, rate_limit_count=None)
    )
    profile = await governed.profile(cost)
    replies = await asyncio.gather(
        *(governed.reserve(f"job-{i}", profile, count=count) for i in range(50))
    )
    reserved = [r for r in replies if r.outcome == "reserved"]
    refused = [r for r in replies if r.outcome == "quota_exceeded"]
    fits = int(round(limit / (cost * count), 6))
    assert len(reserved) == fits, [r.outcome for r in replies]
    assert len(refused) == 50 - fits
    assert await governed.used() == pytest.approx(fits * cost * count)
    assert await governed.used() <= limit
    for reply in refused:
        assert reply.remaining is not None and reply.remaining < cost * count
        assert reply.resets_at == datetime(2026, 4, 1, tzinfo=UTC)
        assert "renew" in reply.message


async def test_the_rate_limit_holds_under_parallel_submissions(governed: Governed) -> None:
    await governed.governance.set_policy(
        QuotaPolicy(credits_per_period=None, rate_limit_count=5, rate_limit_window_s=60)
    )
    profile = await governed.profile(1)
    replies = await asyncio.gather(*(governed.reserve(f"job-{i}", profile) for i in range(50)))
    assert [r.outcome for r in replies].count("reserved") == 5
    limited = [r for r in replies if r.outcome == "rate_limited"]
    assert len(limited) == 45
    assert all(0 < (r.retry_after_s or 0) <= 60 for r in limited)
    assert "too quickly" in limited[0].message

    governed.clock.now = NOON + timedelta(seconds=61)
    assert (await governed.reserve("later", profile)).outcome == "reserved"


def bounded(governed: Governed, **limits: int) -> GovernanceService:
    """The same governance, holding each user to what they may have in flight."""
    return GovernanceService(
        governed.repo,
        governed.profiles,
        at_rest=at_rest_sealer("at rest"),
        transport=transport_sealer("transport"),
        clock=governed.clock,
        in_flight=InFlightLimits(**limits),
    )


async def test_one_user_cannot_hold_more_bytes_in_flight_than_their_budget(
    governed: Governed,
) -> None:
    governance = bounded(governed, max_bytes=10 * 1024 * 1024)
    profile = await governed.profile(1)

    def request(job_id: str, user: str = "alice") -> QuotaReserveRequest:
        return QuotaReserveRequest(
            job_id=job_id,
            user_id=user,
            project="alpha",
            profile_id=profile.id,
            count=1,
            payload_bytes=4 * 1024 * 1024,
        )

    replies = await asyncio.gather(*(governance.reserve(request(f"big-{i}")) for i in range(6)))
    assert [r.outcome for r in replies].count("reserved") == 2  # 8 of 10 MiB; a third passes
    refused = next(r for r in replies if r.outcome == "too_much_in_flight")
    assert "ATELIER_PROFILES_USER_MAX_BYTES_IN_FLIGHT" in refused.message
    assert refused.retry_after_s and refused.cost == 0
    # Another writer is not held back by alice's backlog.
    assert (await governance.reserve(request("bobs", user="bob"))).outcome == "reserved"
    # A job that ends gives its room back.
    held = next(f"big-{i}" for i, r in enumerate(replies) if r.outcome == "reserved")
    done = final_job(held, JobStatus.COMPLETED, count=1, landed=1, profile=profile)
    assert await governance.record_job_outcome(done) is True
    assert (await governance.reserve(request("after"))).outcome == "reserved"
    # A released one too (its job was never queued).
    assert await governance.release("after") is True
    assert (await governance.reserve(request("again"))).outcome == "reserved"


async def test_one_user_cannot_have_more_jobs_in_flight_than_allowed(governed: Governed) -> None:
    governance = bounded(governed, max_jobs=3)
    profile = await governed.profile(1)
    outcomes = [
        (await governance.reserve(request)).outcome
        for request in (
            QuotaReserveRequest(
                job_id=f"job-{i}", user_id="alice", project="alpha", profile_id=profile.id, count=1
            )
            for i in range(4)
        )
    ]
    assert outcomes == ["reserved", "reserved", "reserved", "too_much_in_flight"]
    retry = QuotaReserveRequest(
        job_id="job-0", user_id="alice", project="alpha", profile_id=profile.id, count=1
    )
    assert (await governance.reserve(retry)).outcome == "reserved"  # an idempotent retry


async def test_the_same_job_reserves_once(governed: Governed) -> None:
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=10))
    profile = await governed.profile(2)
    first = await governed.reserve("job-1", profile, count=2)
    again = await governed.reserve("job-1", profile, count=2)
    assert first.outcome == again.outcome == "reserved"
    assert first.cost == again.cost == 4
    assert await governed.used() == 4


async def test_settlement_refunds_failed_images_once(governed: Governed) -> None:
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=100))
    profile = await governed.profile(2.5)
    for job_id in ("partial", "failed", "completed", "cancelled"):
        assert (await governed.reserve(job_id, profile, count=4)).outcome == "reserved"
    assert await governed.used() == 40

    blocked = ErrorInfo.of(ErrorClass.CONTENT_BLOCKED)
    outcomes = [
        final_job("partial", JobStatus.PARTIAL, count=4, landed=1, profile=profile, error=blocked),
        final_job("failed", JobStatus.FAILED, count=4, landed=0, profile=profile, error=blocked),
        final_job("completed", JobStatus.COMPLETED, count=4, landed=4, profile=profile),
        final_job("cancelled", JobStatus.CANCELLED, count=4, landed=2, profile=profile),
    ]
    for event in outcomes:
        assert await governed.governance.record_job_outcome(event) is True
    # 1 + 0 + 4 + 2 images landed at 2.5 credits each.
    assert await governed.used() == pytest.approx(17.5)

    # A redelivered final event, and a non-final one, change nothing.
    assert await governed.governance.record_job_outcome(outcomes[0]) is False
    generating = final_job("x", JobStatus.GENERATING, count=1, landed=0, profile=profile)
    assert await governed.governance.record_job_outcome(generating) is False
    assert await governed.used() == pytest.approx(17.5)

    reservation = await governed.repo.get_reservation("partial")
    assert reservation is not None and reservation.settled
    assert reservation.refunded_milli == 7500


async def test_parallel_redeliveries_of_one_outcome_refund_once(governed: Governed) -> None:
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=100))
    profile = await governed.profile(1)
    await governed.reserve("job", profile, count=4)
    event = final_job("job", JobStatus.FAILED, count=4, landed=0, profile=profile)
    results = await asyncio.gather(
        *(governed.governance.record_job_outcome(event) for _ in range(5)),
        return_exceptions=True,
    )
    assert [r for r in results if r is True] == [True]
    assert await governed.used() == 0


async def test_a_job_that_was_never_queued_gets_its_credits_back(governed: Governed) -> None:
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=5))
    profile = await governed.profile(5)
    assert (await governed.reserve("job-1", profile)).outcome == "reserved"
    assert (await governed.reserve("job-2", profile)).outcome == "quota_exceeded"
    assert await governed.governance.release("job-1") is True
    assert await governed.governance.release("job-1") is False
    assert (await governed.reserve("job-2", profile)).outcome == "reserved"


async def test_overrides_beat_the_default(governed: Governed) -> None:
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=2))
    await governed.governance.set_override(
        "alice", QuotaOverrideInput(credits_per_period=None, note="unlimited for the demo")
    )
    await governed.governance.set_override("carol", QuotaOverrideInput(credits_per_period=10))
    profile = await governed.profile(1)
    assert (await governed.reserve("a", profile, count=4)).outcome == "reserved"
    assert (await governed.reserve("b", profile, count=4, user_id="bob")).outcome == (
        "quota_exceeded"
    )
    assert (await governed.reserve("c", profile, count=4, user_id="carol")).outcome == "reserved"

    carol = await governed.governance.user_quota("carol")
    assert (carol.limit, carol.used, carol.remaining, carol.overridden) == (10, 4, 6, True)
    await governed.governance.delete_override("carol")
    carol = await governed.governance.user_quota("carol")
    assert (carol.limit, carol.remaining, carol.overridden) == (2, 0, False)


async def test_a_new_period_starts_from_zero(governed: Governed) -> None:
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=1, period="day"))
    profile = await governed.profile(1)
    assert (await governed.reserve("d1", profile)).outcome == "reserved"
    refused = await governed.reserve("d1b", profile)
    assert refused.outcome == "quota_exceeded"
    assert refused.resets_at == datetime(2026, 3, 19, tzinfo=UTC)
    governed.clock.now = NOON + timedelta(days=1)
    assert (await governed.reserve("d2", profile)).outcome == "reserved"


@dataclass
class SqlUse:
    statements: int = 0
    connections: int = 0


@contextmanager
def sql_use(database: Database) -> Iterator[SqlUse]:
    """Counts the statements sent and the connections taken from the pool inside the block, on
    both of the database's engines (the async one, and the blocking one of `run_sync`)."""
    use = SqlUse()
    engines = (database.engine.sync_engine, database.sync_engine)

    def on_statement(*_: Any) -> None:
        use.statements += 1

    def on_checkout(*_: Any) -> None:
        use.connections += 1

    for engine in engines:
        sqla_event.listen(engine, "before_cursor_execute", on_statement)
        sqla_event.listen(engine, "checkout", on_checkout)
    try:
        yield use
    finally:
        for engine in engines:
            sqla_event.remove(engine, "before_cursor_execute", on_statement)
            sqla_event.remove(engine, "checkout", on_checkout)


async def test_reserving_and_settling_take_one_transaction_of_few_statements(
    governed: Governed,
) -> None:
    # Every submission reserves and every finished job settles: each is one connection and one
    # transaction, reading the policy, override and price with the reservation itself.
    await governed.governance.set_policy(
        QuotaPolicy(credits_per_period=100, rate_limit_count=3, rate_limit_window_s=60)
    )
    await governed.governance.set_override("bob", QuotaOverrideInput(credits_per_period=1))
    profile = await governed.profile(1)

    async def reserve(job_id: str, **overrides: Any) -> tuple[str, SqlUse]:
        with sql_use(governed.database) as use:
            reply = await governed.reserve(job_id, profile, **overrides)
        return reply.outcome, use

    cases = [
        ("first", {}, "reserved"),  # also creates the period's usage row
        ("second", {}, "reserved"),
        ("first", {}, "reserved"),  # a retry: holds what it held
        ("third", {}, "reserved"),
        ("fourth", {}, "rate_limited"),
        ("bobs", {"user_id": "bob", "count": 2}, "quota_exceeded"),
    ]
    for job_id, overrides, expected in cases:
        outcome, use = await reserve(job_id, **overrides)
        assert outcome == expected, job_id
        assert use.connections == 1, (job_id, use)
        assert use.statements <= 5, (job_id, use)  # 10 statements on 5 connections before

    generating = final_job("first", JobStatus.GENERATING, count=1, landed=0, profile=profile)
    failed = final_job("first", JobStatus.FAILED, count=1, landed=0, profile=profile)
    with sql_use(governed.database) as use:
        assert await governed.governance.record_job_outcome(generating) is False
    assert (use.statements, use.connections) == (0, 0)  # most status events are not final
    for recorded in (True, False):  # the outcome, then its redelivery
        with sql_use(governed.database) as use:
            assert await governed.governance.record_job_outcome(failed) is recorded
        assert use.connections == 1 and use.statements <= 3, use
    assert await governed.used() == 2


async def test_a_job_reserved_again_says_it_was_repeated_and_holds_nothing_more(
    governed: Governed,
) -> None:
    # The gateway asks dispatch for a keyed job only when its reservation says `repeated`.
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=10, rate_limit_count=1))
    profile = await governed.profile(2)
    first = await governed.reserve("job", profile, count=2)
    again = await governed.reserve("job", profile, count=2)  # even past the rate limit
    assert (first.outcome, first.repeated) == ("reserved", False)
    assert (again.outcome, again.repeated, again.cost) == ("reserved", True, 4)
    assert await governed.used() == 4
    settled = final_job("job", JobStatus.COMPLETED, count=2, landed=2, profile=profile)
    assert await governed.governance.record_job_outcome(settled) is True
    after = await governed.reserve("job", profile, count=2)  # a retry after the job ended
    assert (after.outcome, after.repeated) == ("reserved", True)
    assert await governed.used() == 4
    assert (await governed.reserve("other", profile)).outcome == "rate_limited"


async def test_jobs_are_charged_the_price_they_reserved_at(governed: Governed) -> None:
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=100))
    profile = await governed.profile(2)
    assert (await governed.reserve("job", profile, count=2)).cost == 4
    await governed.profiles.replace_profile(
        profile.id, profile_fields(name=profile.name, credit_cost=5)
    )
    event = final_job("job", JobStatus.COMPLETED, count=2, landed=2, profile=profile)
    assert await governed.governance.record_job_outcome(event) is True
    assert await governed.used() == 4
    page = await governed.governance.audits(AuditFilter(), limit=10, offset=0)
    assert [entry.cost for entry in page.items] == [4]


def made_by(index: int, profile: Profile | None, reason: str | None = None) -> JobImage:
    """A landed image as dispatch reports it: by `profile` at its price (None: a dispatch that
    does not say)."""
    return JobImage(
        media_id=f"m{index}",
        index=index,
        width=64,
        height=64,
        content_type="image/png",
        profile_id=profile.id if profile else None,
        profile_name=profile.name if profile else None,
        credit_cost=profile.credit_cost if profile else None,
        fallback_reason=reason,
    )


async def test_credits_settle_at_the_profile_that_made_each_image(governed: Governed) -> None:
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=100))
    own = await governed.profile(2, name="Own")
    cheap = await governed.profile(0.5, name="Cheap")
    assert (await governed.reserve("job", own, count=4)).cost == 8
    images = [
        made_by(0, own),
        made_by(1, cheap, reason="'Own' (offline) was unavailable after 3 attempts: timeout"),
        made_by(2, None),  # no price given: the reservation's
    ]
    event = final_job("job", JobStatus.PARTIAL, count=4, landed=3, profile=own, images=images)
    assert await governed.governance.record_job_outcome(event) is True
    # 2 + 0.5 + 2; the fourth image failed and costs nothing.
    assert await governed.used() == pytest.approx(4.5)
    reservation = await governed.repo.get_reservation("job")
    assert reservation is not None and reservation.refunded_milli == 3500
    [entry] = (await governed.governance.audits(AuditFilter(), limit=10, offset=0)).items
    assert entry.cost == pytest.approx(4.5)
    [fallback] = entry.fallbacks
    assert (fallback.index, fallback.profile_name, fallback.credit_cost) == (1, "Cheap", 0.5)
    assert fallback.reason == images[1].fallback_reason
    assert fallback.media_id == "m1" and fallback.profile_id == cheap.id

    assert await governed.governance.record_job_outcome(event) is False  # a redelivery
    assert await governed.used() == pytest.approx(4.5)


async def test_a_pricier_fallback_is_charged_past_the_reservation(governed: Governed) -> None:
    # The images were made: the user pays what they cost, even past the period's limit (the
    # next submission is then refused), and the audit and the usage agree.
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=3))
    own = await governed.profile(1, name="Own")
    pricey = await governed.profile(3, name="Pricey")
    assert (await governed.reserve("job", own, count=2)).outcome == "reserved"
    reason = "'Own' (offline) was unavailable after 3 attempts: provider_unavailable"
    images = [made_by(0, pricey, reason), made_by(1, pricey, reason)]
    event = final_job("job", JobStatus.COMPLETED, count=2, landed=2, profile=own, images=images)
    assert await governed.governance.record_job_outcome(event) is True
    assert await governed.used() == 6
    [entry] = (await governed.governance.audits(AuditFilter(), limit=10, offset=0)).items
    assert entry.cost == 6 and [f.index for f in entry.fallbacks] == [0, 1]
    assert (await governed.reserve("next", own)).outcome == "quota_exceeded"
    assert await governed.governance.record_job_outcome(event) is False
    assert await governed.used() == 6


async def test_a_job_that_reserved_nothing_is_charged_its_images_prices(governed: Governed) -> None:
    own = await governed.profile(2, name="Own")
    cheap = await governed.profile(0.25, name="Cheap")
    images = [made_by(0, cheap, "'Own' (offline) was unavailable after 3 attempts: auth")]
    images.append(made_by(1, None))  # at the profile's current price
    event = final_job("never", JobStatus.COMPLETED, count=2, landed=2, profile=own, images=images)
    assert await governed.governance.record_job_outcome(event) is True
    [entry] = (await governed.governance.audits(AuditFilter(), limit=10, offset=0)).items
    assert entry.cost == pytest.approx(2.25)
    assert [f.profile_name for f in entry.fallbacks] == ["Cheap"]


async def test_a_job_on_a_deleted_profile_reserves_nothing(governed: Governed) -> None:
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=1))
    profile = await governed.profile(5)
    await governed.profiles.delete_profile(profile.id)
    reply = await governed.reserve("job", profile, count=4)
    assert (reply.outcome, reply.cost, reply.remaining) == ("reserved", 0, 1)
    event = final_job("job", JobStatus.COMPLETED, count=4, landed=4, profile=profile)
    assert await governed.governance.record_job_outcome(event) is True
    assert await governed.used() == 0


def test_period_bounds() -> None:
    assert period_bounds("day", NOON) == (
        datetime(2026, 3, 18, tzinfo=UTC),
        datetime(2026, 3, 19, tzinfo=UTC),
    )
    assert period_bounds("week", NOON) == (
        datetime(2026, 3, 16, tzinfo=UTC),
        datetime(2026, 3, 23, tzinfo=UTC),
    )
    december = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_bounds("month", december) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


async def test_quota_admin_api(running_app: RunningApp) -> None:
    client = running_app.client
    defaults = (await client.get("/admin/v1/quotas")).json()
    assert defaults == {
        "policy": {
            "credits_per_period": None,
            "period": "month",
            "rate_limit_count": 120,
            "rate_limit_window_s": 60.0,
        },
        "overrides": [],
    }
    policy = {"credits_per_period": 50, "period": "week", "rate_limit_count": 10}
    put = await client.put("/admin/v1/quotas", json=policy)
    assert put.status_code == 200 and put.json()["credits_per_period"] == 50

    override = await client.put("/admin/v1/quotas/users/bob", json={"credits_per_period": 5})
    assert override.status_code == 200 and override.json()["user_id"] == "bob"
    bob = (await client.get("/admin/v1/quotas/users/bob")).json()
    assert (bob["limit"], bob["used"], bob["overridden"], bob["period"]) == (5, 0, True, "week")
    listed = (await client.get("/admin/v1/quotas")).json()
    assert [o["user_id"] for o in listed["overrides"]] == ["bob"]

    assert (await client.delete("/admin/v1/quotas/users/bob")).status_code == 204
    assert (await client.delete("/admin/v1/quotas/users/bob")).status_code == 404
    bad = await client.put("/admin/v1/quotas", json={"credits_per_period": -1})
    assert bad.status_code == 422


async def test_reserve_and_release_over_nats(running_app: RunningApp) -> None:
    profile = await running_app.service.create_profile(profile_fields(credit_cost=3))
    await running_app.client.put("/admin/v1/quotas", json={"credits_per_period": 4})
    request = QuotaReserveRequest(
        job_id="job-1", user_id="alice", project="alpha", profile_id=profile.id, count=1
    )
    batch = QuotaReserveBatch(requests=[request])
    [reply] = (
        await query(
            running_app.broker,
            Subject.QUOTA_RESERVE,
            batch,
            QuotaReserveBatchReply,
            timeout=QUERY_TIMEOUT_S,
        )
    ).replies
    assert (reply.outcome, reply.cost, reply.remaining, reply.limit) == ("reserved", 3, 1, 4)
    second = request.model_copy(update={"job_id": "job-2"})
    # Two more in one batch: each decided on its own, in order (the first fits, no second).
    third = request.model_copy(update={"job_id": "job-3"})
    both = QuotaReserveBatch(requests=[second, third])
    refused = (
        await query(
            running_app.broker,
            Subject.QUOTA_RESERVE,
            both,
            QuotaReserveBatchReply,
            timeout=QUERY_TIMEOUT_S,
        )
    ).replies
    assert [r.outcome for r in refused] == ["quota_exceeded", "quota_exceeded"]
    assert refused[0].remaining == 1
    released = await query(
        running_app.broker,
        Subject.QUOTA_RELEASE,
        QuotaReleaseRequest(job_id="job-1"),
        QuotaReleaseReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert released.released is True


# --- Group commit (docs/adr/0016-quota-reservation-without-waiting.md) ----------------------


async def test_a_burst_of_many_users_is_committed_together_not_in_turn(
    governed: Governed,
) -> None:
    # A reservation never waits for a queue of others' transactions: those that arrive while
    # one transaction runs are committed together in the next one.
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=10, rate_limit_count=None))
    profile = await governed.profile(1)
    with sql_use(governed.database) as use:
        replies = await asyncio.gather(
            *(governed.reserve(f"job-{i}", profile, user_id=f"user-{i}") for i in range(200))
        )
    assert [r.outcome for r in replies] == ["reserved"] * 200
    # 200 transactions before; now a handful (batches of at most 64).
    assert use.connections <= 5, use
    for user in ("user-0", "user-199"):
        assert await governed.used(user) == 1


async def test_one_users_burst_in_one_batch_still_never_overspends(governed: Governed) -> None:
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=7, rate_limit_count=None))
    profile = await governed.profile(1)
    # Interleaved with other users, in one batch: alice's members run in arrival order.
    requests = [
        governed.reserve(f"job-{i}", profile, user_id="alice" if i % 2 else f"other-{i}")
        for i in range(40)
    ]
    replies = await asyncio.gather(*requests)
    alices = [r.outcome for i, r in enumerate(replies) if i % 2]
    assert alices == ["reserved"] * 7 + ["quota_exceeded"] * 13
    assert await governed.used() == 7


async def test_two_replicas_on_one_database_never_overspend(governed: Governed) -> None:
    # Two profiles replicas: their own Database (connections, pool) and repository each, one
    # database. PostgreSQL's row lock (SQLite's write lock) keeps each user's total exact.
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=25, rate_limit_count=None))
    profile = await governed.profile(1)
    other_db = Database(governed.database.url)
    try:
        replica = GovernanceService(
            GovernanceRepository(other_db),
            governed.profiles,
            at_rest=at_rest_sealer("at rest"),
            transport=transport_sealer("transport"),
            clock=governed.clock,
        )

        def request(i: int, user: str) -> QuotaReserveRequest:
            return QuotaReserveRequest(
                job_id=f"job-{user}-{i}",
                user_id=user,
                project="alpha",
                profile_id=profile.id,
                count=1,
            )

        replies = await asyncio.gather(
            *(
                (governed.governance if i % 2 else replica).reserve(request(i, user))
                for i in range(60)
                for user in ("alice", "bob")
            )
        )
        for user in ("alice", "bob"):
            assert await governed.used(user) == 25
        assert [r.outcome for r in replies].count("reserved") == 50
    finally:
        await other_db.dispose()


async def test_a_batch_that_fails_answers_every_member_and_reserves_nothing(
    governed: Governed,
) -> None:
    await governed.governance.set_policy(QuotaPolicy(credits_per_period=10, rate_limit_count=None))
    profile = await governed.profile(1)

    def fail_on_poison(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("INSERT INTO profiles_quota_reservation") and (
            "poison" in str(parameters)
        ):
            raise RuntimeError("the disk is full")

    engine = governed.database.sync_engine
    sqla_event.listen(engine, "before_cursor_execute", fail_on_poison)
    try:
        results = await asyncio.gather(
            *(governed.reserve(f"job-{i}", profile, user_id=f"user-{i}") for i in range(5)),
            governed.reserve("poison", profile),
            return_exceptions=True,
        )
    finally:
        sqla_event.remove(engine, "before_cursor_execute", fail_on_poison)
    assert all(isinstance(r, BatchFailed) for r in results), results
    assert "rolled back" in str(results[0])
    # Nothing of the batch was kept: not the credits, not the reservations.
    for user in ("alice", "user-0", "user-4"):
        assert await governed.used(user) == 0
    assert await governed.repo.get_reservation("job-0") is None
    # The next batch goes on as usual, and a retry of a failed member reserves once.
    assert (await governed.reserve("job-0", profile, user_id="user-0")).outcome == "reserved"
    assert await governed.used("user-0") == 1

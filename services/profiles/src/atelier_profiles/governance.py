"""Governance: provider credentials, per-user quotas and rate limits, and the generation audit.

No broker and no HTTP here (like `service.py`): the repository is passed in, and change events
go out through `ProfileService.announce`. Provider keys exist in plaintext only inside
`set_credential` (sealed before anything is stored) and `sealed_credential` (re-sealed for the
transport before anything is sent); no log line, error message or event carries them.
"""

from __future__ import annotations

import logging
import math
from calendar import monthrange
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from atelier_contracts.clock import as_utc
from atelier_contracts.errors import NotFound
from atelier_contracts.jobs import FINAL_STATUSES, JobImage, JobStatusChanged, JobView
from atelier_contracts.profiles import (
    AuditFallback,
    CredentialReply,
    Money,
    QuotaEstimateReply,
    QuotaEstimateRequest,
    QuotaReserveReply,
    QuotaReserveRequest,
)
from atelier_contracts.providers import KNOWN_PROVIDERS
from atelier_profiles.governance_models import (
    DEFAULT_PERIOD,
    DEFAULT_RATE_LIMIT,
    DEFAULT_RATE_WINDOW_S,
    AuditEntry,
    AuditPage,
    AuditSummary,
    CredentialInput,
    ProfileTally,
    ProviderStatus,
    QuotaOverride,
    QuotaOverrideInput,
    QuotaOverview,
    QuotaPolicy,
    Tally,
    UserQuota,
    UserTally,
)
from atelier_profiles.governance_repository import AuditFilter, GovernanceRepository
from atelier_profiles.money import from_milli, from_milli_or_none, to_milli, to_milli_or_none
from atelier_profiles.origins import default_origins
from atelier_profiles.quota_ledger import InFlightLimits, QuotaPolicyValues, Reservation
from atelier_profiles.service import ProfileService
from atelier_profiles.tables import AuditRow, QuotaOverrideRow
from atelier_security import SealBroken, Sealer, mask

log = logging.getLogger("atelier.profiles.governance")

_DEFAULT_POLICY_VALUES = QuotaPolicyValues(
    credits_milli=None,
    period=DEFAULT_PERIOD,
    rate_limit_count=DEFAULT_RATE_LIMIT,
    rate_limit_window_s=DEFAULT_RATE_WINDOW_S,
)


# A user over their in-flight budget may try again once some of their jobs have ended.
IN_FLIGHT_RETRY_S = 5.0


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def in_flight_message(limits: InFlightLimits, jobs: int, held_bytes: int) -> str:
    """Why a submission waits for the user's own jobs, naming the limit that was reached."""
    if limits.max_jobs is not None and jobs >= limits.max_jobs:
        return (
            f"You already have {jobs} generations queued or running, the most one writer may "
            f"have at once (ATELIER_PROFILES_USER_MAX_JOBS_IN_FLIGHT = {limits.max_jobs}); "
            "submit this one when some of them have finished."
        )
    return (
        f"Your generations queued or running already carry {_mib(held_bytes)} of requests "
        "(reference images included); this one would pass the "
        f"{_mib(limits.max_bytes or 0)} one writer may have in flight "
        "(ATELIER_PROFILES_USER_MAX_BYTES_IN_FLIGHT). Submit it when some of them have finished, "
        "or send fewer or smaller reference images."
    )


# --- periods ---------------------------------------------------------------------------------


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """Start and end (exclusive) of the period holding `now`, in UTC."""
    day = as_utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    return start, start + timedelta(days=monthrange(start.year, start.month)[1])


def _plural(n: float, word: str) -> str:
    return f"{n:g} {word}" + ("" if n == 1 else "s")


class GovernanceService:
    def __init__(
        self,
        repo: GovernanceRepository,
        profiles: ProfileService,
        *,
        at_rest: Sealer,
        transport: Sealer,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        in_flight: InFlightLimits | None = None,
    ) -> None:
        self._repo = repo
        self._in_flight = in_flight or InFlightLimits()
        self._profiles = profiles
        self._at_rest = at_rest
        self._transport = transport
        self._clock = clock

    def _now(self) -> datetime:
        return self._clock()

    # --- provider credentials ----------------------------------------------------------------

    async def list_providers(self) -> list[ProviderStatus]:
        stored = {row.provider: row for row in await self._repo.list_credentials()}
        in_profiles = await self._repo.providers_in_profiles()
        names = sorted(set(KNOWN_PROVIDERS) | set(stored) | set(in_profiles))
        return [
            ProviderStatus(
                name=name,
                known=name in KNOWN_PROVIDERS,
                credential_set=name in stored,
                credential_masked=stored[name].hint if name in stored else None,
                credential_updated_at=as_utc(stored[name].updated_at) if name in stored else None,
                default_origins=sorted(default_origins(name)),
                allowed_origins=list(stored[name].allowed_origins) if name in stored else [],
                deployment_origins=self._profiles.origins.deployment_origins(name),
                profiles=in_profiles.get(name, 0),
            )
            for name in names
        ]

    async def get_provider(self, name: str) -> ProviderStatus:
        for provider in await self.list_providers():
            if provider.name == name:
                return provider
        raise NotFound(f"There is no provider {name!r}; known: {', '.join(KNOWN_PROVIDERS)}.")

    async def set_credential(self, provider: str, credential: CredentialInput) -> ProviderStatus:
        """Store (or rotate) a provider's key, sealed; workers drop their cached copy."""
        if provider not in KNOWN_PROVIDERS:
            raise NotFound(
                f"There is no provider {provider!r}; known: {', '.join(KNOWN_PROVIDERS)}."
            )
        sealed = self._at_rest.seal(provider, credential.api_key)
        await self._repo.put_credential(
            provider, sealed, mask(credential.api_key), credential.allowed_origins
        )
        log.info(
            "provider credential set",
            extra={"provider": provider, "allowed_origins": credential.allowed_origins},
        )
        await self._profiles.announce("credentials", provider=provider)
        return await self.get_provider(provider)

    async def delete_credential(self, provider: str) -> None:
        if not await self._repo.delete_credential(provider):
            raise NotFound(f"No credential is stored for {provider!r}.")
        log.info("provider credential deleted", extra={"provider": provider})
        await self._profiles.announce("credentials", provider=provider)

    async def sealed_credential(self, provider: str) -> CredentialReply:
        """The stored key re-sealed for the transport, for a worker (`configured=False`: none)."""
        # Origins go with the key they were bound to; the deployment's go with any key.
        deployment = self._profiles.origins.deployment_origins(provider)
        row = await self._repo.get_credential(provider)
        if row is None:
            return CredentialReply(provider=provider, configured=False, allowed_origins=deployment)
        try:
            plaintext = self._at_rest.open(provider, row.ciphertext)
        except SealBroken:
            # Stored under another ATELIER_PROFILES_CREDENTIALS_KEY (or tampered with): the
            # worker falls back to its own key; an admin must set this one again.
            log.error("stored credential does not open", extra={"provider": provider})
            return CredentialReply(provider=provider, configured=False, allowed_origins=deployment)
        return CredentialReply(
            provider=provider,
            configured=True,
            sealed_key=self._transport.seal(provider, plaintext),
            allowed_origins=list(dict.fromkeys([*row.allowed_origins, *deployment])),
        )

    # --- quotas ------------------------------------------------------------------------------

    async def get_policy(self) -> QuotaPolicy:
        row = await self._repo.get_policy()
        if row is None:
            return QuotaPolicy()
        return QuotaPolicy(
            credits_per_period=from_milli_or_none(row.credits_milli),
            period=row.period,
            rate_limit_count=row.rate_limit_count,
            rate_limit_window_s=row.rate_limit_window_s,
        )

    async def set_policy(self, policy: QuotaPolicy) -> QuotaPolicy:
        await self._repo.save_policy(
            QuotaPolicyValues(
                credits_milli=to_milli_or_none(policy.credits_per_period),
                period=policy.period,
                rate_limit_count=policy.rate_limit_count,
                rate_limit_window_s=policy.rate_limit_window_s,
            )
        )
        return await self.get_policy()

    async def overview(self) -> QuotaOverview:
        return QuotaOverview(
            policy=await self.get_policy(),
            overrides=[_override_of(row) for row in await self._repo.list_overrides()],
        )

    async def set_override(self, user_id: str, override: QuotaOverrideInput) -> QuotaOverride:
        row = await self._repo.put_override(
            user_id, to_milli_or_none(override.credits_per_period), override.note
        )
        return _override_of(row)

    async def delete_override(self, user_id: str) -> None:
        if not await self._repo.delete_override(user_id):
            raise NotFound(f"User {user_id!r} has no quota override.")

    async def _limit_of(self, user_id: str, policy: QuotaPolicy) -> tuple[int | None, bool]:
        override = await self._repo.get_override(user_id)
        if override is not None:
            return override.credits_milli, True
        return to_milli_or_none(policy.credits_per_period), False

    async def user_quota(self, user_id: str) -> UserQuota:
        policy = await self.get_policy()
        limit, overridden = await self._limit_of(user_id, policy)
        start, end = period_bounds(policy.period, self._now())
        used = await self._repo.used_milli(user_id, start.date().isoformat())
        return UserQuota(
            user_id=user_id,
            limit=from_milli_or_none(limit),
            overridden=overridden,
            used=from_milli(used),
            remaining=None if limit is None else from_milli(max(0, limit - used)),
            period=policy.period,
            period_start=start,
            resets_at=end,
        )

    async def reserve(self, request: QuotaReserveRequest) -> QuotaReserveReply:
        """Hold the job's credits, or say why not (quota spent, or submitting too fast).

        The hot path of every submission: one transaction in the repository reads the terms
        (policy, override, price) and holds the credits; nothing is cached, so an admin's change
        applies to the next submission on every replica.
        """
        now = self._now()
        outcome = await self._repo.reserve(
            Reservation(
                request,
                now=now,
                default_policy=_DEFAULT_POLICY_VALUES,
                period_key=lambda period: period_bounds(period, now)[0].date().isoformat(),
                in_flight=self._in_flight,
            )
        )
        if not outcome.priced:
            # Deleted in the second since the gateway's catalog was read: the job still runs on
            # its snapshot. Nothing to price it with; the audit shows the 0.
            log.warning("reserving for an unknown profile", extra={"job_id": request.job_id})
        policy, limit = outcome.policy, outcome.limit_milli
        end = period_bounds(policy.period, now)[1]
        cost = from_milli(outcome.cost_milli)
        remaining = None if limit is None else from_milli(max(0, limit - outcome.used_milli))
        reply = QuotaReserveReply(
            outcome=outcome.outcome,
            message="Credits reserved.",
            cost=cost,
            limit=from_milli_or_none(limit),
            remaining=remaining,
            resets_at=end,
            repeated=outcome.repeated,
        )
        if outcome.outcome == "rate_limited":
            wait = math.ceil(outcome.retry_after_s or 1)
            count = policy.rate_limit_count or 0
            reply.retry_after_s = outcome.retry_after_s
            reply.message = (
                f"You are starting generations too quickly (at most {count} every "
                f"{_plural(policy.rate_limit_window_s, 'second')}); try again in "
                f"{_plural(wait, 'second')}."
            )
        elif outcome.outcome == "too_much_in_flight":
            # Every shared queue is bounded per user (DESIGN.md §5): one writer's backlog never
            # fills what the others share. It frees itself as the user's jobs end.
            reply.retry_after_s = IN_FLIGHT_RETRY_S
            reply.message = in_flight_message(
                self._in_flight, outcome.in_flight_jobs, outcome.in_flight_bytes
            )
        elif outcome.outcome == "quota_exceeded":
            left = remaining or 0.0
            reply.message = (
                f"This generation costs {_plural(cost, 'credit')}, but only {left:g} of your "
                f"{from_milli_or_none(limit) or 0:g} credits for this {policy.period} are left; "
                f"they renew at {end:%Y-%m-%d %H:%M} UTC."
            )
        return reply

    async def estimate(self, request: QuotaEstimateRequest) -> QuotaEstimateReply:
        """What a submission of this request would reserve now, reserving nothing (ADR 0024).
        Read with the reservation's own terms: the credits equal what `reserve` then holds,
        unless an admin changes the price or the quota in between."""
        now = self._now()
        outcome = await self._repo.estimate(
            user_id=request.user_id,
            profile_id=request.profile_id,
            count=request.count,
            default_policy=_DEFAULT_POLICY_VALUES,
            period_key=lambda period: period_bounds(period, now)[0].date().isoformat(),
        )
        limit = outcome.limit_milli
        price = outcome.price_per_image_usd
        return QuotaEstimateReply(
            credits=from_milli(outcome.cost_milli),
            credits_per_image=from_milli(outcome.per_image_milli),
            money=None if price is None else Money(amount=round(price * request.count, 6)),
            limit=from_milli_or_none(limit),
            remaining=None if limit is None else from_milli(max(0, limit - outcome.used_milli)),
            fits=limit is None or outcome.used_milli + outcome.cost_milli <= limit,
            resets_at=period_bounds(outcome.policy.period, now)[1],
            known_profile=outcome.priced,
        )

    async def release(self, job_id: str) -> bool:
        released = await self._repo.release(job_id)
        if released:
            log.info("quota reservation released", extra={"job_id": job_id})
        return released

    # --- job outcomes and the audit ----------------------------------------------------------

    async def record_job_outcome(self, event: JobStatusChanged) -> bool:
        """A final status settles the job's reservation and writes its audit entry (once).

        Dispatch sends each job's final status here once (`jobs.finished`); anything else is
        ignored. One transaction (`GovernanceRepository.record_outcome`).
        """
        job = event.job
        if job.status not in FINAL_STATUSES:
            return False
        landed = max(0, min(job.progress.landed, job.count))
        priced = [image for image in landed_images(job)[:landed] if image.credit_cost is not None]
        fallbacks = fallback_images(job)
        error = job.error
        audit = AuditRow(
            job_id=job.id,
            user_id=job.user_id,
            project=job.project,
            profile_id=job.profile_id,
            profile_name=job.profile_name,
            provider=job.provider,
            model=job.model,
            status=job.status.value,
            error_class=error.error_class.value if error else None,
            error_stage=error.stage if error else None,
            error_message=error.message if error else None,
            error_detail=error.detail if error else None,
            prompt=job.assembled_prompt or job.prompt,
            user_prompt=job.prompt,
            requested=job.count,
            landed=job.progress.landed,
            failed=job.progress.failed,
            cost_milli=0,  # priced by record_outcome
            job_created_at=job.created_at,
            finished_at=job.updated_at,
            recorded_at=self._now(),
            fallbacks=[item.model_dump(mode="json") for item in fallbacks] or None,
            receipt=job.receipt.model_dump(mode="json") if job.receipt else None,
        )
        # Credits settle at the profile that made each image (issue 16): its price when the
        # image carries one, else the reservation's.
        recorded = await self._repo.record_outcome(
            audit,
            landed,
            priced=len(priced),
            priced_milli=sum(to_milli(image.credit_cost or 0) for image in priced),
        )
        if recorded:
            log.info(
                "job outcome recorded",
                extra={"job_id": job.id, "status": job.status.value, "landed": landed},
            )
        return recorded

    async def audits(self, where: AuditFilter, *, limit: int, offset: int) -> AuditPage:
        rows, total = await self._repo.list_audits(_utc_filter(where), limit=limit, offset=offset)
        return AuditPage(
            items=[AuditEntry.of(row) for row in rows], total=total, limit=limit, offset=offset
        )

    async def audit_summary(self, where: AuditFilter) -> AuditSummary:
        groups = await self._repo.audit_summary(_utc_filter(where))
        jobs, images, cost = groups["all"][0] if groups["all"] else (0, 0, 0)
        by_user = [
            UserTally(user_id=user, jobs=n, images=int(i), cost=from_milli(int(c)))
            for user, n, i, c in groups["user"]
        ]
        by_profile = [
            ProfileTally(
                profile_id=pid, profile_name=name, jobs=n, images=int(i), cost=from_milli(int(c))
            )
            for pid, name, n, i, c in groups["profile"]
        ]
        return AuditSummary(
            total=Tally(jobs=int(jobs), images=int(images), cost=from_milli(int(cost))),
            by_status={status: int(n) for status, n, _, _ in groups["status"]},
            by_error_class={cls: int(n) for cls, n, _, _ in groups["error_class"]},
            by_user=sorted(by_user, key=lambda t: (-t.cost, t.user_id)),
            by_profile=sorted(by_profile, key=lambda t: (-t.cost, t.profile_id)),
        )


def landed_images(job: JobView) -> list[JobImage]:
    """The job's images, once each, in order (a job lists only images that landed)."""
    by_index = {image.index: image for image in job.images}
    return [by_index[index] for index in sorted(by_index)]


def fallback_images(job: JobView) -> list[AuditFallback]:
    """The images a profile other than the job's own made, as the audit records them."""
    return [
        AuditFallback.model_validate({**image.model_dump(), "reason": image.fallback_reason})
        for image in landed_images(job)
        if image.fallback_reason is not None
        or (image.profile_id is not None and image.profile_id != job.profile_id)
    ]


def _override_of(row: QuotaOverrideRow) -> QuotaOverride:
    return QuotaOverride(
        user_id=row.user_id,
        credits_per_period=from_milli_or_none(row.credits_milli),
        note=row.note,
        updated_at=as_utc(row.updated_at),
    )


def _utc_filter(where: AuditFilter) -> AuditFilter:
    """Timestamps are stored in UTC; a bound given with another offset (or none) is made UTC.

    A window with `since` at or after `until` is empty, not an error: it selects no job, and
    the rule could not be stated in the OpenAPI document (no JSON Schema compares two query
    parameters), so a client keeping to the document would have been refused.
    """
    return replace(
        where,
        since=as_utc(where.since) if where.since else None,
        until=as_utc(where.until) if where.until else None,
    )

"""Request/reply lookups other services make (core NATS; no stream, no acks), and the one
durable subscription: final job statuses, which settle quotas and write the audit.

One queue group, so each query is answered by exactly one replica. A handler that raises sends
no reply: the caller's request times out, which it treats as "profiles unavailable".
"""

from __future__ import annotations

import logging
from typing import Any

from faststream.nats import NatsBroker

from atelier_contracts.errors import AtelierError
from atelier_contracts.jobs import JobStatusChanged
from atelier_contracts.profiles import (
    AuditFilterQuery,
    AuditListQuery,
    AuditPageReply,
    AuditSummaryReply,
    CredentialQuery,
    CredentialReply,
    GenerationSettings,
    ProfileCommandReply,
    ProfileCreateCommand,
    ProfileDeleteCommand,
    ProfileQuery,
    ProfileReplaceCommand,
    ProfileReply,
    ProfilesListQuery,
    ProfilesListReply,
    QuotaReleaseReply,
    QuotaReleaseRequest,
    QuotaReserveReply,
    QuotaReserveRequest,
    RemoteError,
)
from atelier_contracts.subjects import JOB_FINISHED_ALL, Durable, Subject
from atelier_messaging import durable_subscriber
from atelier_profiles.governance import GovernanceService
from atelier_profiles.repository import AuditFilter
from atelier_profiles.service import ProfileService

QUEUE = "profiles"
# A core subscriber runs its handler one message at a time: a burst of submissions would wait
# for each other's reservation in turn. Reservations may run side by side; the database
# serializes those of one user (`GovernanceRepository.reserve`), and the connection pool
# (10 + 10 on PostgreSQL) has room for them.
QUOTA_WORKERS = 8

log = logging.getLogger("atelier.profiles.handlers")


def register_handlers(
    broker: NatsBroker, service: ProfileService, governance: GovernanceService
) -> None:
    @broker.subscriber(Subject.PROFILES_GET, queue=QUEUE)
    async def answer_profile(query: ProfileQuery) -> ProfileReply:
        return ProfileReply(profile=await service.find_profile(query.profile_id))

    @broker.subscriber(Subject.PROFILES_LIST, queue=QUEUE)
    async def answer_profiles_list(query: ProfilesListQuery) -> ProfilesListReply:
        return ProfilesListReply(
            settings=await service.get_settings(),
            profiles=await service.list_profiles(include_disabled=query.include_disabled),
        )

    @broker.subscriber(Subject.SETTINGS_GET, queue=QUEUE)
    async def answer_settings(_: Any = None) -> GenerationSettings:
        # The request body carries nothing: whatever was sent (even nothing) is ignored.
        return await service.get_settings()

    @broker.subscriber(Subject.PROFILES_CREDENTIALS, queue=QUEUE)
    async def answer_credentials(query: CredentialQuery) -> CredentialReply:
        # The reply carries the key sealed with the transport key, never the plaintext.
        return await governance.sealed_credential(query.provider)

    @broker.subscriber(Subject.QUOTA_RESERVE, queue=QUEUE, max_workers=QUOTA_WORKERS)
    async def answer_quota_reserve(request: QuotaReserveRequest) -> QuotaReserveReply:
        return await governance.reserve(request)

    @broker.subscriber(Subject.QUOTA_RELEASE, queue=QUEUE, max_workers=QUOTA_WORKERS)
    async def answer_quota_release(request: QuotaReleaseRequest) -> QuotaReleaseReply:
        return QuotaReleaseReply(released=await governance.release(request.job_id))

    # The gateway's Inkweld-compatible admin routes (docs/adr/0008-inkweld-facade.md): the same
    # service methods the admin API calls. A refusal (422, 404, 409) is answered in `error`;
    # raising would send no reply, and the gateway would take profiles for down.
    @broker.subscriber(Subject.PROFILES_CREATE, queue=QUEUE)
    async def create_profile(command: ProfileCreateCommand) -> ProfileCommandReply:
        log.info("profile create asked over NATS", extra={"requested_by": command.requested_by})
        try:
            return ProfileCommandReply(profile=await service.create_profile(command.fields))
        except AtelierError as exc:
            return ProfileCommandReply(error=RemoteError.of(exc))

    @broker.subscriber(Subject.PROFILES_REPLACE, queue=QUEUE)
    async def replace_profile(command: ProfileReplaceCommand) -> ProfileCommandReply:
        log.info(
            "profile change asked over NATS",
            extra={"profile_id": command.profile_id, "requested_by": command.requested_by},
        )
        try:
            profile = await service.replace_profile(command.profile_id, command.fields)
        except AtelierError as exc:
            return ProfileCommandReply(error=RemoteError.of(exc))
        return ProfileCommandReply(profile=profile)

    @broker.subscriber(Subject.PROFILES_DELETE, queue=QUEUE)
    async def delete_profile(command: ProfileDeleteCommand) -> ProfileCommandReply:
        log.info(
            "profile delete asked over NATS",
            extra={"profile_id": command.profile_id, "requested_by": command.requested_by},
        )
        try:
            await service.delete_profile(command.profile_id)
        except AtelierError as exc:
            return ProfileCommandReply(error=RemoteError.of(exc))
        return ProfileCommandReply()

    @broker.subscriber(Subject.AUDITS_LIST, queue=QUEUE)
    async def answer_audits(query: AuditListQuery) -> AuditPageReply:
        try:
            page = await governance.audits(
                _audit_filter(query), limit=query.limit, offset=query.offset
            )
        except AtelierError as exc:
            return AuditPageReply(error=RemoteError.of(exc))
        # Same field names: the provider's raw `detail` is left behind (the contract lacks it).
        return AuditPageReply.model_validate(page.model_dump())

    @broker.subscriber(Subject.AUDITS_SUMMARY, queue=QUEUE)
    async def answer_audit_summary(query: AuditFilterQuery) -> AuditSummaryReply:
        try:
            summary = await governance.audit_summary(_audit_filter(query))
        except AtelierError as exc:
            return AuditSummaryReply(error=RemoteError.of(exc))
        return AuditSummaryReply.model_validate(summary.model_dump())

    # Ack policy: ack once the outcome is stored (or was stored before: recording is idempotent
    # on the job id); a database error raises and the event is redelivered with backoff.
    # Non-final statuses are acked at once.
    @durable_subscriber(broker, JOB_FINISHED_ALL, Durable.PROFILES_JOB_OUTCOMES, max_deliver=20)
    async def record_job_outcome(event: JobStatusChanged) -> None:
        await governance.record_job_outcome(event)


def _audit_filter(query: AuditFilterQuery) -> AuditFilter:
    return AuditFilter(
        user_id=query.user_id,
        profile_id=query.profile_id,
        status=query.status,
        error_class=query.error_class,
        since=query.since,
        until=query.until,
        text=query.text or None,
    )

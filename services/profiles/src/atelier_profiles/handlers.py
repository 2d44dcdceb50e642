"""Request/reply lookups other services make (core NATS; no stream, no acks), and the one
durable subscription: final job statuses, which settle quotas and write the audit.

One queue group, so each query is answered by exactly one replica. A handler that raises sends
no reply: the caller's request times out, which it treats as "profiles unavailable".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from faststream.nats import NatsBroker, NatsMessage

from atelier_contracts.errors import AtelierError
from atelier_contracts.jobs import JobQuery, JobReply, JobStatusChanged
from atelier_contracts.media import MediaAssigned
from atelier_contracts.profiles import (
    AuditFilterQuery,
    AuditListQuery,
    AuditPageReply,
    AuditSummaryReply,
    CredentialQuery,
    CredentialReply,
    Profile,
    ProfileCommandReply,
    ProfileCreateCommand,
    ProfileDeleteCommand,
    ProfileQuery,
    ProfileReplaceCommand,
    ProfileReply,
    ProfilesListQuery,
    ProfilesListReply,
    QuotaEstimateReply,
    QuotaEstimateRequest,
    QuotaReleaseReply,
    QuotaReleaseRequest,
    QuotaReserveBatch,
    QuotaReserveBatchReply,
    RemoteError,
)
from atelier_contracts.subjects import JOB_FINISHED_ALL, Durable, Subject
from atelier_contracts.webhooks import WebhookDelivery
from atelier_messaging import declare_publishers, delivery_attempt, durable_subscriber, query
from atelier_profiles.governance import GovernanceService
from atelier_profiles.governance_repository import AuditFilter
from atelier_profiles.service import ProfileService
from atelier_profiles.webhooks import WebhookService

QUEUE = "profiles"
# A core subscriber runs its handler one message at a time: a burst of submissions would wait
# for each other's reservation in turn. Here every reservation that arrives is taken at once
# and joins the next group commit (`GovernanceRepository.reserve`), so the bound only caps the
# requests held in memory; past it they wait in the NATS subscription.
QUOTA_WORKERS = 512
# Deliveries of an outcome that wait for dispatch to give its whole texts (about a minute of
# backoff) before the audit settles for their start.
WHOLE_TEXTS_TRIES = 8

log = logging.getLogger("atelier.profiles.handlers")


def register_handlers(
    broker: NatsBroker,
    service: ProfileService,
    governance: GovernanceService,
    webhooks: WebhookService | None = None,
) -> None:
    declare_publishers(broker, "profiles")

    @broker.subscriber(Subject.PROFILES_GET, queue=QUEUE)
    async def answer_profile(query: ProfileQuery) -> ProfileReply:
        return ProfileReply(profile=await service.find_profile(query.profile_id))

    @broker.subscriber(Subject.PROFILES_LIST, queue=QUEUE)
    async def answer_profiles_list(query: ProfilesListQuery) -> ProfilesListReply:
        return ProfilesListReply(
            settings=await service.get_settings(),
            profiles=await service.list_profiles(include_disabled=query.include_disabled),
        )

    @broker.subscriber(Subject.PROFILES_CREDENTIALS, queue=QUEUE)
    async def answer_credentials(query: CredentialQuery) -> CredentialReply:
        # The reply carries the key sealed with the transport key, never the plaintext.
        return await governance.sealed_credential(query.provider)

    @broker.subscriber(Subject.QUOTA_RESERVE, queue=QUEUE, max_workers=QUOTA_WORKERS)
    async def answer_quota_reserve(batch: QuotaReserveBatch) -> QuotaReserveBatchReply:
        # Each reservation is decided on its own; together they join the next group commit.
        replies = await asyncio.gather(*(governance.reserve(r) for r in batch.requests))
        return QuotaReserveBatchReply(replies=list(replies))

    # Core NATS request/reply, read-only: nothing to ack; no answer is the gateway's 503.
    @broker.subscriber(Subject.QUOTA_ESTIMATE, queue=QUEUE)
    async def answer_quota_estimate(request: QuotaEstimateRequest) -> QuotaEstimateReply:
        return await governance.estimate(request)

    @broker.subscriber(Subject.QUOTA_RELEASE, queue=QUEUE, max_workers=QUOTA_WORKERS)
    async def answer_quota_release(request: QuotaReleaseRequest) -> QuotaReleaseReply:
        return QuotaReleaseReply(released=await governance.release(request.job_id))

    # The gateway's Inkweld-compatible admin routes (docs/adr/0008-inkweld-facade.md): the same
    # service methods the admin API calls, each answered by `_command_reply`.
    @broker.subscriber(Subject.PROFILES_CREATE, queue=QUEUE)
    async def create_profile(command: ProfileCreateCommand) -> ProfileCommandReply:
        log.info("profile create asked over NATS", extra={"requested_by": command.requested_by})
        return await _command_reply(service.create_profile(command.fields))

    @broker.subscriber(Subject.PROFILES_REPLACE, queue=QUEUE)
    async def replace_profile(command: ProfileReplaceCommand) -> ProfileCommandReply:
        log.info(
            "profile change asked over NATS",
            extra={"profile_id": command.profile_id, "requested_by": command.requested_by},
        )
        return await _command_reply(service.replace_profile(command.profile_id, command.fields))

    @broker.subscriber(Subject.PROFILES_DELETE, queue=QUEUE)
    async def delete_profile(command: ProfileDeleteCommand) -> ProfileCommandReply:
        log.info(
            "profile delete asked over NATS",
            extra={"profile_id": command.profile_id, "requested_by": command.requested_by},
        )
        return await _command_reply(service.delete_profile(command.profile_id))

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
    async def record_job_outcome(event: JobStatusChanged, msg: NatsMessage) -> None:
        insist = delivery_attempt(msg) < WHOLE_TEXTS_TRIES
        await governance.record_job_outcome(await _with_whole_texts(broker, event, insist))
        if webhooks is not None:
            # The outcome's webhooks ride on this delivery (no hop of their own, ADR 0025);
            # both steps are idempotent, so a redelivery after either is harmless.
            await webhooks.job_finished(event)


async def _with_whole_texts(
    broker: NatsBroker, event: JobStatusChanged, insist: bool
) -> JobStatusChanged:
    """An outcome carries the start of long texts (ADR 0018 addendum); the audit keeps them
    whole, read from dispatch. While `insist`, dispatch not answering fails the delivery (it is
    naked and comes back); past that the audit keeps the start rather than hold the settlement."""
    job = event.job
    if not job.texts_shortened:
        return event
    try:
        reply = await query(broker, Subject.JOBS_GET, JobQuery(job_id=job.id), JobReply)
    except Exception:
        if insist:
            raise
        log.warning("audit keeps shortened texts: dispatch did not answer", extra={"job": job.id})
        return event
    whole = reply.whole_job()
    if whole is None or whole.texts_shortened:
        return event
    return event.model_copy(update={"job": job.with_texts_of(whole)})


async def _command_reply(change: Awaitable[Profile | None]) -> ProfileCommandReply:
    """The changed profile (none after a delete), or a refusal (422, 404, 409) in `error`:
    raising would send no reply, and the gateway would take profiles for down."""
    try:
        return ProfileCommandReply(profile=await change)
    except AtelierError as exc:
        return ProfileCommandReply(error=RemoteError.of(exc))


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


def register_webhook_handlers(broker: NatsBroker, webhooks: WebhookService) -> None:
    """Webhooks (ADR 0025). Outcomes are fanned out per endpoint by `record_job_outcome`;
    assignments here. Deliveries have a durable of their own, so an endpoint that is down never
    holds anything else up: one it did not accept is naked with its schedule's delay, and
    JetStream keeps it until the next try."""

    @durable_subscriber(
        broker, Subject.MEDIA_ASSIGNED, Durable.WEBHOOKS_MEDIA_ASSIGNED, max_deliver=20
    )
    async def fan_out_assignment(event: MediaAssigned) -> None:
        await webhooks.media_assigned(event)

    # Each retry is one redelivery; a few more allow for failures of our own (database away).
    @durable_subscriber(
        broker,
        Subject.WEBHOOKS_DELIVER,
        Durable.WEBHOOKS_DELIVERIES,
        max_deliver=webhooks.policy.max_attempts + 5,
        ack_wait_s=max(60.0, webhooks.policy.timeout_s * 3),
        max_workers=16,
    )
    async def deliver_webhook(delivery: WebhookDelivery, msg: NatsMessage) -> None:
        delay = await webhooks.deliver(delivery, delivery_attempt(msg))
        if delay is not None:
            await msg.nack(delay=delay)

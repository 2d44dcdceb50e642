"""Request/reply lookups other services make (core NATS; no stream, no acks), and the one
durable subscription: final job statuses, which settle quotas and write the audit.

One queue group, so each query is answered by exactly one replica. A handler that raises sends
no reply: the caller's request times out, which it treats as "profiles unavailable".
"""

from __future__ import annotations

from typing import Any

from faststream.nats import NatsBroker

from atelier_contracts.jobs import JobStatusChanged
from atelier_contracts.profiles import (
    CredentialQuery,
    CredentialReply,
    GenerationSettings,
    ProfileQuery,
    ProfileReply,
    ProfilesListQuery,
    ProfilesListReply,
    QuotaReleaseReply,
    QuotaReleaseRequest,
    QuotaReserveReply,
    QuotaReserveRequest,
)
from atelier_contracts.subjects import JOB_STATUS_ALL, Durable, Subject
from atelier_messaging import durable_subscriber
from atelier_profiles.governance import GovernanceService
from atelier_profiles.service import ProfileService

QUEUE = "profiles"


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

    @broker.subscriber(Subject.QUOTA_RESERVE, queue=QUEUE)
    async def answer_quota_reserve(request: QuotaReserveRequest) -> QuotaReserveReply:
        return await governance.reserve(request)

    @broker.subscriber(Subject.QUOTA_RELEASE, queue=QUEUE)
    async def answer_quota_release(request: QuotaReleaseRequest) -> QuotaReleaseReply:
        return QuotaReleaseReply(released=await governance.release(request.job_id))

    # Ack policy: ack once the outcome is stored (or was stored before: recording is idempotent
    # on the job id); a database error raises and the event is redelivered with backoff.
    # Non-final statuses are acked at once.
    @durable_subscriber(broker, JOB_STATUS_ALL, Durable.PROFILES_JOB_OUTCOMES, max_deliver=20)
    async def record_job_outcome(event: JobStatusChanged) -> None:
        await governance.record_job_outcome(event)

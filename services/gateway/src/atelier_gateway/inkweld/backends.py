"""The profiles service's admin commands and audit reads, over NATS request/reply.

The same service methods the admin API calls answer them (`profiles.command.*`,
`profiles.query.audits`, `profiles.query.audit_summary`; docs/adr/0008-inkweld-facade.md). A
refusal comes back as `error` and is raised here as the `AtelierError` the admin API would have
answered; no answer at all is a 503 naming profiles, like every other query of the gateway.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import nats.errors
from faststream.exceptions import SubscriberNotFound
from faststream.nats import NatsBroker
from pydantic import BaseModel

from atelier_contracts.profiles import (
    AuditFilterQuery,
    AuditListQuery,
    AuditPageReply,
    AuditSummaryReply,
    Profile,
    ProfileCommandReply,
    ProfileCreateCommand,
    ProfileDeleteCommand,
    ProfileFields,
    ProfileQuery,
    ProfileReplaceCommand,
    ProfileReply,
)
from atelier_contracts.subjects import Subject
from atelier_gateway.backends import not_answering
from atelier_messaging import query

log = logging.getLogger("atelier.gateway.inkweld")

R = TypeVar("R", bound=BaseModel)

_NOT_ANSWERING = (TimeoutError, nats.errors.Error, SubscriberNotFound)


class ProfilesAdmin:
    def __init__(self, broker: NatsBroker, *, query_timeout_s: float = 3.0) -> None:
        self._broker = broker
        self._timeout = query_timeout_s

    async def _ask(self, subject: Subject, request: BaseModel, reply_type: type[R]) -> R:
        try:
            return await query(self._broker, subject, request, reply_type, self._timeout)
        except _NOT_ANSWERING as exc:
            # For a command this may also mean "done, but the answer was lost": the admin
            # re-reads before trying again (a second create is refused as a name conflict).
            log.warning(
                "profiles did not answer", extra={"subject": str(subject), "error": repr(exc)}
            )
            raise not_answering("profiles") from exc

    async def _command(self, subject: Subject, command: BaseModel) -> Profile | None:
        reply = await self._ask(subject, command, ProfileCommandReply)
        if reply.error is not None:
            raise reply.error.to_error()
        return reply.profile

    async def profile(self, profile_id: str) -> Profile | None:
        reply = await self._ask(
            Subject.PROFILES_GET, ProfileQuery(profile_id=profile_id), ProfileReply
        )
        return reply.profile

    async def create_profile(self, fields: ProfileFields, requested_by: str) -> Profile:
        command = ProfileCreateCommand(fields=fields, requested_by=requested_by)
        profile = await self._command(Subject.PROFILES_CREATE, command)
        assert profile is not None, "profiles answered a create without the profile"
        return profile

    async def replace_profile(
        self, profile_id: str, fields: ProfileFields, requested_by: str
    ) -> Profile:
        command = ProfileReplaceCommand(
            profile_id=profile_id, fields=fields, requested_by=requested_by
        )
        profile = await self._command(Subject.PROFILES_REPLACE, command)
        assert profile is not None, "profiles answered a change without the profile"
        return profile

    async def delete_profile(self, profile_id: str, requested_by: str) -> None:
        command = ProfileDeleteCommand(profile_id=profile_id, requested_by=requested_by)
        await self._command(Subject.PROFILES_DELETE, command)

    async def audits(self, filters: AuditListQuery) -> AuditPageReply:
        reply = await self._ask(Subject.AUDITS_LIST, filters, AuditPageReply)
        if reply.error is not None:
            raise reply.error.to_error()
        return reply

    async def audit_summary(self, filters: AuditFilterQuery) -> AuditSummaryReply:
        reply = await self._ask(Subject.AUDITS_SUMMARY, filters, AuditSummaryReply)
        if reply.error is not None:
            raise reply.error.to_error()
        return reply

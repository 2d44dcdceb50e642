"""Request/reply lookups other services make (core NATS; no stream, no acks).

One queue group, so each query is answered by exactly one replica. A handler that raises sends
no reply: the caller's request times out, which it treats as "profiles unavailable".
"""

from __future__ import annotations

from typing import Any

from faststream.nats import NatsBroker

from atelier_contracts.profiles import (
    GenerationSettings,
    ProfileQuery,
    ProfileReply,
    ProfilesListQuery,
    ProfilesListReply,
)
from atelier_contracts.subjects import Subject
from atelier_profiles.service import ProfileService

QUEUE = "profiles"


def register_handlers(broker: NatsBroker, service: ProfileService) -> None:
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

"""Request/reply lookups over FastStream's in-memory broker."""

from __future__ import annotations

from atelier_contracts.profiles import (
    GenerationSettings,
    ProfileQuery,
    ProfileReply,
    ProfilesListQuery,
    ProfilesListReply,
)
from atelier_contracts.subjects import Subject
from atelier_contracts.testing import QUERY_TIMEOUT_S
from atelier_messaging import query
from atelier_profiles.service import ProfilePatch

from .conftest import RunningApp, profile_fields


async def test_profile_lookup(running_app: RunningApp) -> None:
    created = await running_app.service.create_profile(profile_fields())
    reply = await query(
        running_app.broker,
        Subject.PROFILES_GET,
        ProfileQuery(profile_id=created.id),
        ProfileReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert reply.profile == created


async def test_unknown_profile_lookup_answers_none(running_app: RunningApp) -> None:
    reply = await query(
        running_app.broker,
        Subject.PROFILES_GET,
        ProfileQuery(profile_id="nope"),
        ProfileReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert reply.profile is None


async def test_list_includes_settings_and_respects_include_disabled(
    running_app: RunningApp,
) -> None:
    service = running_app.service
    on = await service.create_profile(profile_fields(name="On"))
    off = await service.create_profile(profile_fields(name="Off", sort_order=1))
    await service.patch_profile(off.id, ProfilePatch(enabled=False))
    await service.set_settings(GenerationSettings(enabled=False, reason="Paused"))

    enabled_only = await query(
        running_app.broker,
        Subject.PROFILES_LIST,
        ProfilesListQuery(),
        ProfilesListReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert enabled_only.settings == GenerationSettings(enabled=False, reason="Paused")
    assert [p.id for p in enabled_only.profiles] == [on.id]

    everything = await query(
        running_app.broker,
        Subject.PROFILES_LIST,
        ProfilesListQuery(include_disabled=True),
        ProfilesListReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert [p.id for p in everything.profiles] == [on.id, off.id]

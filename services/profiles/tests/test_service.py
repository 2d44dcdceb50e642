"""Repository and service on a real database (SQLite file; PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
from datetime import UTC

import pytest

from atelier_contracts.errors import Conflict, InvalidInput, NotFound, Unavailable
from atelier_contracts.profiles import GenerationSettings
from atelier_profiles.repository import ProfileRepository
from atelier_profiles.service import ProfilePatch, ProfileService

from .conftest import Published, profile_fields


async def test_create_then_read_back_every_field(
    service: ProfileService, published: Published
) -> None:
    fields = profile_fields()
    created = await service.create_profile(fields)

    assert created.id
    assert created.created_at.tzinfo is not None
    assert created.model_dump(include=set(fields.model_dump())) == fields.model_dump()

    again = await service.get_profile(created.id)
    assert again == created
    assert again.created_at.tzinfo == UTC
    assert [(e.action, e.profile_id) for e in published.events] == [("created", created.id)]
    assert published.visible_at_publish == [True], "published before the commit"


async def test_list_orders_by_sort_order_then_name_and_hides_disabled(
    service: ProfileService,
) -> None:
    await service.create_profile(profile_fields(name="beta", sort_order=1))
    await service.create_profile(profile_fields(name="Alpha", sort_order=1))
    await service.create_profile(profile_fields(name="zeta", sort_order=0))
    await service.create_profile(profile_fields(name="off", enabled=False, sort_order=-1))

    everything = await service.list_profiles(include_disabled=True)
    assert [p.name for p in everything] == ["off", "zeta", "Alpha", "beta"]
    enabled = await service.list_profiles(include_disabled=False)
    assert [p.name for p in enabled] == ["zeta", "Alpha", "beta"]


async def test_names_are_unique_regardless_of_case(
    service: ProfileService, published: Published
) -> None:
    first = await service.create_profile(profile_fields(name="Sketch"))
    with pytest.raises(Conflict, match="'sketch' already exists"):
        await service.create_profile(profile_fields(name="sketch"))
    other = await service.create_profile(profile_fields(name="Other"))
    with pytest.raises(Conflict):
        await service.replace_profile(other.id, profile_fields(name="SKETCH"))
    with pytest.raises(Conflict):
        await service.patch_profile(other.id, ProfilePatch(name="Sketch "))
    # Renaming a profile to its own name is no conflict.
    await service.patch_profile(first.id, ProfilePatch(name="Sketch"))
    assert [e.action for e in published.events] == ["created", "created", "updated"]


async def test_concurrent_creates_with_one_name_give_one_profile(service: ProfileService) -> None:
    results = await asyncio.gather(
        *(service.create_profile(profile_fields(name="Race")) for _ in range(4)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))


async def test_replace_sets_every_field_and_keeps_created_at(
    service: ProfileService, published: Published
) -> None:
    created = await service.create_profile(profile_fields())
    replaced = await service.replace_profile(
        created.id,
        profile_fields(
            name="Renamed", sizes=["256x256"], default_size="256x256", options=[], base_url=None
        ),
    )
    assert replaced.name == "Renamed"
    assert replaced.sizes == ["256x256"]
    assert replaced.options == []
    assert replaced.base_url is None
    assert replaced.created_at == created.created_at
    assert replaced.updated_at >= created.updated_at
    assert await service.get_profile(created.id) == replaced
    assert published.events[-1].action == "updated"
    assert published.visible_at_publish[-1]


async def test_patch_changes_only_the_given_fields(service: ProfileService) -> None:
    created = await service.create_profile(profile_fields())
    patched = await service.patch_profile(created.id, ProfilePatch(enabled=False, sort_order=5))
    assert (patched.enabled, patched.sort_order) == (False, 5)
    assert patched.model_dump(exclude={"enabled", "sort_order", "updated_at"}) == (
        created.model_dump(exclude={"enabled", "sort_order", "updated_at"})
    )


async def test_patch_that_breaks_a_rule_changes_nothing(
    service: ProfileService, published: Published
) -> None:
    created = await service.create_profile(profile_fields())
    with pytest.raises(InvalidInput, match="default_size: '1024x1024' is not one of sizes"):
        await service.patch_profile(created.id, ProfilePatch(sizes=["512x512"]))
    assert await service.get_profile(created.id) == created
    assert len(published.events) == 1


async def test_invalid_create_stores_and_publishes_nothing(
    service: ProfileService, published: Published
) -> None:
    with pytest.raises(InvalidInput):
        await service.create_profile(profile_fields(counts=[8]))
    assert await service.list_profiles(include_disabled=True) == []
    assert published.events == []


async def test_delete(service: ProfileService, published: Published) -> None:
    created = await service.create_profile(profile_fields())
    await service.delete_profile(created.id)
    assert await service.find_profile(created.id) is None
    with pytest.raises(NotFound):
        await service.delete_profile(created.id)
    assert [e.action for e in published.events] == ["created", "deleted"]
    assert published.visible_at_publish == [True, True]


async def test_unknown_id_is_not_found(service: ProfileService) -> None:
    with pytest.raises(NotFound, match="no profile with id 'nope'"):
        await service.get_profile("nope")
    with pytest.raises(NotFound):
        await service.replace_profile("nope", profile_fields())
    with pytest.raises(NotFound):
        await service.patch_profile("nope", ProfilePatch(enabled=False))
    assert await service.find_profile("nope") is None


async def test_settings_default_on_then_saved(
    service: ProfileService, published: Published
) -> None:
    assert await service.get_settings() == GenerationSettings(enabled=True)
    off = GenerationSettings(enabled=False, reason="Maintenance until noon.")
    assert await service.set_settings(off) == off
    assert await service.get_settings() == off
    on = GenerationSettings(enabled=True)
    await service.set_settings(on)
    assert await service.get_settings() == on
    assert [(e.action, e.profile_id) for e in published.events] == [
        ("settings", None),
        ("settings", None),
    ]


async def test_first_settings_saves_racing_leave_one_row(repository: ProfileRepository) -> None:
    await asyncio.gather(
        *(repository.save_settings(GenerationSettings(enabled=i % 2 == 0)) for i in range(4))
    )
    assert isinstance((await repository.get_settings()).enabled, bool)


async def test_failed_publish_reports_that_the_change_was_saved(
    service: ProfileService, published: Published
) -> None:
    published.fail = True
    with pytest.raises(Unavailable, match="The change was saved"):
        await service.create_profile(profile_fields())
    assert len(await service.list_profiles(include_disabled=True)) == 1

"""Profiles and the global switch: checked changes (the rules: `validation.py`, where keys may
go: `origins.py`) and their change events.

No broker and no HTTP here: the repository is passed in, and publishing is an injected callable
(`ProfilesChanged` goes out only after the change is committed).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, ValidationError, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ErrorDetails

from atelier_contracts.errors import Conflict, InvalidInput, NotFound
from atelier_contracts.profiles import (
    JSON_NUMBER,
    MAX_CREDIT_COST,
    MAX_OPTIONS,
    MAX_SIZES,
    MAX_SORT_ORDER,
    SIZE_PATTERN,
    GenerationSettings,
    JsonInt,
    OptionSpec,
    Profile,
    ProfileFields,
    ProfilesChanged,
    config_shape_problem,
)
from atelier_contracts.subjects import PROVIDER_PATTERN
from atelier_profiles.origins import OriginPolicy
from atelier_profiles.ports import Publish, unavailable_on_failure
from atelier_profiles.repository import ProfileRepository
from atelier_profiles.validation import fallback_problems, validate_profile

log = logging.getLogger("atelier.profiles")

# A field a patch may leave out but not set to null: `None` means "not given" and the document
# does not offer null. Constraints sit inside `Annotated` so they never apply to that None.
_Absent = SkipJsonSchema[None]


class ProfilePatch(BaseModel):
    """A partial update: only the fields present change; `null` clears `base_url` or
    `fallback_profile_id` (the other fields cannot be null, so the document does not offer it).

    The constraints are those of `ProfileFields` (repeated here so the document says them): the
    merged profile is validated as a whole.
    """

    name: Annotated[str, Field(min_length=1, max_length=120)] | _Absent = None
    provider: Annotated[str, Field(pattern=PROVIDER_PATTERN)] | _Absent = None
    model: Annotated[str, Field(min_length=1, max_length=200)] | _Absent = None
    enabled: StrictBool | _Absent = None
    sizes: (
        Annotated[
            list[str],
            Field(
                min_length=1,
                max_length=MAX_SIZES,
                json_schema_extra=ProfileFields.model_fields["sizes"].json_schema_extra,
            ),
        ]
        | _Absent
    ) = None
    default_size: Annotated[str, Field(pattern=SIZE_PATTERN)] | _Absent = None
    counts: (
        Annotated[
            list[JsonInt],
            Field(
                max_length=8,
                json_schema_extra=ProfileFields.model_fields["counts"].json_schema_extra,
            ),
        ]
        | _Absent
    ) = None
    options: Annotated[list[OptionSpec], Field(max_length=MAX_OPTIONS)] | _Absent = None
    max_reference_images: Annotated[int, Field(ge=0, le=16), JSON_NUMBER] | _Absent = None
    prompt_max_length: Annotated[int, Field(ge=1, le=32000), JSON_NUMBER] | _Absent = None
    timeout_s: Annotated[float, Field(gt=0, le=3600), JSON_NUMBER] | _Absent = None
    sort_order: (
        Annotated[int, Field(ge=-MAX_SORT_ORDER, le=MAX_SORT_ORDER), JSON_NUMBER] | _Absent
    ) = None
    credit_cost: Annotated[float, Field(ge=0, le=MAX_CREDIT_COST), JSON_NUMBER] | _Absent = None
    base_url: str | None = Field(default=None, max_length=2000)
    provider_config: dict[str, Any] | _Absent = Field(
        default=None, description="Replaces the whole mapping"
    )
    fallback_profile_id: str | None = Field(
        default=None, description="`null` removes the fallback", max_length=36
    )

    @field_validator("provider_config")
    @classmethod
    def _bounded_config(cls, config: dict[str, Any] | None) -> dict[str, Any] | None:
        # Checked here too: merging a config nested too deep would fail before ProfileFields.
        problem = None if config is None else config_shape_problem(config)
        if problem is not None:
            raise ValueError(f"provider_config {problem}")
        return config


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "profile"
    return f"{where}: {error['msg']}"


def apply_patch(current: ProfileFields, patch: ProfilePatch) -> ProfileFields:
    """Merge the fields present in `patch` and re-check the field constraints of the whole."""
    merged = current.model_dump() | patch.model_dump(exclude_unset=True)
    try:
        return ProfileFields.model_validate(merged)
    except ValidationError as exc:
        raise InvalidInput("; ".join(_describe(e) for e in exc.errors())) from exc


def _fields_of(profile: Profile) -> ProfileFields:
    return ProfileFields.model_validate(profile.model_dump(include=set(ProfileFields.model_fields)))


class ProfileService:
    def __init__(
        self,
        repo: ProfileRepository,
        publish: Publish[ProfilesChanged],
        origins: OriginPolicy | None = None,
    ) -> None:
        self._repo = repo
        self._publish = publish
        self.origins = origins or OriginPolicy()

    async def _checked(self, fields: ProfileFields, profile_id: str | None = None) -> ProfileFields:
        """`validate_profile` plus the rules that need stored data: the fallback chain, and the
        origins an operator approved for the provider's key."""
        problems = await self.origins.base_url_problems(fields.provider, fields.base_url)
        if fields.fallback_profile_id is not None:
            links = await self._repo.fallback_links()
            problems.extend(fallback_problems(profile_id, fields.fallback_profile_id, links))
        return validate_profile(fields, problems)

    async def announce(
        self,
        action: Literal["created", "updated", "deleted", "settings", "credentials"],
        profile_id: str | None = None,
        *,
        provider: str | None = None,
    ) -> None:
        """Publish `profiles.changed`; call it only after the change is committed: consumers
        that re-read on this event must see the change."""
        # The change is stored; say so, so the admin does not create it twice.
        with unavailable_on_failure(
            log,
            "profiles.changed not published",
            "The change was saved, but other services could not be told about it (the message "
            "bus is unreachable). Save it again once the bus is back.",
            profile_id=profile_id,
        ):
            await self._publish(
                ProfilesChanged(action=action, profile_id=profile_id, provider=provider)
            )

    async def create_profile(self, fields: ProfileFields) -> Profile:
        profile = await self._repo.insert_profile(await self._checked(fields))
        await self.announce("created", profile.id)
        return profile

    async def find_profile(self, profile_id: str) -> Profile | None:
        return await self._repo.get_profile(profile_id)

    async def get_profile(self, profile_id: str) -> Profile:
        profile = await self._repo.get_profile(profile_id)
        if profile is None:
            raise NotFound(f"There is no profile with id {profile_id!r}.")
        return profile

    async def list_profiles(self, *, include_disabled: bool) -> list[Profile]:
        """Ordered by sort_order, then name."""
        return await self._repo.list_profiles(include_disabled=include_disabled)

    async def replace_profile(self, profile_id: str, fields: ProfileFields) -> Profile:
        profile = await self._repo.update_profile(
            profile_id, await self._checked(fields, profile_id)
        )
        if profile is None:
            raise NotFound(f"There is no profile with id {profile_id!r}.")
        await self.announce("updated", profile.id)
        return profile

    async def patch_profile(self, profile_id: str, patch: ProfilePatch) -> Profile:
        # Read-merge-write: two admins patching different fields at the same instant can lose
        # one change (last write wins), acceptable for an admin screen.
        current = await self.get_profile(profile_id)
        return await self.replace_profile(profile_id, apply_patch(_fields_of(current), patch))

    async def delete_profile(self, profile_id: str) -> None:
        # A fallback chain must not point into nothing.
        dependants = await self._repo.names_falling_back_to(profile_id)
        if dependants:
            raise Conflict(
                f"{', '.join(dependants)} fall back to this profile; change their "
                "fallback_profile_id first."
            )
        if not await self._repo.delete_profile(profile_id):
            raise NotFound(f"There is no profile with id {profile_id!r}.")
        await self.announce("deleted", profile_id)

    async def get_settings(self) -> GenerationSettings:
        return await self._repo.get_settings()

    async def set_settings(self, settings: GenerationSettings) -> GenerationSettings:
        saved = await self._repo.save_settings(settings)
        await self.announce("settings")
        return saved

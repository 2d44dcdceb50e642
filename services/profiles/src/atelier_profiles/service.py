"""Profiles and the global switch: the rules an admin's input must follow, and change events.

No broker and no HTTP here: the repository is passed in, and publishing is an injected callable
(`ProfilesChanged` goes out only after the change is committed).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError
from pydantic_core import ErrorDetails

from atelier_contracts.errors import InvalidInput, NotFound, Unavailable
from atelier_contracts.profiles import (
    ALLOWED_COUNTS,
    SIZE_PATTERN,
    GenerationSettings,
    OptionSpec,
    Profile,
    ProfileFields,
    ProfilesChanged,
)
from atelier_profiles.repository import ProfileRepository

log = logging.getLogger("atelier.profiles")

Publish = Callable[[ProfilesChanged], Awaitable[None]]

_SIZE_RE = re.compile(SIZE_PATTERN)
_ALLOWED = ", ".join(str(c) for c in ALLOWED_COUNTS)


class ProfilePatch(BaseModel):
    """A partial update: only the fields present change; `null` clears `base_url`.

    The constraints are those of `ProfileFields`: the merged profile is validated as a whole.
    """

    name: str | None = None
    provider: str | None = None
    model: str | None = None
    enabled: bool | None = None
    sizes: list[str] | None = None
    default_size: str | None = None
    counts: list[int] | None = None
    options: list[OptionSpec] | None = None
    max_reference_images: int | None = None
    prompt_max_length: int | None = None
    timeout_s: float | None = None
    sort_order: int | None = None
    credit_cost: float | None = None
    base_url: str | None = None
    provider_config: dict[str, Any] | None = Field(
        default=None, description="Replaces the whole mapping"
    )


# Validation beyond field types.


def _listed(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but `true` is not a sensible default for a numeric option.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _option_problems(option: OptionSpec) -> list[str]:
    where = f"options.{option.name}"
    problems: list[str] = []
    default = option.default
    if option.kind == "enum":
        if not option.values:
            problems.append(f"{where}: an enum option needs `values`, the choices users pick from")
        else:
            repeated = sorted({v for v in option.values if option.values.count(v) > 1})
            if repeated:
                problems.append(f"{where}: values listed more than once: {_listed(repeated)}")
            if default is not None and default not in option.values:
                problems.append(
                    f"{where}: default {default!r} is not one of its values "
                    f"({_listed(option.values)})"
                )
    if option.kind in ("integer", "number"):
        low, high = option.minimum, option.maximum
        if low is not None and high is not None and low > high:
            problems.append(f"{where}: minimum {low:g} is above maximum {high:g}")
        if default is not None:
            wanted = "a whole number" if option.kind == "integer" else "a number"
            integral = isinstance(default, int) or option.kind == "number"
            if not _is_number(default) or not integral:
                problems.append(f"{where}: default {default!r} is not {wanted}")
            elif low is not None and default < low:
                problems.append(f"{where}: default {default!r} is below the minimum {low:g}")
            elif high is not None and default > high:
                problems.append(f"{where}: default {default!r} is above the maximum {high:g}")
    if option.kind == "string" and default is not None:
        if not isinstance(default, str):
            problems.append(f"{where}: default {default!r} is not a string")
        elif option.max_length is not None and len(default) > option.max_length:
            problems.append(
                f"{where}: default is {len(default)} characters, longer than max_length "
                f"{option.max_length}"
            )
    if option.kind == "boolean" and default is not None and not isinstance(default, bool):
        problems.append(f"{where}: default {default!r} is not true or false")
    return problems


def profile_problems(fields: ProfileFields) -> list[str]:
    """Every rule the input breaks, each phrased so an admin knows what to change."""
    problems: list[str] = []
    if not fields.name.strip():
        problems.append("name: must not be blank")

    for size in fields.sizes:
        if not _SIZE_RE.match(size):
            problems.append(f"sizes: {size!r} is not a size like '1024x1024' (width x height)")
    repeated = sorted({s for s in fields.sizes if fields.sizes.count(s) > 1})
    if repeated:
        problems.append(f"sizes: listed more than once: {_listed(repeated)}")
    if fields.default_size not in fields.sizes:
        problems.append(
            f"default_size: {fields.default_size!r} is not one of sizes ({_listed(fields.sizes)})"
        )

    if not fields.counts:
        problems.append(f"counts: list at least one of {_ALLOWED}")
    for count in sorted(set(fields.counts) - set(ALLOWED_COUNTS)):
        problems.append(f"counts: {count} images per request is not supported; use {_ALLOWED}")
    if len(set(fields.counts)) != len(fields.counts):
        problems.append("counts: each count may be listed once")

    names = [o.name for o in fields.options]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"options: more than one option named {_listed(repeated)}")
    for option in fields.options:
        problems.extend(_option_problems(option))

    if fields.base_url is not None:
        url = urlsplit(fields.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            problems.append(
                f"base_url: {fields.base_url!r} must be an http:// or https:// URL with a host"
            )
    return problems


def validate_profile(fields: ProfileFields) -> ProfileFields:
    """The profile to store (name trimmed), or InvalidInput listing every problem."""
    problems = profile_problems(fields)
    if problems:
        raise InvalidInput("; ".join(problems))
    return fields.model_copy(update={"name": fields.name.strip()})


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
    def __init__(self, repo: ProfileRepository, publish: Publish) -> None:
        self._repo = repo
        self._publish = publish

    async def _announce(
        self,
        action: Literal["created", "updated", "deleted", "settings"],
        profile_id: str | None = None,
    ) -> None:
        # Called only after the commit: consumers that re-read on this event must see the change.
        try:
            await self._publish(ProfilesChanged(action=action, profile_id=profile_id))
        except Exception as exc:
            log.exception("profiles.changed not published", extra={"profile_id": profile_id})
            # The change is stored; say so, so the admin does not create it twice.
            raise Unavailable(
                "The change was saved, but other services could not be told about it (the "
                "message bus is unreachable). Save it again once the bus is back."
            ) from exc

    async def create_profile(self, fields: ProfileFields) -> Profile:
        profile = await self._repo.insert_profile(validate_profile(fields))
        await self._announce("created", profile.id)
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
        profile = await self._repo.update_profile(profile_id, validate_profile(fields))
        if profile is None:
            raise NotFound(f"There is no profile with id {profile_id!r}.")
        await self._announce("updated", profile.id)
        return profile

    async def patch_profile(self, profile_id: str, patch: ProfilePatch) -> Profile:
        # Read-merge-write: two admins patching different fields at the same instant can lose
        # one change (last write wins), acceptable for an admin screen.
        current = await self.get_profile(profile_id)
        return await self.replace_profile(profile_id, apply_patch(_fields_of(current), patch))

    async def delete_profile(self, profile_id: str) -> None:
        if not await self._repo.delete_profile(profile_id):
            raise NotFound(f"There is no profile with id {profile_id!r}.")
        await self._announce("deleted", profile_id)

    async def get_settings(self) -> GenerationSettings:
        return await self._repo.get_settings()

    async def set_settings(self, settings: GenerationSettings) -> GenerationSettings:
        saved = await self._repo.save_settings(settings)
        await self._announce("settings")
        return saved

"""Profiles and the global switch: the rules an admin's input must follow, and change events.

No broker and no HTTP here: the repository is passed in, and publishing is an injected callable
(`ProfilesChanged` goes out only after the change is committed).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, ValidationError, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ErrorDetails

from atelier_contracts.errors import Conflict, InvalidInput, NotFound, Unavailable
from atelier_contracts.profiles import (
    ALLOWED_COUNTS,
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
from atelier_contracts.providers import (
    KNOWN_PROVIDERS,
    NETWORKLESS_PROVIDERS,
    PROVIDER_BASE_URLS,
    ProviderCapabilities,
    capabilities,
)
from atelier_contracts.subjects import PROVIDER_PATTERN
from atelier_profiles.repository import ProfileRepository
from atelier_security.origins import OriginError, host_kind, host_of_origin, origin_of

log = logging.getLogger("atelier.profiles")

Publish = Callable[[ProfilesChanged], Awaitable[None]]

_SIZE_RE = re.compile(SIZE_PATTERN)
_ALLOWED = ", ".join(str(c) for c in ALLOWED_COUNTS)
# Credits are kept as integer milli-credits; far above any real price, far below overflow.


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


# Validation beyond field types.


def _listed(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


def _repeated(values: Iterable[str]) -> list[str]:
    """The values listed more than once, sorted; linear (a profile's lists can be long)."""
    return sorted(value for value, n in Counter(values).items() if n > 1)


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
            repeated = _repeated(option.values)
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
    if "\\u0000" in fields.model_dump_json():
        # PostgreSQL text cannot hold NUL; no real name, model or option needs one.
        problems.append("text fields must not contain NUL characters")

    for size in fields.sizes:
        if not _SIZE_RE.match(size):
            problems.append(f"sizes: {size!r} is not a size like '1024x1024' (width x height)")
    repeated = _repeated(fields.sizes)
    if repeated:
        problems.append(f"sizes: listed more than once: {_listed(repeated)}")
    if fields.default_size not in fields.sizes:
        problems.append(
            f"default_size: {fields.default_size!r} is not one of sizes "
            f"({_listed(fields.sizes[:8])}{', ...' if len(fields.sizes) > 8 else ''})"
        )

    if not fields.counts:
        problems.append(f"counts: list at least one of {_ALLOWED}")
    for count in sorted(set(fields.counts) - set(ALLOWED_COUNTS)):
        problems.append(f"counts: {count} images per request is not supported; use {_ALLOWED}")
    if len(set(fields.counts)) != len(fields.counts):
        problems.append("counts: each count may be listed once")

    names = [o.name for o in fields.options]
    repeated = _repeated(names)
    if repeated:
        problems.append(f"options: more than one option named {_listed(repeated)}")
    for option in fields.options:
        problems.extend(_option_problems(option))

    if fields.base_url is not None:
        try:
            origin_of(fields.base_url)
        except OriginError as exc:
            problems.append(f"base_url: {exc}")
    problems.extend(provider_config_problems(fields.provider_config))
    if fields.credit_cost > MAX_CREDIT_COST:
        problems.append(f"credit_cost: at most {MAX_CREDIT_COST:,} credits per image")
    problems.extend(capability_problems(fields))
    return problems


# `provider_config` never holds secrets (keys are stored encrypted, as credentials): a key named
# like one, at any depth, or a value shaped like one is refused rather than stored in the clear.
_SECRET_NAMES = frozenset(
    {"key", "auth", "authorization", "bearer", "cookie", "pwd", "xkey", "xapikey"}
)
_SECRET_SUFFIXES = (
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "credentials",
    "privatekey",
    "accesskey",
    "secretkey",
    "sessionkey",
)
_SECRET_VALUE = re.compile(
    r"^(?:(?:bearer|basic)\s+\S{8,}|(?:sk|r8|xai|hf|fal)[-_][A-Za-z0-9_-]{16,}|AIza[A-Za-z0-9_-]{30,})$",
    re.IGNORECASE,
)


def _secret_name(key: str) -> bool:
    name = re.sub(r"[^a-z0-9]", "", key.lower())
    return (
        name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES) or name.startswith("authorization")
    )


def provider_config_problems(config: dict[str, Any]) -> list[str]:
    """Keys that look like secrets anywhere in `provider_config` (its depth is bounded by the
    contract, so this walk is short)."""
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("provider_config", config)]
    while stack and len(found) < 5:
        where, value = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                path = f"{where}.{key}"
                if _secret_name(str(key)):
                    found.append(f"{path} (its name)")
                else:
                    stack.append((path, child))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(value))
        elif isinstance(value, str) and _SECRET_VALUE.match(value.strip()):
            found.append(f"{where} (its value looks like a key)")
    if not found:
        return []
    return [
        f"{', '.join(sorted(found))}: provider_config never holds secrets (it is stored and "
        "shown in the clear); an operator stores the provider's key with PUT "
        "/admin/v1/providers/{name}/credentials"
    ]


# Where a profile's base_url may point (docs/adr/0014-keys-only-to-approved-origins.md).

BoundOrigins = Callable[[str], Awaitable[Sequence[str]]]


async def _nothing_bound(_provider: str) -> Sequence[str]:
    return ()


def default_origins(provider: str) -> frozenset[str]:
    """The provider's own public endpoint, where its key always may go."""
    url = PROVIDER_BASE_URLS.get(provider)
    return frozenset({origin_of(url)}) if url else frozenset()


class OriginPolicy:
    """The origins a provider's key may be sent to besides its own endpoint: those an operator
    bound to the stored credential (`bound`) and those of the deployment's
    `ATELIER_PROFILES_ALLOWED_BASE_URL_ORIGINS` (`deployment`: provider, or `*` for every
    provider, to normalized origins). Nothing here can be set by an app admin."""

    def __init__(
        self,
        deployment: Mapping[str, Sequence[str]] | None = None,
        bound: BoundOrigins = _nothing_bound,
    ) -> None:
        self._deployment = {name: tuple(origins) for name, origins in (deployment or {}).items()}
        self._bound = bound

    def deployment_origins(self, provider: str) -> list[str]:
        origins = [*self._deployment.get("*", ()), *self._deployment.get(provider, ())]
        return list(dict.fromkeys(origins))

    async def approved(self, provider: str) -> list[str]:
        """Operator-approved origins for `provider`'s key (its own endpoint not included)."""
        bound = await self._bound(provider)
        return list(dict.fromkeys([*bound, *self.deployment_origins(provider)]))

    async def base_url_problems(self, provider: str, base_url: str | None) -> list[str]:
        if base_url is None or provider in NETWORKLESS_PROVIDERS:
            return []  # the provider's own endpoint; the offline provider sends nothing
        try:
            origin = origin_of(base_url)
        except OriginError:
            return []  # reported by profile_problems
        if origin in default_origins(provider) or origin in await self.approved(provider):
            return []
        kind = host_kind(host_of_origin(origin))
        what = (
            f"{origin} is {kind}"
            if kind is not None
            else f"{origin} is not {provider}'s own endpoint"
            + (
                f" ({', '.join(sorted(default_origins(provider)))})"
                if provider in PROVIDER_BASE_URLS
                else ""
            )
        )
        return [
            f"base_url: {what}, and no operator allowed that origin for {provider}'s key. "
            "Provider keys are sent only to the provider's own endpoint or to origins an "
            "operator approved: the operator lists it in `allowed_origins` when storing the key "
            f"(PUT /admin/v1/providers/{provider}/credentials) or in "
            "ATELIER_PROFILES_ALLOWED_BASE_URL_ORIGINS"
        ]


def _pixels(size: str) -> int | None:
    if not _SIZE_RE.match(size):
        return None
    width, height = size.split("x")
    return int(width) * int(height)


def capability_problems(fields: ProfileFields) -> list[str]:
    """What the profile asks that its provider and model cannot do (`capabilities()`)."""
    if fields.provider not in KNOWN_PROVIDERS:
        return [
            f"provider: {fields.provider!r} has no worker in Atelier; use "
            f"{_listed(list(KNOWN_PROVIDERS))}"
        ]
    caps = capabilities(fields.provider, fields.model)
    who = f"{fields.provider} model {fields.model!r}"
    problems: list[str] = []
    if caps.sizes is not None:
        unknown = [size for size in fields.sizes if size not in caps.sizes]
        if unknown:
            problems.append(
                f"sizes: {who} does not make {_listed(unknown)}; it makes "
                f"{_listed(sorted(caps.sizes))}"
            )
    if caps.max_pixels is not None:
        huge = [size for size in fields.sizes if (_pixels(size) or 0) > caps.max_pixels]
        if huge:
            problems.append(
                f"sizes: {_listed(huge)} exceed the {caps.max_pixels:,} pixels a worker accepts"
            )
    if caps.max_count is not None:
        for count in sorted(c for c in set(fields.counts) if c > caps.max_count):
            problems.append(f"counts: {who} makes at most {caps.max_count} images, not {count}")
    for option in fields.options:
        problems.extend(_option_capability_problems(option, caps, who))
    limit = caps.max_reference_images
    if limit is not None and fields.max_reference_images > limit:
        problems.append(
            f"max_reference_images: {who} takes "
            + (f"at most {limit} reference images" if limit else "no reference images")
            + f", not {fields.max_reference_images}"
        )
    if caps.prompt_max_length is not None and fields.prompt_max_length > caps.prompt_max_length:
        problems.append(
            f"prompt_max_length: {who} takes prompts of at most {caps.prompt_max_length} "
            f"characters, not {fields.prompt_max_length}"
        )
    return problems


def _option_capability_problems(
    option: OptionSpec, caps: ProviderCapabilities, who: str
) -> list[str]:
    where = f"options.{option.name}"
    refused = caps.refused_options.get(option.name)
    if refused is not None:
        return [f"{where}: {refused}"]
    if caps.options is None:
        return []
    rule = caps.options.get(option.name)
    if rule is None:
        return [f"{where}: {who} has no such option; it takes {_listed(sorted(caps.options))}"]
    problems: list[str] = []
    if option.kind not in rule.kinds:
        problems.append(
            f"{where}: declare it as {' or '.join(sorted(rule.kinds))}, not {option.kind}"
        )
    if rule.values is not None and option.values:
        unknown = [value for value in option.values if value not in rule.values]
        if unknown:
            problems.append(
                f"{where}: {who} does not accept {_listed(unknown)}; it accepts "
                f"{_listed(sorted(rule.values))}"
            )
    low_ok = rule.minimum is None or (option.minimum is not None and option.minimum >= rule.minimum)
    high_ok = rule.maximum is None or (
        option.maximum is not None and option.maximum <= rule.maximum
    )
    if not (low_ok and high_ok):
        problems.append(
            f"{where}: set minimum and maximum within {rule.minimum:g}..{rule.maximum:g}, the "
            f"range {who} accepts"
            if rule.minimum is not None and rule.maximum is not None
            else f"{where}: bound it to the range {who} accepts"
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


def fallback_problems(
    profile_id: str | None, fallback_id: str | None, links: dict[str, str | None]
) -> list[str]:
    """Whether `fallback_id` may follow `profile_id`: it exists and the chain has no cycle.

    `links` maps every stored profile to its fallback; `profile_id` is None for a new profile.
    """
    if fallback_id is None:
        return []
    where = "fallback_profile_id"
    if fallback_id == profile_id:
        return [f"{where}: a profile cannot fall back to itself"]
    if fallback_id not in links:
        return [f"{where}: there is no profile with id {fallback_id!r}"]
    # Follow the chain from the new fallback; reaching this profile would close a loop. `seen`
    # stops at loops that do not involve this profile (none can be stored, but be safe).
    seen: set[str] = set()
    current: str | None = fallback_id
    while current is not None and current not in seen:
        if current == profile_id:
            return [f"{where}: {fallback_id!r} falls back (through its chain) to this profile"]
        seen.add(current)
        current = links.get(current)
    return []


class ProfileService:
    def __init__(
        self, repo: ProfileRepository, publish: Publish, origins: OriginPolicy | None = None
    ) -> None:
        self._repo = repo
        self._publish = publish
        self.origins = origins or OriginPolicy()

    async def _checked(self, fields: ProfileFields, profile_id: str | None = None) -> ProfileFields:
        """`validate_profile` plus the rules that need stored data: the fallback chain, and the
        origins an operator approved for the provider's key."""
        problems = profile_problems(fields)
        problems.extend(await self.origins.base_url_problems(fields.provider, fields.base_url))
        if fields.fallback_profile_id is not None:
            links = await self._repo.fallback_links()
            problems.extend(fallback_problems(profile_id, fields.fallback_profile_id, links))
        if problems:
            raise InvalidInput("; ".join(problems))
        return fields.model_copy(update={"name": fields.name.strip()})

    async def announce(
        self,
        action: Literal["created", "updated", "deleted", "settings", "credentials"],
        profile_id: str | None = None,
        *,
        provider: str | None = None,
    ) -> None:
        """Publish `profiles.changed`; call it only after the change is committed."""
        await self._announce(action, profile_id, provider=provider)

    async def _announce(
        self,
        action: Literal["created", "updated", "deleted", "settings", "credentials"],
        profile_id: str | None = None,
        *,
        provider: str | None = None,
    ) -> None:
        # Called only after the commit: consumers that re-read on this event must see the change.
        try:
            await self._publish(
                ProfilesChanged(action=action, profile_id=profile_id, provider=provider)
            )
        except Exception as exc:
            log.exception("profiles.changed not published", extra={"profile_id": profile_id})
            # The change is stored; say so, so the admin does not create it twice.
            raise Unavailable(
                "The change was saved, but other services could not be told about it (the "
                "message bus is unreachable). Save it again once the bus is back."
            ) from exc

    async def create_profile(self, fields: ProfileFields) -> Profile:
        profile = await self._repo.insert_profile(await self._checked(fields))
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
        profile = await self._repo.update_profile(
            profile_id, await self._checked(fields, profile_id)
        )
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
        # A fallback chain must not point into nothing.
        dependants = await self._repo.names_falling_back_to(profile_id)
        if dependants:
            raise Conflict(
                f"{_listed(dependants)} fall back to this profile; change their "
                "fallback_profile_id first."
            )
        if not await self._repo.delete_profile(profile_id):
            raise NotFound(f"There is no profile with id {profile_id!r}.")
        await self._announce("deleted", profile_id)

    async def get_settings(self) -> GenerationSettings:
        return await self._repo.get_settings()

    async def set_settings(self, settings: GenerationSettings) -> GenerationSettings:
        saved = await self._repo.save_settings(settings)
        await self._announce("settings")
        return saved

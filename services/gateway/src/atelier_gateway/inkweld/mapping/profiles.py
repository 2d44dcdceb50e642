"""Profiles: the app's profile forms as profile fields; profiles as the app shows them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from atelier_contracts.errors import InvalidInput
from atelier_contracts.profiles import ALLOWED_COUNTS, OptionSpec, Profile, ProfileFields
from atelier_contracts.providers import ProviderCapabilities, capabilities
from atelier_gateway.inkweld.errors import validation_message
from atelier_gateway.inkweld.mapping.providers import atelier_provider
from atelier_gateway.inkweld.mapping.sizes import inkweld_size, profile_size
from atelier_gateway.inkweld.models import (
    AdminImageModelProfile,
    CreateImageModelProfileRequest,
    ProviderType,
    PublicImageModelProfile,
    UpdateImageModelProfileRequest,
)

# Where the app's presentation fields that Atelier has no column for are kept: a key of the
# profile's `provider_config`, which workers read by name and so never see.
INKWELD_CONFIG_KEY = "inkweld"
# `modelConfig` is the profile's `provider_config` (minus the key above) plus this key for
# `base_url`, so an admin can point a profile at a proxy or a self-hosted server from the app,
# but only at an origin an operator approved for the provider's key: profiles refuses any other
# (docs/adr/0014-keys-only-to-approved-origins.md); the app's admin role cannot approve one.
BASE_URL_KEY = "baseUrl"
# Reference images a profile created from the app takes when its model's limit is unknown.
DEFAULT_REFERENCE_IMAGES = 4
# The app's prompt limit; a profile created from it takes that much unless its model takes less.
INKWELD_PROMPT_MAX_LENGTH = 16000
# The app's per-request options, declared on a profile created from it when the model takes them
# with the app's values; `negative_prompt` for the adapters that send one.
_ENUM_OPTIONS = {"quality": ("standard", "hd"), "style": ("vivid", "natural")}
NEGATIVE_PROMPT_PROVIDERS = frozenset({"stable-diffusion", "falai", "workersai"})
_CUSTOM_RESOLUTIONS = (
    "supportsCustomResolutions: Atelier makes only the sizes a profile lists; list the sizes "
    "in supportedSizes instead."
)


def _inkweld_config(profile: Profile) -> dict[str, Any]:
    config = profile.provider_config.get(INKWELD_CONFIG_KEY)
    return dict(config) if isinstance(config, dict) else {}


def aspect_ratio_only(profile: Profile) -> bool:
    return _inkweld_config(profile).get("usesAspectRatioOnly") is True


def public_profile(profile: Profile, provider: ProviderType) -> PublicImageModelProfile:
    ratio_only = aspect_ratio_only(profile)
    description = _inkweld_config(profile).get("description")
    return PublicImageModelProfile(
        id=profile.id,
        name=profile.name,
        description=description if isinstance(description, str) else None,
        provider=provider,
        modelId=profile.model,
        enabled=profile.enabled,
        supportsImageInput=profile.max_reference_images > 0,
        supportsCustomResolutions=False,
        usesAspectRatioOnly=ratio_only,
        supportedSizes=[inkweld_size(size, ratio_only) for size in profile.sizes],
        defaultSize=inkweld_size(profile.default_size, ratio_only),
        sortOrder=profile.sort_order,
        creditCost=profile.credit_cost,
    )


def model_config_of(profile: Profile) -> dict[str, Any]:
    config = {k: v for k, v in profile.provider_config.items() if k != INKWELD_CONFIG_KEY}
    if profile.base_url is not None:
        config[BASE_URL_KEY] = profile.base_url
    return config


def admin_profile(profile: Profile, provider: ProviderType) -> AdminImageModelProfile:
    return AdminImageModelProfile(
        **public_profile(profile, provider).model_dump(),
        modelConfig=model_config_of(profile),
        createdAt=profile.created_at,
        updatedAt=profile.updated_at,
    )


def _split_model_config(config: Mapping[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """`modelConfig` as (`provider_config`, `base_url`)."""
    provider_config = dict(config or {})
    provider_config.pop(INKWELD_CONFIG_KEY, None)  # ours; an admin cannot set it by hand
    base_url = provider_config.pop(BASE_URL_KEY, None)
    if base_url is not None and not isinstance(base_url, str):
        raise InvalidInput(f"modelConfig.{BASE_URL_KEY}: must be a URL string.")
    return provider_config, base_url


def _sizes(values: Sequence[str]) -> list[str]:
    sizes: list[str] = []
    for value in values:
        size = profile_size(value)
        if size is not None and size not in sizes:
            sizes.append(size)
    return sizes


def _default_sizes(caps: ProviderCapabilities) -> list[str]:
    return sorted(caps.sizes) if caps.sizes else ["1024x1024"]


def _reference_images(caps: ProviderCapabilities) -> int:
    # A model known to take none keeps the default, so the profile check says so plainly.
    return caps.max_reference_images or DEFAULT_REFERENCE_IMAGES


def inkweld_options(provider: str, caps: ProviderCapabilities) -> list[OptionSpec]:
    specs: list[OptionSpec] = []
    for name, values in _ENUM_OPTIONS.items():
        rule = (caps.options or {}).get(name)
        if rule is not None and "enum" in rule.kinds and set(values) <= (rule.values or set()):
            specs.append(OptionSpec(name=name, kind="enum", values=list(values)))
    if provider in NEGATIVE_PROMPT_PROVIDERS and "negative_prompt" not in caps.refused_options:
        specs.append(OptionSpec(name="negative_prompt", kind="string", max_length=2000))
    return specs


def _profile_fields(data: dict[str, Any]) -> ProfileFields:
    try:
        return ProfileFields.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc)) from exc


def profile_fields_for_create(request: CreateImageModelProfileRequest) -> ProfileFields:
    """A new profile from the app's form; what the form has no field for gets what the model
    can do (counts, reference images, prompt limit, the app's options)."""
    if request.supportsCustomResolutions:
        raise InvalidInput(_CUSTOM_RESOLUTIONS)
    provider = atelier_provider(request.provider)
    caps = capabilities(provider, request.modelId)
    sizes = _sizes(request.supportedSizes or []) or _default_sizes(caps)
    default_size = profile_size(request.defaultSize) if request.defaultSize else None
    provider_config, base_url = _split_model_config(request.modelConfig)
    provider_config[INKWELD_CONFIG_KEY] = {
        "description": request.description,
        "usesAspectRatioOnly": request.usesAspectRatioOnly,
    }
    return _profile_fields(
        {
            "name": request.name,
            "provider": provider,
            "model": request.modelId,
            "enabled": request.enabled,
            "sizes": sizes,
            "default_size": default_size or sizes[0],
            "counts": [c for c in ALLOWED_COUNTS if caps.max_count is None or c <= caps.max_count],
            "options": inkweld_options(provider, caps),
            "max_reference_images": _reference_images(caps) if request.supportsImageInput else 0,
            "prompt_max_length": min(
                INKWELD_PROMPT_MAX_LENGTH, caps.prompt_max_length or INKWELD_PROMPT_MAX_LENGTH
            ),
            "sort_order": round(request.sortOrder),
            "credit_cost": float(request.creditCost),
            "base_url": base_url,
            "provider_config": provider_config,
        }
    )


_NULLABLE_UPDATES = frozenset({"description", "supportedSizes", "defaultSize", "modelConfig"})


def profile_fields_for_update(
    current: Profile, request: UpdateImageModelProfileRequest, shown_provider: ProviderType
) -> ProfileFields:
    """The whole profile after the app's partial update (sent as a full replacement)."""
    given = request.model_fields_set
    for name in sorted(given - _NULLABLE_UPDATES):
        if getattr(request, name) is None:
            raise InvalidInput(f"{name}: must not be null.")
    if request.supportsCustomResolutions:
        raise InvalidInput(_CUSTOM_RESOLUTIONS)

    data = current.model_dump(include=set(ProfileFields.model_fields))
    presentation = _inkweld_config(current)
    # A profile shown under an alias keeps its own provider unless the admin picks another.
    if request.provider is not None and request.provider != shown_provider:
        data["provider"] = atelier_provider(request.provider)
    if request.modelId is not None:
        data["model"] = request.modelId
    caps = capabilities(data["provider"], data["model"])
    if request.name is not None:
        data["name"] = request.name
    if "description" in given:
        presentation["description"] = request.description
    if request.enabled is not None:
        data["enabled"] = request.enabled
    if request.supportsImageInput is not None:
        if not request.supportsImageInput:
            data["max_reference_images"] = 0
        elif current.max_reference_images == 0:
            data["max_reference_images"] = _reference_images(caps)
    if request.usesAspectRatioOnly is not None:
        presentation["usesAspectRatioOnly"] = request.usesAspectRatioOnly
    if "supportedSizes" in given:
        data["sizes"] = _sizes(request.supportedSizes or []) or _default_sizes(caps)
    if "defaultSize" in given:
        chosen = profile_size(request.defaultSize) if request.defaultSize else None
        data["default_size"] = chosen or data["sizes"][0]
    elif data["default_size"] not in data["sizes"]:
        data["default_size"] = data["sizes"][0]  # the old default was taken off the list
    if "modelConfig" in given:
        data["provider_config"], data["base_url"] = _split_model_config(request.modelConfig)
    data["provider_config"] = {**data["provider_config"], INKWELD_CONFIG_KEY: presentation}
    if request.sortOrder is not None:
        data["sort_order"] = round(request.sortOrder)
    if request.creditCost is not None:
        data["credit_cost"] = float(request.creditCost)
    return _profile_fields(data)

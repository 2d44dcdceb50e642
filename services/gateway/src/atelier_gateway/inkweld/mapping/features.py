"""The app's system features and image-generation status, from the profile catalog."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from atelier_contracts.profiles import GenerationSettings, Profile
from atelier_gateway.inkweld.mapping.profiles import public_profile
from atelier_gateway.inkweld.mapping.providers import INKWELD_PROVIDERS, PROVIDER_NAMES
from atelier_gateway.inkweld.models import (
    ImageGenerationStatus,
    ImageModelInfo,
    ImageProviderStatus,
    PasswordPolicy,
    ProviderType,
    SystemFeatures,
)


def system_features(settings: GenerationSettings, usable: bool, app_mode: str) -> SystemFeatures:
    """Image generation from the admin's switch; the rest are not Atelier's to decide and are
    fixed (docs/inkweld.md)."""
    return SystemFeatures(
        # The switch is Atelier's admin API's, not the app's admin screen's: "locked".
        aiKillSwitch=not settings.enabled,
        aiKillSwitchLockedByEnv=True,
        aiAutoReview=False,
        aiImageGeneration=settings.enabled and usable,
        appMode=cast(Any, app_mode),
        userApprovalRequired=False,
        emailEnabled=False,
        requireEmail=False,
        passwordPolicy=PasswordPolicy(
            minLength=8,
            requireUppercase=True,
            requireLowercase=True,
            requireNumber=True,
            requireSymbol=False,
        ),
        passkeysEnabled=False,
        passwordLoginEnabled=True,
        emailRecoveryEnabled=False,
        legacyMcpEnabled=False,
        mcpEnabled=False,
    )


def _model_info(profile: Profile, provider: ProviderType) -> ImageModelInfo:
    names = {option.name for option in profile.options}
    shown = public_profile(profile, provider)
    return ImageModelInfo(
        id=profile.model,
        name=profile.name,
        provider=provider,
        supportedSizes=shown.supportedSizes or [],
        supportsQuality="quality" in names,
        supportsStyle="style" in names,
        maxImages=max(profile.counts),
        description=shown.description,
    )


def generation_status(
    settings: GenerationSettings, shown: Sequence[tuple[Profile, ProviderType]]
) -> ImageGenerationStatus:
    """One entry per provider that has a profile; its models are its enabled profiles."""
    providers: list[ImageProviderStatus] = []
    for provider in INKWELD_PROVIDERS:
        mine = [profile for profile, name in shown if name == provider]
        if not mine:
            continue
        enabled = [profile for profile in mine if profile.enabled]
        error = None
        if not settings.enabled:
            error = f"Image generation is turned off: {settings.reason or 'an admin paused it.'}"
        elif not enabled:
            error = "No profile of this provider is enabled."
        providers.append(
            ImageProviderStatus(
                type=provider,
                name=PROVIDER_NAMES[provider],
                available=settings.enabled and bool(enabled),
                enabled=bool(enabled),
                models=[_model_info(profile, provider) for profile in enabled],
                error=error,
            )
        )
    default = next((name for profile, name in shown if profile.enabled), None)
    return ImageGenerationStatus(
        available=any(p.available for p in providers), providers=providers, defaultProvider=default
    )

"""The app's provider names and Atelier's adapters behind them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import get_args

from atelier_contracts.profiles import Profile
from atelier_gateway.inkweld.models import ProviderEntry, ProviderType

# The app's providers, each the Atelier adapter of the same name (`stable-diffusion` is the
# AUTOMATIC1111 adapter). Atelier has more; those are shown only under an alias an operator
# chose (`InkweldSettings.provider_aliases`).
INKWELD_PROVIDERS: tuple[ProviderType, ...] = get_args(ProviderType)
_BY_NAME: dict[str, ProviderType] = {name: name for name in INKWELD_PROVIDERS}
PROVIDER_NAMES: dict[str, str] = {
    "openai": "OpenAI",
    "openrouter": "OpenRouter",
    "stable-diffusion": "Stable Diffusion (AUTOMATIC1111)",
    "falai": "fal.ai",
    "workersai": "Cloudflare Workers AI",
}


def inkweld_provider(provider: str, aliases: Mapping[str, str]) -> ProviderType | None:
    """The app's name for an Atelier provider; None when it has none (the profile is hidden)."""
    return _BY_NAME.get(provider) or _BY_NAME.get(aliases.get(provider, ""))


def atelier_provider(provider: ProviderType) -> str:
    """Atelier's adapter for one of the app's providers: the same name."""
    return provider


def provider_entries() -> list[ProviderEntry]:
    return [ProviderEntry(id=p, name=PROVIDER_NAMES[p]) for p in INKWELD_PROVIDERS]


def visible_profiles(
    profiles: Iterable[Profile], aliases: Mapping[str, str]
) -> list[tuple[Profile, ProviderType]]:
    """The profiles the app can show, each with its provider's name there, in Atelier's order."""
    shown = []
    for profile in profiles:
        provider = inkweld_provider(profile.provider, aliases)
        if provider is not None:
            shown.append((profile, provider))
    return sorted(shown, key=lambda pair: (pair[0].sort_order, pair[0].name.lower()))

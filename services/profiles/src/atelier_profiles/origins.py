"""Where a profile's base_url may point (docs/adr/0014-keys-only-to-approved-origins.md): the
provider's own endpoint, or an origin an operator approved for its key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from atelier_contracts.providers import NETWORKLESS_PROVIDERS, PROVIDER_BASE_URLS
from atelier_security.origins import OriginError, host_kind, host_of_origin, origin_of

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

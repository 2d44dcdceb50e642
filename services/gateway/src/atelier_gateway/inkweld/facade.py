"""What the facade's routes reach: the gateway's service and settings, the facade's own settings
and clients, bound to each request by the router `create_inkweld_router` returns (api.py).

The routes are module-level and take this as a dependency (`FacadeDep`) rather than closing over
it, so the same routes serve every app built in one process (the tests build many).
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from atelier_contracts.errors import NotFound
from atelier_contracts.profiles import GenerationSettings, Profile
from atelier_gateway.auth import Authenticator
from atelier_gateway.backends import MediaFetcher
from atelier_gateway.inkweld.app_auth import AppBackend
from atelier_gateway.inkweld.backends import ProfilesAdmin, ProjectFiles
from atelier_gateway.inkweld.mapping.providers import inkweld_provider, visible_profiles
from atelier_gateway.inkweld.models import ProviderType
from atelier_gateway.inkweld.settings import InkweldSettings
from atelier_gateway.service import GatewayService
from atelier_gateway.settings import Settings

# Where the binding dependency leaves the facade on `request.state`.
_STATE_KEY = "inkweld_facade"


@dataclass(frozen=True)
class Facade:
    settings: Settings
    inkweld: InkweldSettings
    service: GatewayService
    fetcher: MediaFetcher
    authenticator: Authenticator
    app_backend: AppBackend
    files: ProjectFiles
    admin: ProfilesAdmin

    async def bind(self, request: Request) -> None:
        """The router's own dependency: it runs before any route's (FastAPI solves a router's
        dependencies first), so `facade` below finds this one."""
        setattr(request.state, _STATE_KEY, self)

    async def shown_catalog(self) -> tuple[GenerationSettings, list[tuple[Profile, ProviderType]]]:
        """The switch, and the profiles the app can show under its providers' names."""
        catalog = await self.service.catalog()
        return catalog.settings, visible_profiles(catalog.profiles, self.inkweld.provider_aliases)

    async def shown_profile(self, profile_id: str) -> tuple[Profile, ProviderType]:
        """One profile (disabled ones too) the app can show, or 404."""
        profile = await self.admin.profile(profile_id) if len(profile_id) <= 100 else None
        provider = (
            inkweld_provider(profile.provider, self.inkweld.provider_aliases) if profile else None
        )
        if profile is None or provider is None:
            raise NotFound(f"There is no image profile {profile_id!r}.")
        return profile, provider


async def facade(request: Request) -> Facade:
    bound: Facade = getattr(request.state, _STATE_KEY)
    return bound


FacadeDep = Annotated[Facade, Depends(facade)]

"""What a route gets from FastAPI, declared once (as Polar's `auth.py` modules do): the caller,
and the service, settings and media fetcher the composition root (`main`) put on `app.state`.

Routers are module-level: a route says what it needs in its signature instead of being built
inside a factory that closes over the service.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from atelier_gateway.auth import Authenticator, User
from atelier_gateway.backends import MediaFetcher
from atelier_gateway.service import GatewayService
from atelier_gateway.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="JWT with `sub` and `projects` claims")


async def authenticate_request(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> User:
    """The user a request's bearer token names; `TokenRejected` (401) otherwise."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator(credentials.credentials if credentials else None)


async def _current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> User:
    return await authenticate_request(request, credentials)


async def _service(request: Request) -> GatewayService:
    service: GatewayService = request.app.state.service
    return service


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _fetcher(request: Request) -> MediaFetcher:
    fetcher: MediaFetcher = request.app.state.fetcher
    return fetcher


CurrentUser = Annotated[User, Depends(_current_user)]
Service = Annotated[GatewayService, Depends(_service)]
AppSettings = Annotated[Settings, Depends(_settings)]
Fetcher = Annotated[MediaFetcher, Depends(_fetcher)]

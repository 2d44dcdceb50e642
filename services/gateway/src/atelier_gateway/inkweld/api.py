"""The app's routes (`/api/v1/...`), each a translation onto the native services.

The routes live in `endpoints/` (configuration and status, generation, admin, media and covers),
module-level; this binds them to one gateway's service, settings and clients (facade.py).
Generation goes through `GatewayService.submit`, exactly as `POST /v1/generations` does; profiles
and the switch come from the same catalog as `GET /v1/features`; admin changes and the audit are
the profiles service's own methods over NATS. docs/inkweld.md lists every route and its mapping.

Not in the gateway's own OpenAPI document: the contract of these routes is the app's document,
served at `/api/v1/openapi.json`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from faststream.nats import NatsBroker
from starlette.responses import JSONResponse

from atelier_gateway.auth import Authenticator
from atelier_gateway.backends import MediaFetcher
from atelier_gateway.inkweld.app_auth import AppBackend
from atelier_gateway.inkweld.backends import ProfilesAdmin, ProjectFiles
from atelier_gateway.inkweld.endpoints import admin, config, generation, media
from atelier_gateway.inkweld.errors import document
from atelier_gateway.inkweld.facade import Facade
from atelier_gateway.inkweld.settings import InkweldSettings
from atelier_gateway.service import GatewayService
from atelier_gateway.settings import Settings


async def inkweld_document() -> JSONResponse:
    """The app's document these routes follow (the gateway's own is `/openapi.json`)."""
    return JSONResponse(document())


def create_inkweld_router(
    settings: Settings,
    service: GatewayService,
    fetcher: MediaFetcher,
    broker: NatsBroker,
    inkweld: InkweldSettings | None = None,
    app_backend: AppBackend | None = None,
) -> APIRouter:
    """The app's routes; include it under `/api/v1`."""
    inkweld = inkweld or InkweldSettings()
    facade = Facade(
        settings=settings,
        inkweld=inkweld,
        service=service,
        fetcher=fetcher,
        authenticator=Authenticator.from_settings(settings),
        app_backend=app_backend or AppBackend(inkweld.app_backend_url),
        files=ProjectFiles(broker, query_timeout_s=settings.query_timeout_s),
        admin=ProfilesAdmin(broker, query_timeout_s=settings.query_timeout_s),
    )
    router = APIRouter(include_in_schema=False, dependencies=[Depends(facade.bind)])
    for routes in (config.router, generation.router, admin.router, media.router):
        router.include_router(routes)
    # Not one of the document's operations: a plain route.
    router.add_api_route("/openapi.json", inkweld_document, route_class_override=APIRoute)
    return router

"""Composition root: settings → broker → backends → service → routes → app."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import httpx
from fastapi import FastAPI

from atelier_gateway import api
from atelier_gateway.api import install_auth_error_handler, install_quota_error_handler
from atelier_gateway.auth import Authenticator
from atelier_gateway.backends import MediaFetcher, NatsBackends
from atelier_gateway.body_limit import install_body_limit
from atelier_gateway.handlers import register_handlers
from atelier_gateway.inkweld import create_inkweld_router
from atelier_gateway.inkweld.app_auth import AppBackend
from atelier_gateway.inkweld.settings import InkweldSettings
from atelier_gateway.job_requests import JobIds
from atelier_gateway.openai_compat import router as openai_router
from atelier_gateway.service import GatewayService
from atelier_gateway.settings import Settings
from atelier_gateway.staging import InputStager
from atelier_gateway.validation import RequestLimits
from atelier_gateway.web import install_web_page
from atelier_messaging import ensure_streams, make_broker
from atelier_web import create_service_app, run_service

SERVICE = "gateway"
DESCRIPTION = "The app frontend's API: features, generations, their progress, media."


def create_app(
    settings: Settings | None = None, *, media_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """`media_transport` replaces the network for image bytes (tests: `httpx.MockTransport`)."""
    settings = settings or Settings()
    broker = make_broker(settings.nats_url, SERVICE)
    # The gateway consumes nothing durable (see README): it asks, publishes, follows status
    # subjects on the broker's connection, and hears `profiles.changed` to drop cached profiles.
    backends = NatsBackends(broker, query_timeout_s=settings.query_timeout_s)
    fetcher = MediaFetcher(
        connect_timeout_s=settings.media_connect_timeout_s,
        read_timeout_s=settings.media_read_timeout_s,
        transport=media_transport,
    )
    service = GatewayService(
        backends,
        job_lookup_grace_s=settings.job_lookup_grace_s,
        resync_s=settings.sse_resync_s,
        replay_window_s=settings.sse_replay_window_s,
        profile_cache_s=settings.profile_cache_s,
        limits=RequestLimits(max_data_url_bytes=settings.max_data_url_bytes),
        job_ids=JobIds(settings.job_id_key),
        # Pictures and large contexts are staged through context's slots (ADR 0017), PUT with
        # the same client that reads media's presigned URLs.
        stager=InputStager(
            backends, fetcher, context_inline_max_bytes=settings.context_inline_max_bytes
        ),
    )
    register_handlers(broker, service.forget_profiles)

    inkweld = InkweldSettings()
    # The app's backend, asked about its writers' projects and admins (docs/inkweld.md).
    app_backend = AppBackend(
        inkweld.app_backend_url,
        timeout_s=inkweld.app_timeout_s,
        cache_s=inkweld.app_cache_s,
        cache_size=inkweld.app_cache_size,
    )

    # jobs.requested must have its stream before the first 202 promises it was stored.
    declare_streams = partial(ensure_streams, settings.nats_url, settings.stream_replicas)
    app = create_service_app(
        "Atelier gateway",
        description=DESCRIPTION,
        broker=broker,
        on_startup=[*([declare_streams] if settings.run_startup_hooks else []), fetcher.start],
        on_shutdown=[fetcher.stop, app_backend.stop],
        state={
            "service": service,
            "settings": settings,
            "backends": backends,
            # What the module-level routers' dependencies read (`dependencies.py`).
            "fetcher": fetcher,
            "authenticator": Authenticator.from_settings(settings),
        },
    )
    install_auth_error_handler(app)
    install_quota_error_handler(app)
    install_body_limit(app, settings.max_request_bytes)
    app.include_router(api.router)
    # The writing app's own API, mapped onto the same service (docs/inkweld.md).
    app.include_router(
        create_inkweld_router(settings, service, fetcher, broker, inkweld, app_backend),
        prefix="/api/v1",
    )
    # OpenAI's images API, mapped onto the same service (docs/openai-compat.md).
    app.include_router(openai_router)
    install_web_page(app)
    return app


def cli(argv: Sequence[str] | None = None) -> None:
    # No span per SSE event and ping: with a thousand streams open, starting them (unrecorded,
    # without an OTLP endpoint) was 7% of the gateway's CPU while events flowed, and recorded
    # they would be a span per stream every 15 s (issue 17).
    run_service(SERVICE, DESCRIPTION, Settings, create_app, argv, http_message_spans=False)

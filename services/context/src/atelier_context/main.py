"""Composition root: settings → broker, object store, fetchers → service → handlers → app."""

from __future__ import annotations

import argparse

import httpx
from fastapi import FastAPI

from atelier_context.handlers import media_lookup, register_handlers
from atelier_context.images import ImageLimits
from atelier_context.references import ReferenceResolver, StorageFetcher
from atelier_context.service import ContextService
from atelier_context.settings import Settings
from atelier_context.ssrf import FetchPolicy, GuardedFetcher, parse_networks
from atelier_messaging import ensure_streams, make_broker
from atelier_storage import ObjectStore
from atelier_telemetry import configure_telemetry
from atelier_web import create_service_app, serve


def create_app(
    settings: Settings | None = None, *, guarded_fetcher: GuardedFetcher | None = None
) -> FastAPI:
    """`guarded_fetcher` replaces the URL fetcher (tests: one with a fake resolver)."""
    settings = settings or Settings()
    broker = make_broker(settings.nats_url, "context")
    store = ObjectStore.from_settings(settings)
    limits = ImageLimits(
        max_bytes=settings.reference_max_bytes,
        max_pixels=settings.reference_max_pixels,
        max_side=settings.reference_max_side,
    )
    # Presigned URLs of our own storage: no redirects expected, nothing from the environment.
    storage_client = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.fetch_timeout_s, connect=5.0),
        follow_redirects=False,
        trust_env=False,
    )
    guarded = guarded_fetcher or GuardedFetcher(
        FetchPolicy(
            allow=parse_networks(settings.fetch_allow_list),
            max_bytes=settings.reference_max_bytes,
            timeout_s=settings.fetch_timeout_s,
            max_redirects=settings.fetch_max_redirects,
        )
    )
    resolver = ReferenceResolver(
        media_lookup=media_lookup(broker, settings.media_query_timeout_s),
        storage=StorageFetcher(storage_client, settings.reference_max_bytes),
        guarded=guarded,
        limits=limits,
    )
    service = ContextService(
        resolver,
        store,
        settings.staging_bucket,
        max_elements=settings.max_elements,
        references_budget_s=settings.references_budget_s,
    )
    register_handlers(broker, service)

    async def prepare() -> None:
        await ensure_streams(settings.nats_url, settings.stream_replicas)
        # Workers and media create it too; whoever starts first wins, all are idempotent.
        await store.ensure_bucket(settings.staging_bucket)

    async def close_client() -> None:
        await storage_client.aclose()

    app = create_service_app(
        "Atelier context",
        broker=broker,
        on_startup=[prepare] if settings.run_startup_hooks else [],
        on_shutdown=[close_client],
        description="Assembles worldbuilding context into the prompt and reference images a "
        "model is sent.",
    )
    app.state.broker = broker
    app.state.service = service
    return app


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="atelier-context",
        description="Atelier context service: jobs.requested → jobs.enriched, and "
        "context.query.preview. Settings come from ATELIER_* / ATELIER_CONTEXT_* environment "
        "variables.",
    )
    parser.add_argument("--host", help="bind address (ATELIER_CONTEXT_HOST)")
    parser.add_argument("--port", type=int, help="health port (ATELIER_CONTEXT_PORT)")
    args = parser.parse_args()
    settings = Settings()
    configure_telemetry(
        "context",
        level=settings.log_level,
        json_logs=settings.log_json,
        otlp_endpoint=settings.otlp_endpoint,
    )
    serve(create_app(settings), args.host or settings.host, args.port or settings.port)

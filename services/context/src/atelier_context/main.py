"""Composition root: settings → broker, object store, fetchers → service → handlers → app."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import httpx
from fastapi import FastAPI

from atelier_context.handlers import media_lookup, register_handlers
from atelier_context.images import ImageLimits
from atelier_context.inputs import StagedInputs
from atelier_context.references import ReferenceResolver, StorageFetcher
from atelier_context.service import ContextService
from atelier_context.settings import Settings
from atelier_context.styles import ProjectStyles, StyleBucket
from atelier_contracts.subjects import PROJECT_STYLES_BUCKET
from atelier_messaging import CancelledJobs, ensure_streams, make_broker
from atelier_security.ssrf import FetchPolicy, GuardedFetcher, parse_networks
from atelier_storage import ObjectStore
from atelier_web import create_service_app, every, run_service

SERVICE = "context"
DESCRIPTION = (
    "Assembles worldbuilding context into the prompt and reference images a model is sent."
)


def create_app(
    settings: Settings | None = None,
    *,
    guarded_fetcher: GuardedFetcher | None = None,
    style_bucket: StyleBucket | None = None,
) -> FastAPI:
    """`guarded_fetcher` replaces the URL fetcher (tests: one with a fake resolver);
    `style_bucket` the styles' key-value bucket. Without one, and with the start-up hooks off
    (handler tests on FastStream's in-memory broker, which has no JetStream), no project style
    is kept or applied."""
    settings = settings or Settings()
    broker = make_broker(settings.nats_url, SERVICE)
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
    inputs = StagedInputs(store, settings.staging_bucket, settings.input_slot_ttl_s)
    lookup = media_lookup(broker, settings.media_query_timeout_s)
    resolver = ReferenceResolver(
        media_lookup=lookup,
        storage=StorageFetcher(storage_client, settings.reference_max_bytes),
        guarded=guarded,
        limits=limits,
        staged=inputs,
    )
    buckets: list[StyleBucket] = [style_bucket] if style_bucket is not None else []

    async def styles_bucket() -> StyleBucket:
        # Durable, replicated like the streams, kept until deleted (ADR 0024).
        if not buckets:
            buckets.append(
                await broker.key_value(PROJECT_STYLES_BUCKET, replicas=settings.stream_replicas)
            )
        return buckets[0]

    service = ContextService(
        resolver,
        store,
        settings.staging_bucket,
        max_elements=settings.max_elements,
        references_budget_s=settings.references_budget_s,
        inputs=inputs,
        styles=(
            ProjectStyles(styles_bucket, lookup)
            if style_bucket is not None or settings.run_startup_hooks
            else None
        ),
    )
    register_handlers(broker, service, inputs)

    hooks = settings.run_startup_hooks
    prepare = [
        partial(ensure_streams, settings.nats_url, settings.stream_replicas),
        # Workers and media create it too; whoever starts first wins, all are idempotent.
        partial(store.ensure_bucket, settings.staging_bucket),
    ]
    # Asked directly (no watch): only jobs with young objects under refs/ at sweep time.
    cancelled = CancelledJobs(broker, settings.stream_replicas)
    # Every replica sweeps: deletes are idempotent, and one list per hour is cheap.
    sweep = every(
        settings.sweep_interval_s,
        partial(inputs.sweep, settings.staged_max_age_s, cancelled.is_cancelled),
        failure="the staging sweep failed",  # storage away: the next sweep tries again
        log=logging.getLogger("atelier.context"),
    )
    return create_service_app(
        "Atelier context",
        description=DESCRIPTION,
        broker=broker,
        on_startup=prepare if hooks else [],
        background=[sweep] if hooks else [],
        on_shutdown=[storage_client.aclose],
    )


def cli(argv: Sequence[str] | None = None) -> None:
    run_service(SERVICE, DESCRIPTION, Settings, create_app, argv)

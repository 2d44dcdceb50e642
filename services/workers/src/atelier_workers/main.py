"""Composition root of a provider worker: one process serves one provider's queue."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import httpx
from fastapi import FastAPI

from atelier_contracts.profiles import CredentialQuery, CredentialReply
from atelier_contracts.subjects import Subject
from atelier_messaging import (
    CancelledJobs,
    ProviderHandles,
    ensure_streams,
    make_broker,
    query,
)
from atelier_storage import ObjectStore
from atelier_web import Option, create_service_app, run_service
from atelier_workers.adapters import get_adapter
from atelier_workers.credentials import ProviderCredentials
from atelier_workers.handlers import InFlight, register_credential_invalidation, register_handlers
from atelier_workers.pacing import TokenBucket
from atelier_workers.service import WorkerService
from atelier_workers.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    adapter = get_adapter(settings.provider)
    broker = make_broker(settings.nats_url, f"worker-{settings.provider}")
    store = ObjectStore.from_settings(settings)
    # One client per process; per-call timeouts come from the task's profile.
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=10.0),
        limits=httpx.Limits(max_connections=settings.concurrency * 2),
    )

    async def ask_profiles(request: CredentialQuery) -> CredentialReply:
        return await query(
            broker,
            Subject.PROFILES_CREDENTIALS,
            request,
            CredentialReply,
            settings.credentials_query_timeout_s,
        )

    credentials = ProviderCredentials(
        settings.provider,
        ask=ask_profiles,
        transport_key=settings.credentials_transport_key,
        fallback=settings.api_key,
        max_age_s=settings.credentials_max_age_s,
    )
    register_credential_invalidation(broker, credentials)
    service = WorkerService(
        adapter,
        store,
        settings.staging_bucket,
        client,
        settings.api_key,
        credentials=credentials,
        limiter=TokenBucket(settings.max_requests_per_minute, settings.rate_burst)
        if settings.max_requests_per_minute is not None
        else None,
        allowed_origins=frozenset(settings.allowed_base_url_origins),
        media_bucket=settings.media_bucket,
    )
    cancelled = CancelledJobs(broker, settings.stream_replicas)
    handles = ProviderHandles(broker, settings.stream_replicas)
    inflight = InFlight()
    register_handlers(
        broker, service, settings, cancelled=cancelled, handles=handles, inflight=inflight
    )
    prepare = [
        partial(ensure_streams, settings.nats_url, settings.stream_replicas),
        # References are read from staging; generated images are written to the media bucket.
        partial(store.ensure_bucket, settings.staging_bucket),
        partial(store.ensure_bucket, settings.media_bucket),
    ]
    # Abandon provider calls of jobs the writer cancelled.
    watch_cancellations = partial(cancelled.watch, inflight.cancel_job)
    return create_service_app(
        f"Atelier worker ({settings.provider})",
        description=f"Runs generation tasks on the {settings.provider} provider.",
        broker=broker,
        readiness=[store.ping],
        on_startup=prepare if settings.run_startup_hooks else [],
        background=[watch_cancellations] if settings.run_startup_hooks else [],
        on_shutdown=[client.aclose],
    )


def cli(argv: Sequence[str] | None = None) -> None:
    run_service(
        "workers",
        "Atelier provider worker: takes tasks from gen.<provider>.requested, calls the provider, "
        "writes the images to the media bucket, publishes gen.completed / gen.failed.",
        Settings,
        create_app,
        argv,
        name=lambda settings: f"worker-{settings.provider}",
        options=[Option("--provider", "provider", "provider to serve (ATELIER_WORKERS_PROVIDER)")],
    )

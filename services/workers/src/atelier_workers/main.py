"""Composition root of a provider worker: one process serves one provider's queue."""

from __future__ import annotations

import argparse
import asyncio

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
from atelier_telemetry import configure_telemetry
from atelier_web import create_service_app, serve
from atelier_workers.adapters import get_adapter
from atelier_workers.credentials import ProviderCredentials, register_credential_invalidation
from atelier_workers.handlers import InFlight, register_handlers
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
    )
    cancelled = CancelledJobs(broker, settings.stream_replicas)
    handles = ProviderHandles(broker, settings.stream_replicas)
    inflight = InFlight()
    register_handlers(
        broker, service, settings, cancelled=cancelled, handles=handles, inflight=inflight
    )
    background: list[asyncio.Task[None]] = []

    async def prepare() -> None:
        await ensure_streams(settings.nats_url, settings.stream_replicas)
        await store.ensure_bucket(settings.staging_bucket)

    async def watch_cancellations() -> None:
        # After the broker is up: abandon provider calls of jobs the writer cancelled.
        background.append(asyncio.create_task(cancelled.watch(inflight.cancel_job)))

    async def close_client() -> None:
        for task in background:
            task.cancel()
        await client.aclose()

    app = create_service_app(
        f"Atelier worker ({settings.provider})",
        broker=broker,
        readiness=[store.ping],
        on_startup=[prepare] if settings.run_startup_hooks else [],
        after_startup=[watch_cancellations] if settings.run_startup_hooks else [],
        on_shutdown=[close_client],
        description=f"Runs generation tasks on the {settings.provider} provider.",
    )
    app.state.broker = broker
    app.state.service = service
    return app


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="atelier-workers",
        description="Atelier provider worker: takes tasks from gen.<provider>.requested, calls the "
        "provider, stages the bytes, publishes gen.completed / gen.failed. Settings come from "
        "ATELIER_* / ATELIER_WORKERS_* environment variables.",
    )
    parser.add_argument("--provider", help="provider to serve (ATELIER_WORKERS_PROVIDER)")
    parser.add_argument("--host", help="bind address of the health port")
    parser.add_argument("--port", type=int, help="health port (ATELIER_WORKERS_PORT)")
    args = parser.parse_args()
    settings = Settings()
    if args.provider:
        settings = settings.model_copy(update={"provider": args.provider})
    configure_telemetry(
        f"worker-{settings.provider}",
        level=settings.log_level,
        json_logs=settings.log_json,
        otlp_endpoint=settings.otlp_endpoint,
    )
    serve(create_app(settings), args.host or settings.host, args.port or settings.port)

"""Composition root: settings → database, object store, broker → service → handlers → app."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from typing import ClassVar

from fastapi import FastAPI

from atelier_database import Database, migrate_to_head, upgrade_to_head
from atelier_media.assignments import AssignmentRepository, AssignmentService
from atelier_media.files import FilesRepository, FilesService
from atelier_media.handlers import (
    media_landed_publisher,
    register_assignment_handlers,
    register_file_handlers,
    register_handlers,
)
from atelier_media.migrations import MIGRATIONS
from atelier_media.repository import MediaRepository
from atelier_media.service import MediaService
from atelier_media.settings import Settings
from atelier_messaging import CancelledJobs, ensure_streams, make_broker
from atelier_storage import ObjectStore
from atelier_telemetry import configure_telemetry, instrument_fastapi
from atelier_web import ReadinessCheck, create_service_app, serve

SERVICE = "media"
# A probe must answer before the orchestrator's own timeout, even when a dependency hangs
# (the MinIO SDK retries for a long time by default).
READINESS_TIMEOUT_S = 2.0


def _bounded(check: ReadinessCheck) -> ReadinessCheck:
    async def bounded() -> bool:
        try:
            return await asyncio.wait_for(check(), READINESS_TIMEOUT_S)
        except TimeoutError:
            return False

    return bounded


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    broker = make_broker(settings.nats_url, SERVICE)
    db = Database(settings.database_url)
    repo = MediaRepository(db)
    store = ObjectStore.from_settings(settings)
    service = MediaService(
        repo,
        store,
        settings.staging_bucket,
        settings.media_bucket,
        media_landed_publisher(broker),
        thumbnail_max_px=settings.thumbnail_max_px,
        presign_ttl_s=settings.presign_ttl_s,
    )
    cancelled = CancelledJobs(broker, settings.stream_replicas)
    register_handlers(
        broker, service, cancelled.is_cancelled if settings.run_startup_hooks else None
    )
    assignments = AssignmentService(AssignmentRepository(db), repo)
    register_assignment_handlers(broker, assignments)
    files = FilesService(
        FilesRepository(db),
        repo,
        store,
        settings.staging_bucket,
        settings.media_bucket,
        thumbnail_max_px=settings.thumbnail_max_px,
        presign_ttl_s=settings.presign_ttl_s,
        upload_slot_ttl_s=settings.upload_slot_ttl_s,
        upload_max_bytes=settings.upload_max_bytes,
        project_max_files=settings.project_max_files,
        project_max_bytes=settings.project_max_bytes,
    )
    register_file_handlers(broker, files)

    background: list[asyncio.Task[None]] = []

    async def prepare() -> None:
        await ensure_streams(settings.nats_url, settings.stream_replicas)
        await migrate_to_head(MIGRATIONS, db.url)
        # Workers create the staging bucket too; whoever starts first wins, both are idempotent.
        await store.ensure_bucket(settings.staging_bucket)
        await store.ensure_bucket(settings.media_bucket)

    async def watch_cancellations() -> None:
        # After the broker is up: a local copy of the marks answers "was this job cancelled?"
        # for every landing without a request to NATS.
        background.append(asyncio.create_task(cancelled.watch()))

    async def stop() -> None:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await db.dispose()

    app = create_service_app(
        "Atelier media",
        description="Lands generated images: originals, thumbnails, provenance, presigned URLs.",
        broker=broker,
        readiness=[_bounded(db.ping), _bounded(store.ping)],
        on_startup=[prepare] if settings.run_startup_hooks else [],
        after_startup=[watch_cancellations] if settings.run_startup_hooks else [],
        on_shutdown=[stop],
    )
    # For tests: the in-memory broker wraps this broker; fixtures prepare tables and buckets.
    app.state.broker = broker
    app.state.service = service
    app.state.assignments = assignments
    app.state.files = files
    app.state.db = db
    return app


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="atelier-media",
        description="Atelier media service: lands generated images (settings: ATELIER_MEDIA_*).",
    )
    parser.add_argument("--host", help="interface to listen on (default: ATELIER_MEDIA_HOST)")
    parser.add_argument(
        "--port", type=int, help="HTTP port for /healthz and /readyz (default: 8084)"
    )
    parser.add_argument(
        "--migrate-only",
        action="store_true",
        help="bring the database schema to the newest revision and exit (a one-shot job)",
    )
    args = parser.parse_args(argv)

    if args.migrate_only:
        migrate_only()
        return
    settings = Settings()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    configure_telemetry(
        SERVICE,
        level=settings.log_level,
        json_logs=settings.log_json,
        otlp_endpoint=settings.otlp_endpoint,
    )
    app = create_app(settings)
    instrument_fastapi(app)
    serve(app, settings.host, settings.port, settings.log_level)


class _MigrationSettings(Settings):
    # A migration job reads the database URL only: it is given no S3 secret.
    secret_fields: ClassVar[tuple[str, ...]] = ()


def migrate_only() -> None:
    settings = _MigrationSettings()
    configure_telemetry(SERVICE, level=settings.log_level, json_logs=settings.log_json)
    upgrade_to_head(MIGRATIONS, settings.database_url)

"""Composition root: settings → database, object store, broker → service → handlers → app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

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
from atelier_media.sweep import UnlandedSweeper
from atelier_messaging import CancelledJobs, ensure_streams, make_broker
from atelier_storage import ObjectStore
from atelier_web import create_service_app, run_service

SERVICE = "media"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    broker = make_broker(settings.nats_url, SERVICE)
    db = Database(settings.database_url)
    repo = MediaRepository(db)
    store = ObjectStore.from_settings(settings)
    service = MediaService(
        repo,
        store,
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

    sweeper = UnlandedSweeper(repo, store, settings.media_bucket, settings.staging_bucket)
    background: list[asyncio.Task[None]] = []

    async def prepare() -> None:
        await ensure_streams(settings.nats_url, settings.stream_replicas)
        await migrate_to_head(MIGRATIONS, db.url)
        # Staging holds uploads; workers write generated images to the media bucket. Workers
        # create both too: whoever starts first wins, every call is idempotent.
        await store.ensure_bucket(settings.staging_bucket)
        await store.ensure_bucket(settings.media_bucket)

    async def watch_cancellations() -> None:
        # After the broker is up: a local copy of the marks answers "was this job cancelled?"
        # for every landing without a request to NATS.
        background.append(asyncio.create_task(cancelled.watch()))

    async def start_sweeper() -> None:
        if settings.sweep_interval_s > 0:
            background.append(asyncio.create_task(sweep_unlanded()))

    async def sweep_unlanded() -> None:
        # Every replica sweeps: deletes are idempotent, and a row is never removed.
        while True:
            await asyncio.sleep(settings.sweep_interval_s)
            try:
                await sweeper.sweep(settings.unlanded_max_age_s)
            except Exception:  # storage or the database away: the next sweep tries again
                logging.getLogger("atelier.media").exception("the unlanded sweep failed")

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
        readiness=[db.ping, store.ping],
        on_startup=[prepare] if settings.run_startup_hooks else [],
        after_startup=[watch_cancellations, start_sweeper] if settings.run_startup_hooks else [],
        on_shutdown=[stop],
    )
    # For tests: the in-memory broker wraps this broker; fixtures prepare tables and buckets.
    app.state.broker = broker
    app.state.service = service
    app.state.assignments = assignments
    app.state.files = files
    app.state.db = db
    app.state.sweeper = sweeper
    return app


def cli(argv: Sequence[str] | None = None) -> None:
    run_service(
        prog="atelier-media",
        description="Atelier media service: lands generated images.",
        settings_type=Settings,
        create_app=create_app,
        name=lambda _: SERVICE,
        migrate=lambda settings: upgrade_to_head(MIGRATIONS, settings.database_url),
        argv=argv,
    )

"""Composition root: settings → database, object store, broker → service → handlers → app."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

from fastapi import FastAPI

from atelier_database import Database, migrate_to_head
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
from atelier_web import create_service_app, every, run_service

SERVICE = "media"
DESCRIPTION = "Lands generated images: originals, thumbnails, provenance, presigned URLs."


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
    hooks = settings.run_startup_hooks
    prepare = [
        partial(ensure_streams, settings.nats_url, settings.stream_replicas),
        partial(migrate_to_head, MIGRATIONS, db.url),
        # Staging holds uploads; workers write generated images to the media bucket. Workers
        # create both too: whoever starts first wins, every call is idempotent.
        partial(store.ensure_bucket, settings.staging_bucket),
        partial(store.ensure_bucket, settings.media_bucket),
    ]
    background = [
        # A local copy of the marks answers "was this job cancelled?" for every landing without
        # a request to NATS.
        cancelled.watch,
        # Every replica sweeps: deletes are idempotent, and a row is never removed.
        every(
            settings.sweep_interval_s,
            partial(sweeper.sweep, settings.unlanded_max_age_s),
            failure="the unlanded sweep failed",  # storage or the database away
            log=logging.getLogger("atelier.media"),
        ),
    ]
    return create_service_app(
        "Atelier media",
        description=DESCRIPTION,
        broker=broker,
        readiness=[db.ping, store.ping],
        on_startup=prepare if hooks else [],
        background=background if hooks else [],
        on_shutdown=[db.dispose],
        # For tests: the in-memory broker wraps the broker; fixtures prepare the tables.
        state={"db": db},
    )


def cli(argv: Sequence[str] | None = None) -> None:
    run_service(SERVICE, DESCRIPTION, Settings, create_app, argv, migrate=MIGRATIONS.upgrade)

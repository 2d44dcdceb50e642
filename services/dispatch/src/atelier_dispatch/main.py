"""Composition root of the dispatch service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Sequence

from fastapi import FastAPI

from atelier_contracts.envelope import Event
from atelier_contracts.subjects import TASKS_STREAM
from atelier_database import Database, migrate_to_head, upgrade_to_head
from atelier_dispatch.handlers import register_handlers
from atelier_dispatch.migrations import MIGRATIONS
from atelier_dispatch.service import DispatchService
from atelier_dispatch.settings import Settings
from atelier_messaging import CancelledJobs, ensure_streams, make_broker, publish_event
from atelier_telemetry import configure_telemetry, set_queue_depth
from atelier_web import create_service_app, serve

log = logging.getLogger("atelier.dispatch")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    broker = make_broker(settings.nats_url, "dispatch")
    db = Database(settings.database_url)

    async def publish(event: Event, subject: str) -> None:
        await publish_event(broker, event, subject)

    cancelled = CancelledJobs(broker, settings.stream_replicas)
    service = DispatchService(
        db,
        publish,
        deadline_slack_s=settings.deadline_slack_s,
        max_attempts=settings.max_attempts,
        retry_base_s=settings.retry_base_s,
        mark_cancelled=cancelled.mark,
    )
    register_handlers(broker, service)
    sweeper: list[asyncio.Task[None]] = []

    async def report_queue_depth() -> None:
        """Tasks waiting per provider queue, for the metrics endpoint (and autoscaling)."""
        js = broker.connection.jetstream()
        for consumer in await js.consumers_info(TASKS_STREAM.name):
            set_queue_depth(TASKS_STREAM.name, consumer.name, consumer.num_pending or 0)

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(settings.sweep_interval_s)
            try:
                await service.end_overdue_jobs()
                await service.send_due_retries()
                await report_queue_depth()
            except Exception:
                log.exception("sweep failed; trying again next round")

    async def prepare() -> None:
        await ensure_streams(settings.nats_url, settings.stream_replicas)
        await migrate_to_head(MIGRATIONS, db.url)
        sweeper.append(asyncio.create_task(sweep_forever()))

    async def stop() -> None:
        for task in sweeper:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await db.dispose()

    app = create_service_app(
        "Atelier dispatch",
        broker=broker,
        readiness=[db.ping],
        on_startup=[prepare] if settings.run_startup_hooks else [],
        on_shutdown=[stop],
        description="Owns generation jobs: state machine, tasks per provider, final outcome.",
    )
    app.state.broker = broker
    app.state.service = service
    app.state.db = db
    return app


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="atelier-dispatch",
        description="Atelier dispatch service: owns jobs and their state machine. Settings come "
        "from ATELIER_* / ATELIER_DISPATCH_* environment variables.",
    )
    parser.add_argument("--host", help="bind address of the health port")
    parser.add_argument("--port", type=int, help="health port (ATELIER_DISPATCH_PORT)")
    parser.add_argument(
        "--migrate-only",
        action="store_true",
        help="bring the database schema to the newest revision and exit (a one-shot job)",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    configure_telemetry(
        "dispatch",
        level=settings.log_level,
        json_logs=settings.log_json,
        otlp_endpoint=settings.otlp_endpoint,
    )
    if args.migrate_only:
        upgrade_to_head(MIGRATIONS, settings.database_url)
        return
    serve(create_app(settings), args.host or settings.host, args.port or settings.port)

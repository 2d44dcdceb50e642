"""Composition root of the dispatch service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial

from fastapi import FastAPI

from atelier_contracts.envelope import Event
from atelier_contracts.subjects import TASKS_STREAM
from atelier_database import Database, migrate_to_head
from atelier_dispatch.handlers import register_handlers
from atelier_dispatch.migrations import MIGRATIONS
from atelier_dispatch.service import DispatchService
from atelier_dispatch.settings import Settings
from atelier_messaging import (
    CancelledJobs,
    ProviderBudgets,
    ensure_streams,
    make_broker,
    publish_event,
)
from atelier_telemetry import set_queue_depth, set_stream_usage
from atelier_web import Background, create_service_app, every, run_service

SERVICE = "dispatch"
DESCRIPTION = "Owns generation jobs: state machine, tasks per provider, final outcome."
log = logging.getLogger("atelier.dispatch")
# Stream usage is read less often than the task queues: a few requests per stream each time.
STREAMS_REPORT_EVERY_S = 5.0


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    broker = make_broker(settings.nats_url, SERVICE)
    db = Database(settings.database_url)

    async def publish(event: Event, subject: str) -> None:
        await publish_event(broker, event, subject)

    cancelled = CancelledJobs(broker, settings.stream_replicas)
    budgets = ProviderBudgets(broker, settings.stream_replicas)
    service = DispatchService(
        db,
        publish,
        deadline_slack_s=settings.deadline_slack_s,
        max_attempts=settings.max_attempts,
        retry_base_s=settings.retry_base_s,
        mark_cancelled=cancelled.mark,
        budgets=budgets.known,
    )
    register_handlers(broker, service)

    async def report_queue_depth() -> None:
        """Tasks waiting per provider queue, for the metrics endpoint (and autoscaling)."""
        js = broker.connection.jetstream()
        for consumer in await js.consumers_info(TASKS_STREAM.name):
            set_queue_depth(TASKS_STREAM.name, consumer.name, consumer.num_pending or 0)

    async def report_streams() -> None:
        """Every stream's (and key-value bucket's) usage and limits, and every durable
        consumer's lag: what the stream alerts and the dashboards read. Ephemeral consumers
        (ordered SSE resumes, watchers) have random names and are left out."""
        js = broker.connection.jetstream()
        for stream in await js.streams_info():
            name = stream.config.name or ""
            set_stream_usage(
                name,
                messages=stream.state.messages,
                bytes_=stream.state.bytes,
                max_messages=stream.config.max_msgs,
                max_bytes=stream.config.max_bytes,
            )
            for consumer in await js.consumers_info(name):
                if consumer.config.durable_name:
                    set_queue_depth(name, consumer.name, consumer.num_pending or 0)

    streams_reported = -STREAMS_REPORT_EVERY_S

    async def sweep() -> None:
        nonlocal streams_reported
        await service.end_overdue_jobs()
        await service.send_due_retries()
        await service.admit_waiting()
        await report_queue_depth()
        now = asyncio.get_running_loop().time()
        if now - streams_reported >= STREAMS_REPORT_EVERY_S:
            streams_reported = now
            await report_streams()

    async def budget_changed(provider: str) -> None:
        """A budget raised or removed lets waiting tasks go now, not at the next sweep."""
        try:
            await service.admit_waiting(provider)
        except Exception:
            log.exception("admission after a budget change failed; the sweeper will retry")

    hooks = settings.run_startup_hooks
    prepare = [
        partial(ensure_streams, settings.nats_url, settings.stream_replicas),
        partial(migrate_to_head, MIGRATIONS, db.url),
    ]
    background: list[Background] = [
        partial(budgets.watch, budget_changed),
        every(
            settings.sweep_interval_s,
            sweep,
            failure="sweep failed; trying again next round",
            log=log,
        ),
    ]
    return create_service_app(
        "Atelier dispatch",
        description=DESCRIPTION,
        broker=broker,
        readiness=[db.ping],
        on_startup=prepare if hooks else [],
        background=background if hooks else [],
        on_shutdown=[db.dispose],
        state={"service": service, "db": db},
    )


def cli(argv: Sequence[str] | None = None) -> None:
    run_service(SERVICE, DESCRIPTION, Settings, create_app, argv, migrate=MIGRATIONS.upgrade)

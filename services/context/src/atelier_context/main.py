"""Composition root of the context service."""

from __future__ import annotations

import argparse

from fastapi import FastAPI

from atelier_context.handlers import register_handlers
from atelier_context.settings import Settings
from atelier_messaging import ensure_streams, make_broker
from atelier_telemetry import configure_telemetry
from atelier_web import create_service_app, serve


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    broker = make_broker(settings.nats_url, "context")
    register_handlers(broker, settings)

    async def declare_streams() -> None:
        await ensure_streams(settings.nats_url, settings.stream_replicas)

    app = create_service_app(
        "Atelier context",
        broker=broker,
        on_startup=[declare_streams] if settings.run_startup_hooks else [],
        description="Assembles worldbuilding context into the prompt a model is sent.",
    )
    app.state.broker = broker
    return app


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="atelier-context",
        description="Atelier context service: jobs.requested → jobs.enriched. "
        "Settings come from ATELIER_* / ATELIER_CONTEXT_* environment variables.",
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

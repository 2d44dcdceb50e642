"""Composition root: wires settings, database, broker, service, handlers and the admin API."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar

from fastapi import FastAPI

from atelier_contracts.profiles import ProfilesChanged
from atelier_contracts.subjects import Subject
from atelier_database import Database, migrate_to_head, upgrade_to_head
from atelier_messaging import ensure_streams, make_broker, publish_event
from atelier_profiles.api import build_admin_router, build_governance_router
from atelier_profiles.governance import GovernanceService
from atelier_profiles.handlers import register_handlers
from atelier_profiles.migrations import MIGRATIONS
from atelier_profiles.repository import GovernanceRepository, InFlightLimits, ProfileRepository
from atelier_profiles.service import OriginPolicy, ProfileService
from atelier_profiles.settings import Settings
from atelier_security import at_rest_sealer, transport_sealer
from atelier_telemetry import configure_telemetry, instrument_fastapi
from atelier_web import create_service_app, serve

SERVICE = "profiles"

DESCRIPTION = """\
The admin API of Atelier: the global on/off switch for image generation, the model profiles
users choose from, provider credentials (stored encrypted, never shown), per-user quotas and
rate limits, and the audit of every finished job. Other services read the same data over NATS
request/reply (`profiles.query.*`) and hear about changes on `profiles.changed`.

Every route needs `Authorization: Bearer <admin token>`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app, its broker (`app.state.broker`), database and service (`app.state.*`)."""
    settings = settings or Settings()
    broker = make_broker(settings.nats_url, SERVICE)
    database = Database(settings.database_url)
    repository = ProfileRepository(database)

    async def publish_change(event: ProfilesChanged) -> None:
        await publish_event(broker, event, Subject.PROFILES_CHANGED)

    governance_repository = GovernanceRepository(database)

    async def bound_origins(provider: str) -> list[str]:
        row = await governance_repository.get_credential(provider)
        return list(row.allowed_origins) if row is not None else []

    # Where provider keys may go: only operators set these (the admin API's credentials and the
    # deployment's settings), never the NATS commands an app admin's routes use.
    origins = OriginPolicy(settings.allowed_base_url_origins, bound=bound_origins)
    service = ProfileService(repository, publish_change, origins)
    governance = GovernanceService(
        governance_repository,
        service,
        at_rest=at_rest_sealer(settings.credentials_key),
        transport=transport_sealer(settings.credentials_transport_key),
        in_flight=InFlightLimits(
            max_jobs=settings.user_max_jobs_in_flight,
            max_bytes=settings.user_max_bytes_in_flight,
        ),
    )
    register_handlers(broker, service, governance)

    async def declare_streams() -> None:
        await ensure_streams(settings.nats_url, settings.stream_replicas)

    async def migrate() -> None:
        await migrate_to_head(MIGRATIONS, database.url)

    on_startup: list[Callable[[], Awaitable[None]]] = []
    if settings.declare_streams:
        on_startup.append(declare_streams)
    on_startup.append(migrate)

    app = create_service_app(
        "Atelier profiles",
        broker=broker,
        readiness=[database.ping],
        on_startup=on_startup,
        on_shutdown=[database.dispose],
        description=DESCRIPTION,
    )
    app.include_router(build_admin_router(service, settings.admin_token))
    app.include_router(build_governance_router(governance, settings.admin_token))
    app.state.settings = settings
    app.state.broker = broker
    app.state.database = database
    app.state.service = service
    app.state.governance = governance
    return app


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="atelier-profiles",
        description="Atelier profiles service: admin API and profile lookups over NATS. "
        "Configured by ATELIER_* / ATELIER_PROFILES_* environment variables (see README).",
    )
    parser.add_argument("--host", help="interface to listen on (default: settings, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: settings, 8081)")
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
    configure_telemetry(
        SERVICE,
        level=settings.log_level,
        json_logs=settings.log_json,
        otlp_endpoint=settings.otlp_endpoint,
    )
    app = create_app(settings)
    instrument_fastapi(app)
    serve(
        app,
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
        log_level=settings.log_level,
    )


class _MigrationSettings(Settings):
    # A migration job reads the database URL only: it is given none of the service's secrets.
    secret_fields: ClassVar[tuple[str, ...]] = ()


def migrate_only() -> None:
    settings = _MigrationSettings()
    configure_telemetry(SERVICE, level=settings.log_level, json_logs=settings.log_json)
    upgrade_to_head(MIGRATIONS, settings.database_url)

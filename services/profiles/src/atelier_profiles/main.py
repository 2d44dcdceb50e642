"""Composition root: wires settings, database, broker, service, handlers and the admin API."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from fastapi import FastAPI

from atelier_contracts.profiles import ProfilesChanged
from atelier_contracts.subjects import Subject
from atelier_contracts.webhooks import WebhookDelivery
from atelier_database import Database, migrate_to_head
from atelier_messaging import ProviderBudgets, ensure_streams, make_broker, publish_event
from atelier_profiles.api import router as admin_router
from atelier_profiles.budgets import BudgetService, BudgetStore
from atelier_profiles.governance import GovernanceService
from atelier_profiles.governance_repository import GovernanceRepository
from atelier_profiles.handlers import register_handlers, register_webhook_handlers
from atelier_profiles.migrations import MIGRATIONS
from atelier_profiles.origins import OriginPolicy
from atelier_profiles.quota_ledger import InFlightLimits
from atelier_profiles.repository import ProfileRepository
from atelier_profiles.service import ProfileService
from atelier_profiles.settings import Settings
from atelier_profiles.webhooks import DeliveryPolicy, WebhookService
from atelier_profiles.webhooks_api import router as webhook_router
from atelier_profiles.webhooks_repository import WebhookRepository
from atelier_security import at_rest_sealer, transport_sealer
from atelier_web import create_service_app, run_service

SERVICE = "profiles"

DESCRIPTION = """\
The admin API of Atelier: the global on/off switch for image generation, the model profiles
users choose from, provider credentials (stored encrypted, never shown), per-user quotas and
rate limits, and the audit of every finished job. Other services read the same data over NATS
request/reply (`profiles.query.*`) and hear about changes on `profiles.changed`.

Every route needs `Authorization: Bearer <admin token>`.
"""


def create_app(
    settings: Settings | None = None, budget_store: BudgetStore | None = None
) -> FastAPI:
    """The app, its broker (`app.state.broker`), database and service (`app.state.*`).

    `budget_store`: where provider budgets live; the JetStream bucket unless a test says."""
    settings = settings or Settings()
    broker = make_broker(settings.nats_url, SERVICE)
    budgets = BudgetService(budget_store or ProviderBudgets(broker, settings.stream_replicas))
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

    async def publish_delivery(delivery: WebhookDelivery) -> None:
        await publish_event(broker, delivery, Subject.WEBHOOKS_DELIVER)

    webhooks = WebhookService(
        WebhookRepository(database),
        at_rest_sealer(settings.credentials_key),
        publish_delivery,
        DeliveryPolicy(
            retry_schedule_s=tuple(settings.webhook_retry_schedule_s),
            timeout_s=settings.webhook_timeout_s,
            allow=tuple(settings.webhook_allow_list),
            max_endpoints=settings.webhook_max_endpoints,
        ),
    )
    register_handlers(broker, service, governance, webhooks)
    register_webhook_handlers(broker, webhooks)

    # Migrations always run; streams not where an init job declares them.
    prepare = [partial(migrate_to_head, MIGRATIONS, database.url)]
    if settings.declare_streams:
        prepare.insert(0, partial(ensure_streams, settings.nats_url, settings.stream_replicas))
    app = create_service_app(
        "Atelier profiles",
        description=DESCRIPTION,
        broker=broker,
        readiness=[database.ping],
        on_startup=prepare,
        on_shutdown=[database.dispose],
        state={
            "settings": settings,
            "service": service,
            "governance": governance,
            "budgets": budgets,
            "webhooks": webhooks,
        },
    )
    app.include_router(admin_router)
    app.include_router(webhook_router)
    return app


def cli(argv: Sequence[str] | None = None) -> None:
    run_service(SERVICE, DESCRIPTION, Settings, create_app, argv, migrate=MIGRATIONS.upgrade)

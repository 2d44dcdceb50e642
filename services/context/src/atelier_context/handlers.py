"""Context's only subscription: jobs.requested → jobs.enriched."""

from __future__ import annotations

from faststream.nats import NatsBroker

from atelier_context.service import enrich_job
from atelier_context.settings import Settings
from atelier_contracts.envelope import derived_event_id
from atelier_contracts.jobs import JobRequested
from atelier_contracts.subjects import Durable, Subject
from atelier_messaging import durable_subscriber, publish_event


def register_handlers(broker: NatsBroker, settings: Settings) -> None:
    # Ack policy: ack once jobs.enriched is stored; on error redeliver with backoff. Enrichment is
    # pure, so a redelivery republishes the same event id and JetStream drops the duplicate.
    @durable_subscriber(broker, Subject.JOBS_REQUESTED, Durable.CONTEXT_JOBS, max_workers=4)
    async def enrich_requested_job(request: JobRequested) -> None:
        enriched = enrich_job(request, settings.max_elements).model_copy(
            update={"event_id": derived_event_id(request.event_id, Subject.JOBS_ENRICHED)}
        )
        await publish_event(broker, enriched, Subject.JOBS_ENRICHED)

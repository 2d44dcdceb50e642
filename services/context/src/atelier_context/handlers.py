"""Context's subscriptions: jobs.requested → jobs.enriched, the preview query, and deleting a
final job's staged reference images."""

from __future__ import annotations

import nats.errors
from faststream.exceptions import SubscriberNotFound
from faststream.nats import NatsBroker

from atelier_context.references import MediaLookup, MediaUnavailable
from atelier_context.service import ContextService
from atelier_contracts.envelope import derived_event_id
from atelier_contracts.jobs import (
    FINAL_STATUSES,
    ContextPreviewQuery,
    ContextPreviewReply,
    JobRequested,
    JobStatusChanged,
)
from atelier_contracts.media import MediaQuery, MediaReply
from atelier_contracts.subjects import JOB_FINISHED_ALL, Durable, Subject
from atelier_messaging import durable_subscriber, publish_event, query

# Request/reply subscribers share this queue group: replicas split the queries, one answer each.
QUEUE = "context"


def media_lookup(broker: NatsBroker, timeout_s: float) -> MediaLookup:
    """The service's way to the media library: `media.query.get` over core NATS."""

    async def lookup(media_id: str) -> MediaReply:
        try:
            return await query(
                broker, Subject.MEDIA_GET, MediaQuery(media_id=media_id), MediaReply, timeout_s
            )
        # No answer in time, no responders, or (in-memory test broker) no subscriber.
        except (TimeoutError, nats.errors.Error, SubscriberNotFound) as exc:
            raise MediaUnavailable(f"media.query.get: {type(exc).__name__}") from exc

    return lookup


def register_handlers(broker: NatsBroker, service: ContextService) -> None:
    # Ack policy: ack once jobs.enriched is stored; on error (object storage down) redeliver with
    # backoff. A redelivery stages the same keys and republishes the same event id, which
    # JetStream drops as a duplicate. An image that cannot be had is not an error: it is listed
    # in `excluded_images` with its reason and the job goes on without it.
    @durable_subscriber(broker, Subject.JOBS_REQUESTED, Durable.CONTEXT_JOBS, max_workers=4)
    async def enrich_requested_job(request: JobRequested) -> None:
        enriched = (await service.enrich_job(request)).model_copy(
            update={"event_id": derived_event_id(request.event_id, Subject.JOBS_ENRICHED)}
        )
        await publish_event(broker, enriched, Subject.JOBS_ENRICHED)

    # Ack policy: ack once the final job's `refs/<job>/` objects are deleted (deleting none is
    # fine: a repeated event). A job that was enriched without reference images staged nothing,
    # so there is nothing to list; one that ended before enrichment is listed, as staging may
    # have begun. A storage error raises and the event is redelivered with backoff; if it never
    # succeeds the objects are left behind, costing space, never correctness.
    @durable_subscriber(broker, JOB_FINISHED_ALL, Durable.CONTEXT_JOBS_FINISHED, max_workers=4)
    async def discard_staged_references(event: JobStatusChanged) -> None:
        job = event.job
        if job.status not in FINAL_STATUSES:
            return
        if job.assembled_prompt is not None and not job.reference_images:
            return
        await service.discard_references(job.id)

    # Core NATS request/reply: nothing to ack; if we fail the gateway times out and says so.
    @broker.subscriber(Subject.CONTEXT_PREVIEW, queue=QUEUE)
    async def preview_context(query: ContextPreviewQuery) -> ContextPreviewReply:
        return await service.preview(query)

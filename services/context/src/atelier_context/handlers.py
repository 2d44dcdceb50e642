"""Context's subscriptions: jobs.requested → jobs.enriched, the preview query, deleting a final
job's staged reference images, and the slots the gateway stages a request's inputs in."""

from __future__ import annotations

import logging

import nats.errors
from faststream.exceptions import SubscriberNotFound
from faststream.nats import NatsBroker

from atelier_context.inputs import StagedInputMissing, StagedInputs
from atelier_context.references import MediaLookup, MediaUnavailable
from atelier_context.service import ContextService
from atelier_contracts.envelope import derived_event_id
from atelier_contracts.errors import AtelierError
from atelier_contracts.jobs import (
    FINAL_STATUSES,
    ContextPreviewQuery,
    ContextPreviewReply,
    JobRequested,
    JobStatusChanged,
)
from atelier_contracts.media import MediaQuery, MediaReply
from atelier_contracts.profiles import RemoteError
from atelier_contracts.staging import InputSlotsReply, InputSlotsRequest
from atelier_contracts.style import StylePutCommand, StylePutReply, StyleQuery, StyleReply
from atelier_contracts.subjects import JOB_FINISHED_ALL, Durable, Subject
from atelier_messaging import declare_publishers, durable_subscriber, publish_event, query

log = logging.getLogger("atelier.context.handlers")

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


def register_handlers(
    broker: NatsBroker, service: ContextService, inputs: StagedInputs | None = None
) -> None:
    declare_publishers(broker, "context")

    # Ack policy: ack once jobs.enriched is stored; on error (object storage down) redeliver with
    # backoff. A redelivery stages the same keys and republishes the same event id, which
    # JetStream drops as a duplicate. An image that cannot be had is not an error: it is listed
    # in `excluded_images` with its reason and the job goes on without it.
    #
    # A staged context (ADR 0017) is deleted once jobs.enriched is stored; a redelivery that
    # finds it gone comes after that (or after the job ended and its `refs/<job>/` was cleared),
    # since the gateway stages before it publishes: it is acked, there is nothing left to do.
    @durable_subscriber(broker, Subject.JOBS_REQUESTED, Durable.CONTEXT_JOBS, max_workers=4)
    async def enrich_requested_job(request: JobRequested) -> None:
        try:
            enriched = await service.enrich_job(request)
        except StagedInputMissing:
            log.info("staged context gone: already enriched", extra={"job_id": request.job_id})
            return
        enriched = enriched.model_copy(
            update={"event_id": derived_event_id(request.event_id, Subject.JOBS_ENRICHED)}
        )
        await publish_event(broker, enriched, Subject.JOBS_ENRICHED)
        await service.discard_staged_context(request)

    # Ack policy: ack once the final job's `refs/<job>/` objects are deleted (deleting none is
    # fine: a repeated event). A job that was enriched with no element image at all staged
    # nothing, so there is nothing to list: every element image is either sent
    # (`reference_images`) or excluded with a reason (`excluded_images`), and a picture the
    # gateway staged under `refs/<job>/in/` is one of those. One that ended before enrichment is
    # listed, as staging may have begun. A storage error raises and the event is redelivered
    # with backoff; if it never succeeds the objects are left behind, costing space, never
    # correctness.
    @durable_subscriber(broker, JOB_FINISHED_ALL, Durable.CONTEXT_JOBS_FINISHED, max_workers=4)
    async def discard_staged_references(event: JobStatusChanged) -> None:
        job = event.job
        if job.status not in FINAL_STATUSES:
            return
        if job.assembled_prompt is not None and not (job.reference_images or job.excluded_images):
            return
        await service.discard_references(job.id)

    # Core NATS request/reply: nothing to ack; if we fail the gateway times out and says so.
    @broker.subscriber(Subject.CONTEXT_PREVIEW, queue=QUEUE)
    async def preview_context(query: ContextPreviewQuery) -> ContextPreviewReply:
        return await service.preview(query)

    styles = service.styles
    if styles is not None:
        # Core NATS request/reply (ADR 0024): nothing to ack. A refusal (stale version, an image
        # not in the project) is answered in `error`; raising would send no reply, and the
        # gateway would take context for down.
        @broker.subscriber(Subject.CONTEXT_STYLE_GET, queue=QUEUE)
        async def read_style(query: StyleQuery) -> StyleReply:
            return StyleReply(style=await styles.get(query.project))

        @broker.subscriber(Subject.CONTEXT_STYLE_PUT, queue=QUEUE)
        async def write_style(command: StylePutCommand) -> StylePutReply:
            try:
                return StylePutReply(style=await styles.put(command))
            except AtelierError as exc:
                return StylePutReply(error=RemoteError.of(exc))

    if inputs is not None:
        # Core NATS request/reply: presigning is local computation, nothing is written; a slot
        # nobody uses costs nothing.
        @broker.subscriber(Subject.CONTEXT_INPUT_SLOTS, queue=QUEUE)
        async def issue_input_slots(request: InputSlotsRequest) -> InputSlotsReply:
            return await inputs.issue_slots(request)

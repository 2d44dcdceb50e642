"""Media's NATS subscribers: parse the contract, call the service, return or publish the result."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from faststream.nats import NatsBroker

from atelier_contracts.clock import utcnow
from atelier_contracts.generation import GenerationCompleted
from atelier_contracts.media import (
    MarkDeliveredCommand,
    MarkDeliveredReply,
    MediaAssigned,
    MediaLanded,
    MediaListQuery,
    MediaListReply,
    MediaQuery,
    MediaReply,
    ProjectAssignmentsQuery,
    ProjectAssignmentsReply,
    ProjectFileQuery,
    ProjectFileReply,
    ProjectFilesQuery,
    ProjectFilesReply,
    StoreFileCommand,
    StoreFileReply,
    UploadSlotReply,
    UploadSlotRequest,
)
from atelier_contracts.profiles import RemoteError
from atelier_contracts.subjects import Durable, Subject
from atelier_media.assignments import AssignmentService
from atelier_media.files import FilesService
from atelier_media.service import MediaService, PublishLanded
from atelier_messaging import declare_publishers, durable_subscriber, publish_event
from atelier_telemetry import observe_stage_latency

log = logging.getLogger("atelier.media")

# Request/reply subscribers share this queue group: replicas split the queries, one answer each.
QUEUE = "media"


def media_landed_publisher(broker: NatsBroker) -> PublishLanded:
    """The service's `publish`: durable (waits for JetStream's ack) and deduplicated by event id."""

    async def publish(event: MediaLanded) -> None:
        await publish_event(broker, event, Subject.MEDIA_LANDED)

    return publish


def register_handlers(
    broker: NatsBroker,
    service: MediaService,
    is_cancelled: Callable[[str], Awaitable[bool]] | None = None,
) -> None:
    declare_publishers(broker, "media")

    # Ack policy: the message is acked only once the images are stored, the rows committed and
    # `media.landed` stored by JetStream. Any exception (S3 or database down, an image missing)
    # naks it with a growing delay (RedeliveryBackoffMiddleware) up to `max_deliver`; redelivery
    # is safe because landing is idempotent per task and image index. Several tasks land at once:
    # most of a landing is waiting on object storage.
    @durable_subscriber(broker, Subject.GEN_COMPLETED, Durable.MEDIA_GEN_COMPLETED, max_workers=4)
    async def land_generated_images(event: GenerationCompleted) -> None:
        if is_cancelled is not None and await is_cancelled(event.task.job_id):
            # A late result of a job the writer cancelled: never lands; its objects are removed.
            await service.discard_cancelled_result(event)
            return
        await service.land_generated_images(event)
        # The provider's answer to its images in the library: Atelier's own time after the
        # provider (objective "landing", docs/operations.md).
        observe_stage_latency("completed_to_landed", (utcnow() - event.occurred_at).total_seconds())

    # Core NATS request/reply: nothing to ack; if we fail the requester times out and may ask again.
    @broker.subscriber(Subject.MEDIA_GET, queue=QUEUE)
    async def get_media(query: MediaQuery) -> MediaReply:
        return await service.get_media(query.media_id)

    @broker.subscriber(Subject.MEDIA_LIST, queue=QUEUE)
    async def list_media(query: MediaListQuery) -> MediaListReply:
        return await service.list_media(query)


def register_assignment_handlers(broker: NatsBroker, assignments: AssignmentService) -> None:
    # Ack policy: acked once the choice is committed (or found older than the slot's, or naming
    # media that is not in the project: never retried, see `record_assignment`). A database
    # failure naks it with backoff; recording is idempotent on the event id.
    @durable_subscriber(broker, Subject.MEDIA_ASSIGNED, Durable.MEDIA_ASSIGNED)
    async def record_assignment(event: MediaAssigned) -> None:
        await assignments.record_assignment(event)

    @broker.subscriber(Subject.MEDIA_ASSIGNMENTS, queue=QUEUE)
    async def project_assignments(query: ProjectAssignmentsQuery) -> ProjectAssignmentsReply:
        return await assignments.project_assignments(query.project)


def register_file_handlers(broker: NatsBroker, files: FilesService) -> None:
    # Ack policy of all five: core NATS request/reply, nothing to ack. A refusal (bad name, a
    # mismatched or missing upload, a project limit) is answered in the reply's `error`: raising
    # would send no reply, and the gateway would take media for down. Only a failure of storage
    # or the database goes unanswered; the gateway's request times out (503) and may be retried:
    # a slot is just a key, storing is an upsert, a delivered mark is set once.
    @broker.subscriber(Subject.MEDIA_UPLOAD_SLOT, queue=QUEUE)
    async def upload_slot(request: UploadSlotRequest) -> UploadSlotReply:
        return await files.upload_slot(request.project)

    @broker.subscriber(Subject.MEDIA_STORE_FILE, queue=QUEUE)
    async def store_file(command: StoreFileCommand) -> StoreFileReply:
        try:
            return await files.store_file(command)
        except Exception:
            # Storage or the database failed: say so at once rather than let the gateway wait
            # out its long timeout. The staged upload is already removed; the writer resends.
            log.exception("could not store a project file", extra={"project": command.project})
            failed = RemoteError(
                code="storage_error",
                status=503,
                message="Atelier could not store the file just now; try again shortly.",
            )
            return StoreFileReply(error=failed)

    @broker.subscriber(Subject.MEDIA_FILES, queue=QUEUE)
    async def project_files(query: ProjectFilesQuery) -> ProjectFilesReply:
        return await files.list_files(query)

    @broker.subscriber(Subject.MEDIA_FILE, queue=QUEUE)
    async def project_file(query: ProjectFileQuery) -> ProjectFileReply:
        return await files.get_file(query.project, query.filename)

    @broker.subscriber(Subject.MEDIA_MARK_DELIVERED, queue=QUEUE)
    async def mark_delivered(command: MarkDeliveredCommand) -> MarkDeliveredReply:
        return await files.mark_delivered(command)

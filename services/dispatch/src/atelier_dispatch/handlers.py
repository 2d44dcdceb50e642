"""Dispatch's subscriptions: thin wrappers that parse a contract and call the service."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from faststream.nats.subscriber.usecases import LogicSubscriber
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from atelier_contracts.generation import GenerationFailed, GenerationProgress
from atelier_contracts.jobs import (
    CancelJobCommand,
    JobEnriched,
    JobListQuery,
    JobListReply,
    JobQuery,
    JobReply,
    JobRequested,
)
from atelier_contracts.media import MediaLanded
from atelier_contracts.subjects import MAX_DELIVERIES_ADVISORY, Durable, Subject
from atelier_dispatch.dead_letter import MaxDeliveriesAdvisory, handle_max_deliveries
from atelier_dispatch.intake import JobNotRecordedYet
from atelier_dispatch.service import DispatchService
from atelier_messaging import (
    INTEREST_CONSUMERS,
    declare_publishers,
    delivery_attempt,
    durable_subscriber,
)
from atelier_telemetry import record_dead_letter

log = logging.getLogger("atelier.dispatch")


class JetStreamMessages:
    """The dead-letter path's view of stored messages (`dead_letter.StoredMessages`)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def fetch(self, stream: str, seq: int) -> tuple[str, bytes] | None:
        try:
            raw = await self._js.get_msg(stream, seq)
        except NotFoundError:
            return None
        return raw.subject or "", raw.data or b""

    async def delete(self, stream: str, seq: int) -> None:
        with contextlib.suppress(NotFoundError):
            await self._js.delete_msg(stream, seq)

    async def handled_by_others(self, stream: str, seq: int, subject: str, consumer: str) -> bool:
        for other in INTEREST_CONSUMERS:
            if other.subject != subject or other.durable == consumer:
                continue
            try:
                info = await self._js.consumer_info(stream, other.durable)
            except NotFoundError:
                continue
            if info.ack_floor is None or (info.ack_floor.stream_seq or 0) < seq:
                return False
        return True


def register_handlers(broker: NatsBroker, service: DispatchService) -> None:
    declare_publishers(broker, "dispatch")
    # Ack policy for every durable consumer below: ack after the job's transaction committed and
    # its events were stored; on error, redeliver with backoff (handlers are idempotent: state is
    # recounted from rows and event ids are derived). A job that still never settles is ended by
    # the deadline sweeper, so nothing waits forever.

    def job_consumer(
        subject: Subject, durable: Durable, *, max_deliver: int = 50
    ) -> LogicSubscriber[Any]:
        # Every consumer below: eight messages at once per replica, 50 tries unless said otherwise.
        return durable_subscriber(broker, subject, durable, max_workers=8, max_deliver=max_deliver)

    @job_consumer(Subject.JOBS_REQUESTED, Durable.DISPATCH_JOBS_REQUESTED)
    async def record_requested_job(event: JobRequested) -> None:
        await service.record_request(event)

    @job_consumer(Subject.JOBS_ENRICHED, Durable.DISPATCH_JOBS_ENRICHED)
    async def dispatch_enriched_job(event: JobEnriched, msg: NatsMessage) -> None:
        try:
            await service.dispatch_enriched(event)
        except JobNotRecordedYet:
            # Context was quicker than our own consumer of jobs.requested: not a failure, so
            # no error log and no backoff, just another look shortly (max_deliver still bounds
            # it; the dead-letter path ends a job whose request never gets recorded).
            await msg.nack(delay=min(2.0, 0.05 * delivery_attempt(msg)))

    @job_consumer(Subject.GEN_FAILED, Durable.DISPATCH_GEN_FAILED)
    async def record_task_failed(event: GenerationFailed) -> None:
        await service.task_failed(event)

    # Progress is worth little once late: a few tries, then the next tick will do.
    @job_consumer(Subject.GEN_PROGRESS, Durable.DISPATCH_GEN_PROGRESS, max_deliver=3)
    async def announce_task_progress(event: GenerationProgress) -> None:
        await service.task_progress(event)

    @job_consumer(Subject.MEDIA_LANDED, Durable.DISPATCH_MEDIA_LANDED)
    async def record_landed_images(event: MediaLanded) -> None:
        await service.images_landed(event)

    # Dead-letter path (core NATS advisory, queue group: one replica acts). An advisory missed
    # while dispatch is down is covered by the deadline sweeper.
    @broker.subscriber(MAX_DELIVERIES_ADVISORY, queue="dispatch")
    async def fail_undeliverable(advisory: MaxDeliveriesAdvisory) -> None:
        messages = JetStreamMessages(broker.connection.jetstream())
        record_dead_letter(advisory.stream, advisory.consumer)
        outcome = await handle_max_deliveries(advisory, messages, service)
        log.warning(
            "message ran out of deliveries",
            extra={"stream": advisory.stream, "consumer": advisory.consumer, "outcome": outcome},
        )

    @broker.subscriber(Subject.JOBS_CANCEL, queue="dispatch")
    async def cancel_job(command: CancelJobCommand) -> JobReply:
        job = await service.cancel(command.job_id)
        log.info("job cancel", extra={"job_id": command.job_id, "by": command.requested_by})
        return JobReply.compact(job)

    # Queries (core NATS request/reply, queue group: any replica answers).
    @broker.subscriber(Subject.JOBS_GET, queue="dispatch")
    async def get_job(query: JobQuery) -> JobReply:
        return JobReply.compact(await service.get_job(query.job_id))

    @broker.subscriber(Subject.JOBS_LIST, queue="dispatch")
    async def list_jobs(query: JobListQuery) -> JobListReply:
        return JobListReply(jobs=await service.list_jobs(query))

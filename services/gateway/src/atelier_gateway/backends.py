"""The gateway's way to the rest of Atelier; it plays the part `repository.py` plays elsewhere.

The gateway owns no data. Reads are core NATS request/reply to the service that owns the data
(profiles, dispatch, media), a new job is one durable `jobs.requested` event, status streams are
core NATS subscriptions to the status subjects (an ordered JetStream consumer when a client
resumes with `Last-Event-ID`), and image bytes come over HTTP from the presigned URLs the media
service hands out. A service that does not answer becomes a 503 with a message
naming it, never a hanging request or a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import httpx
import nats.errors
from faststream.exceptions import SubscriberNotFound
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import BaseModel, ValidationError

from atelier_contracts.errors import AtelierError, NotFound, Unavailable
from atelier_contracts.jobs import (
    CancelJobCommand,
    ContextPreviewQuery,
    ContextPreviewReply,
    JobListQuery,
    JobListReply,
    JobQuery,
    JobReply,
    JobRequested,
    JobStatusChanged,
    JobView,
)
from atelier_contracts.media import (
    MediaAssigned,
    MediaListQuery,
    MediaListReply,
    MediaQuery,
    MediaReply,
    ProjectAssignmentsQuery,
    ProjectAssignmentsReply,
)
from atelier_contracts.profiles import (
    MAX_RESERVATIONS_PER_BATCH,
    ProfilesListQuery,
    ProfilesListReply,
    QuotaEstimateReply,
    QuotaEstimateRequest,
    QuotaReleaseReply,
    QuotaReleaseRequest,
    QuotaReserveBatch,
    QuotaReserveBatchReply,
    QuotaReserveReply,
    QuotaReserveRequest,
)
from atelier_contracts.staging import InputSlotsReply, InputSlotsRequest
from atelier_contracts.style import (
    ProjectStyle,
    StylePutCommand,
    StylePutReply,
    StyleQuery,
    StyleReply,
)
from atelier_contracts.subjects import STATUS_STREAM, Subject
from atelier_gateway.service import RequestTooLarge
from atelier_gateway.streams import FeedClosed, StatusUpdate
from atelier_messaging import publish_event, query
from atelier_telemetry import STATUS_SUBSCRIPTIONS_OPEN

log = logging.getLogger("atelier.gateway.backends")

R = TypeVar("R", bound=BaseModel)

# What "nobody answered" looks like: a timeout, no responders (or no connection) from nats-py,
# and, on FastStream's in-memory test broker, no subscriber.
NOT_ANSWERING = (TimeoutError, nats.errors.Error, SubscriberNotFound)


def not_answering(service: str) -> Unavailable:
    return Unavailable(f"The {service} service is not answering; try again shortly.")


async def ask(
    broker: NatsBroker,
    service: str,
    subject: Subject,
    request: BaseModel,
    reply_type: type[R],
    timeout_s: float,
) -> R:
    """A core NATS request to `service`: its reply, or a 503 naming it when nobody answered
    within `timeout_s` (the Inkweld facade's clients ask the same way)."""
    try:
        return await query(broker, subject, request, reply_type, timeout_s)
    except NOT_ANSWERING as exc:
        log.warning(
            "query not answered", extra={"subject": str(subject), "error": type(exc).__name__}
        )
        raise not_answering(service) from exc


# A preview may fetch reference images (the context service gives them 30 s in all), so it is
# waited for longer than a plain lookup.
CONTEXT_PREVIEW_TIMEOUT_S = 35.0


SendBatch = Callable[[QuotaReserveBatch], Awaitable[QuotaReserveBatchReply]]


class ReservationBatcher:
    """Sends quota reservations to profiles in batches (ADR 0016).

    A reservation goes at once when fewer than `max_in_flight` batches are on their way; those
    that arrive meanwhile wait and go together in the next batch (at most
    `MAX_RESERVATIONS_PER_BATCH`). A lone submission waits for nobody; a burst of 512 costs
    profiles a dozen messages instead of 512, each of which it had to decode, answer and encode.
    A batch that is not answered fails every reservation in it (no answer, no reservation).
    """

    def __init__(self, send: SendBatch, *, max_in_flight: int = 4) -> None:
        self._send = send
        self._max_in_flight = max_in_flight
        self._waiting: list[tuple[QuotaReserveRequest, asyncio.Future[QuotaReserveReply]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    async def reserve(self, request: QuotaReserveRequest) -> QuotaReserveReply:
        answer: asyncio.Future[QuotaReserveReply] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        self._send_waiting()
        return await answer

    def _send_waiting(self) -> None:
        while self._waiting and len(self._in_flight) < self._max_in_flight:
            batch = self._waiting[:MAX_RESERVATIONS_PER_BATCH]
            del self._waiting[:MAX_RESERVATIONS_PER_BATCH]
            task = asyncio.create_task(self._send_batch(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._send_waiting()

    async def _send_batch(
        self, batch: list[tuple[QuotaReserveRequest, asyncio.Future[QuotaReserveReply]]]
    ) -> None:
        try:
            reply = await self._send(QuotaReserveBatch(requests=[r for r, _ in batch]))
            if len(reply.replies) != len(batch):
                raise not_answering("profiles")
            for (_, answer), outcome in zip(batch, reply.replies, strict=True):
                if not answer.done():  # a caller that went away is not told
                    answer.set_result(outcome)
        except Exception as exc:
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
        finally:  # cancelled (the gateway stopping): nobody waits for ever
            for _, answer in batch:
                if not answer.done():
                    answer.cancel()


class NatsBackends:
    def __init__(self, broker: NatsBroker, *, query_timeout_s: float = 3.0) -> None:
        self._broker = broker
        self._timeout = query_timeout_s
        self._reservations = ReservationBatcher(self._send_reservations)

    async def _send_reservations(self, batch: QuotaReserveBatch) -> QuotaReserveBatchReply:
        return await self._ask("profiles", Subject.QUOTA_RESERVE, batch, QuotaReserveBatchReply)

    async def _ask(
        self,
        service: str,
        subject: Subject,
        request: BaseModel,
        reply_type: type[R],
        *,
        timeout_s: float | None = None,
    ) -> R:
        timeout = self._timeout if timeout_s is None else timeout_s
        return await ask(self._broker, service, subject, request, reply_type, timeout)

    async def profiles(self, *, include_disabled: bool) -> ProfilesListReply:
        return await self._ask(
            "profiles",
            Subject.PROFILES_LIST,
            ProfilesListQuery(include_disabled=include_disabled),
            ProfilesListReply,
        )

    async def job(self, job_id: str) -> JobView | None:
        reply = await self._ask("dispatch", Subject.JOBS_GET, JobQuery(job_id=job_id), JobReply)
        return reply.whole_job()

    async def cancel_job(self, job_id: str, user_id: str) -> JobView | None:
        command = CancelJobCommand(job_id=job_id, requested_by=user_id)
        reply = await self._ask("dispatch", Subject.JOBS_CANCEL, command, JobReply)
        return reply.whole_job()

    async def jobs(self, query: JobListQuery) -> list[JobView]:
        reply = await self._ask("dispatch", Subject.JOBS_LIST, query, JobListReply)
        return reply.jobs

    async def media(self, media_id: str) -> MediaReply:
        return await self._ask(
            "media", Subject.MEDIA_GET, MediaQuery(media_id=media_id), MediaReply
        )

    async def media_page(self, query: MediaListQuery) -> MediaListReply:
        return await self._ask("media", Subject.MEDIA_LIST, query, MediaListReply)

    async def project_assignments(self, project: str) -> ProjectAssignmentsReply:
        request = ProjectAssignmentsQuery(project=project)
        return await self._ask("media", Subject.MEDIA_ASSIGNMENTS, request, ProjectAssignmentsReply)

    async def publish_media_assigned(self, event: MediaAssigned) -> None:
        # Returns once JetStream stored it: the 202 promises the choice will be recorded.
        try:
            await publish_event(self._broker, event, Subject.MEDIA_ASSIGNED)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("media.assigned not stored", extra={"media_id": event.media_id})
            raise Unavailable(
                "Your choice could not be saved: the event queue is not answering; try again "
                "shortly."
            ) from exc

    async def context_preview(self, request: ContextPreviewQuery) -> ContextPreviewReply:
        timeout = max(self._timeout, CONTEXT_PREVIEW_TIMEOUT_S)
        return await self._ask(
            "context", Subject.CONTEXT_PREVIEW, request, ContextPreviewReply, timeout_s=timeout
        )

    async def input_slots(self, request: InputSlotsRequest) -> InputSlotsReply:
        """Presigned PUT URLs for a request's inputs (ADR 0017), from the context service."""
        return await self._ask("context", Subject.CONTEXT_INPUT_SLOTS, request, InputSlotsReply)

    async def project_style(self, project: str) -> ProjectStyle:
        reply = await self._ask(
            "context", Subject.CONTEXT_STYLE_GET, StyleQuery(project=project), StyleReply
        )
        return reply.style

    async def put_project_style(self, command: StylePutCommand) -> ProjectStyle:
        reply = await self._ask("context", Subject.CONTEXT_STYLE_PUT, command, StylePutReply)
        if reply.error is not None:
            raise reply.error.to_error()
        if reply.style is None:
            raise not_answering("context")
        return reply.style

    async def estimate_quota(self, request: QuotaEstimateRequest) -> QuotaEstimateReply:
        return await self._ask("profiles", Subject.QUOTA_ESTIMATE, request, QuotaEstimateReply)

    async def reserve_quota(self, request: QuotaReserveRequest) -> QuotaReserveReply:
        # No answer means no reservation, and no job is accepted without one (503).
        return await self._reservations.reserve(request)

    async def release_quota(self, job_id: str) -> bool:
        request = QuotaReleaseRequest(job_id=job_id)
        reply = await self._ask("profiles", Subject.QUOTA_RELEASE, request, QuotaReleaseReply)
        return reply.released

    async def publish_job_requested(self, event: JobRequested) -> None:
        # Returns once JetStream stored the event: the 202 promises the job will not be lost.
        try:
            await publish_event(self._broker, event, Subject.JOBS_REQUESTED)
        except nats.errors.MaxPayloadError as exc:
            # Retrying cannot help. With pictures and large contexts staged (ADR 0017) a valid
            # request stays far below NATS's default 1 MB: this means a server configured
            # smaller than that. Still a clear 413, never a 503 to retry (issue 15, item 4).
            raise self._too_large_for_the_queue(event) from exc
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("jobs.requested not stored", extra={"job_id": event.job_id})
            raise Unavailable("The job queue is not answering; try again shortly.") from exc

    def _too_large_for_the_queue(self, event: JobRequested) -> RequestTooLarge:
        size = len(event.model_dump_json())
        try:
            limit = f"at most {self._broker.connection.max_payload:,} bytes"
        except Exception:  # not connected (any more): the limit is the server's
            limit = "less"
        log.warning("jobs.requested over max_payload", extra={"job_id": event.job_id})
        return RequestTooLarge(
            f"This request is {size:,} bytes once queued; the job queue takes {limit} per job "
            "(the NATS server's max_payload, 1 MB by default, which every valid request fits: "
            "pictures and large contexts travel by reference). Ask the operator to check it."
        )

    async def subscribe_status(self, subject: str) -> NatsStatusSubscription:
        # The broker's own connection: one connection per process, and it reconnects by itself
        # (subscriptions are restored after a reconnect).
        connection = self._broker.connection
        try:
            subscription = await connection.subscribe(subject)
            # SUB is sent asynchronously; until the server has it, an event published now would
            # not reach us. The round trip makes "subscribe, then read the state" hold.
            await connection.flush(timeout=math.ceil(self._timeout))
        except NOT_ANSWERING as exc:
            raise Unavailable("Job status updates are not available; try again shortly.") from exc
        return NatsStatusSubscription(subscription)

    async def replay_status(
        self, subject: str, *, since: datetime | None = None
    ) -> JetStreamStatusFeed:
        """The status events stored on `subject` (all of them, or from `since`), then live ones.

        One ordered consumer (ephemeral, in memory, no acks) does both, so nothing falls between
        the stored and the live events; nats-py recreates it from the next sequence when it
        misses a heartbeat (a NATS reconnect), and the server drops it once we unsubscribe.
        """
        js = self._broker.connection.jetstream(timeout=self._timeout)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME if since else DeliverPolicy.ALL,
            opt_start_time=since,
        )
        try:
            subscription = await js.subscribe(
                subject, stream=STATUS_STREAM.name, ordered_consumer=True, config=config
            )
        except NOT_ANSWERING as exc:
            raise Unavailable("Job status updates are not available; try again shortly.") from exc
        try:
            info = await subscription.consumer_info()
        except NOT_ANSWERING as exc:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
            raise Unavailable("Job status updates are not available; try again shortly.") from exc
        # Nothing delivered and nothing pending: no event was stored before we asked.
        delivered = info.delivered.consumer_seq if info.delivered else 0
        empty = not info.num_pending and not delivered
        return JetStreamStatusFeed(subscription, created=info.created, caught_up=empty)


class NatsStatusSubscription:
    """`JobStatusChanged` events of one core NATS subscription, as `StatusUpdate`s."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription
        self._open = True
        STATUS_SUBSCRIPTIONS_OPEN.inc()

    async def next_update(self, wait_s: float) -> StatusUpdate | None:
        while True:
            try:
                msg = await self._subscription.next_msg(timeout=wait_s)
            except nats.errors.TimeoutError:
                return None
            except nats.errors.Error as exc:  # connection closed: the app is stopping
                raise FeedClosed from exc
            self._received(msg)
            try:
                event = JobStatusChanged.model_validate_json(msg.data)
            except ValidationError:
                log.warning("ignored a malformed status event", extra={"subject": msg.subject})
                continue
            return StatusUpdate(event.job, str(event.event_id))

    def _received(self, msg: Msg) -> None:
        """Hook for every message taken from the subscription, before it is parsed."""

    async def close(self) -> None:
        # Called from both the stream's end and the response's background task: once is enough.
        if self._open:
            self._open = False
            STATUS_SUBSCRIPTIONS_OPEN.dec()
        with contextlib.suppress(nats.errors.Error):
            await self._subscription.unsubscribe()


class JetStreamStatusFeed(NatsStatusSubscription):
    """`NatsStatusSubscription` over an ordered JetStream consumer, which also knows when the
    events stored before it was made have all been handed out (`caught_up`)."""

    def __init__(self, subscription: Subscription, *, created: datetime, caught_up: bool) -> None:
        super().__init__(subscription)
        self._created = created
        self._caught_up = caught_up

    @property
    def caught_up(self) -> bool:
        return self._caught_up

    def _received(self, msg: Msg) -> None:
        if self._caught_up:
            return
        try:
            metadata = msg.metadata
        except Exception:  # not a JetStream message: nothing to learn from it
            return
        # The last stored event says nothing is pending after it; an event stored after the
        # consumer was made is live, whatever is still pending (a busy project).
        if metadata.num_pending == 0 or metadata.timestamp > self._created:
            self._caught_up = True


class MediaFetcher:
    """Fetches image bytes from presigned URLs with one pooled client per process."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self._transport = transport  # tests pass an httpx.MockTransport
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        # Presigned URLs point straight at the object; a redirect would be a surprise.
        self._client = httpx.AsyncClient(
            timeout=self._timeout, follow_redirects=False, transport=self._transport
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def open(self, url: str) -> httpx.Response:
        """A streaming response whose body the caller reads and then closes."""
        if self._client is None:
            raise RuntimeError("MediaFetcher.start() was not called (app lifespan not run?)")
        try:
            response = await self._client.send(self._client.build_request("GET", url), stream=True)
        except httpx.HTTPError as exc:
            log.warning("media store unreachable", extra={"error": type(exc).__name__})
            raise Unavailable("The media store is not answering; try again shortly.") from exc
        if response.is_success:
            return response
        await response.aclose()
        if response.status_code == 404:
            raise NotFound("The image's bytes are missing from storage.")
        log.warning("media store refused", extra={"status": response.status_code})
        raise AtelierError(
            "The media store refused to hand out this image; try again shortly.",
            code="storage_error",
            status_code=502,
        )

    async def upload(
        self, url: str, body: AsyncIterator[bytes], size: int, content_type: str
    ) -> None:
        """PUT `size` bytes to a presigned URL media handed out (the gateway holds no storage
        credentials, ADR 0004). A declared length: S3 refuses chunked uploads it cannot sign."""
        if self._client is None:
            raise RuntimeError("MediaFetcher.start() was not called (app lifespan not run?)")
        headers = {"Content-Length": str(size), "Content-Type": content_type}
        try:
            response = await self._client.put(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("media store unreachable", extra={"error": type(exc).__name__})
            raise Unavailable("The media store is not answering; try again shortly.") from exc
        if not response.is_success:
            log.warning("media store refused an upload", extra={"status": response.status_code})
            raise AtelierError(
                "The media store refused the upload; try again shortly.",
                code="storage_error",
                status_code=502,
            )

    async def put_bytes(self, url: str, data: bytes, content_type: str) -> None:
        """PUT a request's staged input to a presigned URL context handed out (ADR 0017)."""

        async def body() -> AsyncIterator[bytes]:
            yield data

        await self.upload(url, body(), len(data), content_type)

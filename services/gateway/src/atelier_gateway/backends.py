"""The gateway's way to the rest of Atelier; it plays the part `repository.py` plays elsewhere.

The gateway owns no data. Reads are core NATS request/reply to the service that owns the data
(profiles, dispatch, media), a new job is one durable `jobs.requested` event, status streams are
core NATS subscriptions to the status subjects (an ordered JetStream consumer when a client
resumes with `Last-Event-ID`), and image bytes come over HTTP from the presigned URLs the media
service hands out. A service that does not answer becomes a 503 with a message
naming it, never a hanging request or a stack trace.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Protocol, TypeVar, runtime_checkable

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
    ProfilesChanged,
    ProfilesListQuery,
    ProfilesListReply,
    QuotaReleaseReply,
    QuotaReleaseRequest,
    QuotaReserveReply,
    QuotaReserveRequest,
)
from atelier_contracts.subjects import STATUS_STREAM, Subject
from atelier_gateway.service import FeedClosed, RequestTooLarge, StatusUpdate
from atelier_messaging import publish_event, query

log = logging.getLogger("atelier.gateway.backends")

R = TypeVar("R", bound=BaseModel)

# What "nobody answered" looks like: a timeout, no responders (or no connection) from nats-py,
# and, on FastStream's in-memory test broker, no subscriber.
_NOT_ANSWERING = (TimeoutError, nats.errors.Error, SubscriberNotFound)


def not_answering(service: str) -> Unavailable:
    return Unavailable(f"The {service} service is not answering; try again shortly.")


# A preview may fetch reference images (the context service gives them 30 s in all), so it is
# waited for longer than a plain lookup.
CONTEXT_PREVIEW_TIMEOUT_S = 35.0


@runtime_checkable
class ContextPreviewer(Protocol):
    async def context_preview(self, query: ContextPreviewQuery) -> ContextPreviewReply: ...


class NatsBackends:
    def __init__(self, broker: NatsBroker, *, query_timeout_s: float = 3.0) -> None:
        self._broker = broker
        self._timeout = query_timeout_s

    async def _ask(
        self, service: str, subject: Subject, request: BaseModel, reply_type: type[R]
    ) -> R:
        try:
            return await query(self._broker, subject, request, reply_type, self._timeout)
        except _NOT_ANSWERING as exc:
            log.warning(
                "query not answered",
                extra={"subject": str(subject), "error": type(exc).__name__},
            )
            raise not_answering(service) from exc

    async def profiles(self, *, include_disabled: bool) -> ProfilesListReply:
        return await self._ask(
            "profiles",
            Subject.PROFILES_LIST,
            ProfilesListQuery(include_disabled=include_disabled),
            ProfilesListReply,
        )

    async def job(self, job_id: str) -> JobView | None:
        reply = await self._ask("dispatch", Subject.JOBS_GET, JobQuery(job_id=job_id), JobReply)
        return reply.job

    async def cancel_job(self, job_id: str, user_id: str) -> JobView | None:
        command = CancelJobCommand(job_id=job_id, requested_by=user_id)
        reply = await self._ask("dispatch", Subject.JOBS_CANCEL, command, JobReply)
        return reply.job

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
        try:
            return await query(
                self._broker, Subject.CONTEXT_PREVIEW, request, ContextPreviewReply, timeout
            )
        except _NOT_ANSWERING as exc:
            log.warning("context preview not answered", extra={"error": type(exc).__name__})
            raise not_answering("context") from exc

    async def reserve_quota(self, request: QuotaReserveRequest) -> QuotaReserveReply:
        # No answer means no reservation, and no job is accepted without one (503).
        return await self._ask("profiles", Subject.QUOTA_RESERVE, request, QuotaReserveReply)

    async def release_quota(self, job_id: str) -> bool:
        request = QuotaReleaseRequest(job_id=job_id)
        reply = await self._ask("profiles", Subject.QUOTA_RELEASE, request, QuotaReleaseReply)
        return reply.released

    async def publish_job_requested(self, event: JobRequested) -> None:
        # Returns once JetStream stored the event: the 202 promises the job will not be lost.
        try:
            await publish_event(self._broker, event, Subject.JOBS_REQUESTED)
        except nats.errors.MaxPayloadError as exc:
            # Retrying cannot help: the request is too large for the queue (issue 15, item 4).
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
            "(the NATS server's max_payload). Send fewer or smaller pictures: library images "
            "travel by media_id."
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
        except _NOT_ANSWERING as exc:
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
        except _NOT_ANSWERING as exc:
            raise Unavailable("Job status updates are not available; try again shortly.") from exc
        try:
            info = await subscription.consumer_info()
        except _NOT_ANSWERING as exc:
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


def register_profile_invalidation(broker: NatsBroker, forget: Callable[[], None]) -> None:
    """Drop cached profiles as soon as profiles announces a change.

    A core NATS subscription without a queue group: every gateway replica must hear it.
    `no_reply`: `profiles.changed` is published to JetStream, and its reply subject is the
    publisher's ack inbox, which must get JetStream's ack and nothing from us.
    """

    @broker.subscriber(Subject.PROFILES_CHANGED, no_reply=True)
    async def forget_cached_profiles(event: ProfilesChanged) -> None:
        forget()

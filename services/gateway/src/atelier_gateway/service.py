"""What the gateway decides: access, idempotency, quota, and which status streams to open.

The request's checks are in `validation` (and `fallbacks`), its id and event in `job_requests`,
the order of status events in `streams`. No broker and no HTTP here: the services the gateway
asks (profiles, dispatch, media) and the status events it follows come in through the `Backends`
protocol, so all of this is tested with plain fakes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, runtime_checkable

from atelier_contracts.errors import AtelierError, Forbidden, InvalidInput, NotFound, Unavailable
from atelier_contracts.jobs import (
    FINAL_STATUSES,
    ContextPreviewQuery,
    ContextPreviewReply,
    JobListQuery,
    JobRequested,
    JobStatus,
    JobView,
)
from atelier_contracts.media import MediaItem, MediaListQuery, MediaListReply, MediaReply
from atelier_contracts.profiles import (
    ProfilesListReply,
    QuotaEstimateReply,
    QuotaEstimateRequest,
    QuotaReserveReply,
    QuotaReserveRequest,
)
from atelier_contracts.style import ProjectStyle, StylePutCommand
from atelier_contracts.subjects import job_feed, job_feed_by_id, project_feed
from atelier_gateway.auth import User
from atelier_gateway.fallbacks import plan_fallbacks
from atelier_gateway.job_requests import (
    JOB_ID_RE,
    JobIds,
    accepted,
    build_job_requested,
    resolved_fields,
    same_request,
)
from atelier_gateway.models import (
    FeatureProfile,
    Features,
    GenerationAccepted,
    GenerationEstimate,
    GenerationRequestBody,
    StyleBody,
    shown_fields,
)
from atelier_gateway.staging import InputStager
from atelier_gateway.streams import (
    JobStream,
    ReplayingSubscription,
    StatusSubscription,
    follow_job,
    follow_project,
    resumable_event_id,
    skip_past,
)
from atelier_gateway.validation import RequestLimits, ResolvedRequest, validate_generation

log = logging.getLogger("atelier.gateway.service")


def features_of(catalog: ProfilesListReply) -> Features:
    profiles = sorted(
        (p for p in catalog.profiles if p.enabled), key=lambda p: (p.sort_order, p.name.lower())
    )
    return Features(
        enabled=catalog.settings.enabled,
        reason=None if catalog.settings.enabled else catalog.settings.reason,
        profiles=[FeatureProfile.of(p) for p in profiles],
    )


class Backends(Protocol):
    """The gateway's way to the other services (NATS request/reply and events)."""

    async def profiles(self, *, include_disabled: bool) -> ProfilesListReply: ...
    async def job(self, job_id: str) -> JobView | None: ...
    async def jobs(self, query: JobListQuery) -> list[JobView]: ...
    async def media(self, media_id: str) -> MediaReply: ...
    async def media_page(self, query: MediaListQuery) -> MediaListReply: ...
    async def publish_job_requested(self, event: JobRequested) -> None: ...
    async def reserve_quota(self, request: QuotaReserveRequest) -> QuotaReserveReply: ...
    async def release_quota(self, job_id: str) -> bool: ...
    async def cancel_job(self, job_id: str, user_id: str) -> JobView | None: ...
    async def subscribe_status(self, subject: str) -> StatusSubscription: ...
    async def replay_status(
        self, subject: str, *, since: datetime | None
    ) -> ReplayingSubscription: ...


@runtime_checkable
class StyleKeeper(Protocol):
    """The project style's owner (context, ADR 0024)."""

    async def project_style(self, project: str) -> ProjectStyle: ...
    async def put_project_style(self, command: StylePutCommand) -> ProjectStyle: ...


@runtime_checkable
class Estimator(Protocol):
    """What a reservation would hold (profiles, ADR 0024)."""

    async def estimate_quota(self, request: QuotaEstimateRequest) -> QuotaEstimateReply: ...


@runtime_checkable
class ContextPreviewer(Protocol):
    """What a request would send (context)."""

    async def context_preview(self, query: ContextPreviewQuery) -> ContextPreviewReply: ...


@dataclass(frozen=True)
class Submission:
    response: GenerationAccepted
    created: bool  # False: an Idempotency-Key retry answered with the job it made before


def _not_found(what: str, ident: str) -> NotFound:
    # The same answer for "does not exist" and "not yours": a user learns nothing about
    # projects they are not granted.
    return NotFound(f"There is no {what} {ident!r}.")


class QuotaRefused(AtelierError):
    """429: the user's credits for the period are spent, they submit too fast, or their jobs in
    flight already hold as much of the shared queues as one user may.

    `reply` carries what the answer shows (remaining credits and reset time, or when to retry).
    """

    status_code = 429

    def __init__(self, reply: QuotaReserveReply) -> None:
        super().__init__(reply.message, code=reply.outcome)
        self.reply = reply


class GatewayService:
    def __init__(
        self,
        backends: Backends,
        *,
        job_lookup_grace_s: float = 2.0,
        resync_s: float = 30.0,
        replay_window_s: float = 3600.0,
        replay_wait_s: float = 5.0,
        profile_cache_s: float = 1.0,
        limits: RequestLimits | None = None,
        job_ids: JobIds | None = None,
        stager: InputStager | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.backends = backends
        self.job_lookup_grace_s = job_lookup_grace_s
        self.resync_s = resync_s
        self.replay_window_s = replay_window_s
        self.replay_wait_s = replay_wait_s
        self.profile_cache_s = profile_cache_s
        self.limits = limits or RequestLimits()
        # Without one (tests of other parts), pictures stay inline in the event.
        self.stager = stager
        # Without one (tests), a secret of this process: ids are still unguessable.
        self.job_ids = job_ids or JobIds(secrets.token_hex(32))
        self._clock = clock
        self._sleep = sleep
        self._catalog: tuple[float, ProfilesListReply] | None = None
        self._catalog_generation = 0
        self._catalog_pending: asyncio.Future[ProfilesListReply] | None = None

    async def catalog(self) -> ProfilesListReply:
        """The switch and every profile (disabled ones too), reused for `profile_cache_s`.

        `forget_profiles` (on `profiles.changed`) drops it at once, so an admin's change shows
        within the cache time even if that event is missed.
        """
        cached = self._catalog
        if cached is not None and self._clock() - cached[0] < self.profile_cache_s:
            return cached[1]
        # One question at a time: a burst of submissions arriving as the cache expires shares
        # the answer instead of asking profiles once each (512 at once made it time out).
        pending = self._catalog_pending
        if pending is None or pending.done():
            pending = self._catalog_pending = asyncio.ensure_future(self._fetch_catalog())
        return await asyncio.shield(pending)

    async def _fetch_catalog(self) -> ProfilesListReply:
        generation = self._catalog_generation
        fetched_at = self._clock()
        catalog = await self.backends.profiles(include_disabled=True)
        if generation == self._catalog_generation:  # no change announced while we asked
            self._catalog = (fetched_at, catalog)
        return catalog

    def forget_profiles(self) -> None:
        self._catalog = None
        self._catalog_pending = None  # a question asked before the change is not reused
        self._catalog_generation += 1

    async def features(self) -> Features:
        return features_of(await self.catalog())

    async def _reserve_credits(self, event: JobRequested) -> QuotaReserveReply:
        """Hold the job's credits before it is queued; 429 when the user may not submit it.
        The reply says `repeated` when the job held them already (a keyed retry)."""
        reply = await self.backends.reserve_quota(
            QuotaReserveRequest(
                job_id=event.job_id,
                user_id=event.user_id,
                project=event.project,
                profile_id=event.profile.id,
                count=event.count,
                # What the job weighs in the shared queues while it runs: bounded per user.
                payload_bytes=len(event.model_dump_json()),
            )
        )
        if reply.outcome != "reserved":
            raise QuotaRefused(reply)
        return reply

    async def submit(
        self, request: GenerationRequestBody, user: User, idempotency_key: str | None
    ) -> Submission:
        """Validate, reserve, then publish `jobs.requested`; nothing is published for a bad
        request.

        A keyed retry is known by its reservation (profiles holds one per job id, and the id
        comes from the key), so a first submission asks dispatch nothing; a retry, or a keyed
        request that fails validation, looks up the job its key made.
        """
        self._require_grant(user, request.project)
        job_id = self.job_ids.new(user.id, idempotency_key)
        try:
            # One query gives the switch and the profile, disabled ones included, so an unknown
            # profile and a disabled one get different answers.
            catalog = await self.catalog()
            resolved = self._validated(request, catalog)
        except AtelierError:
            # A retry gets the job it made even if the profile was disabled in between.
            if idempotency_key is not None:
                existing = await self._recorded_job(job_id)
                if existing is not None:
                    return self._made_before(existing, request)
            raise
        event = build_job_requested(
            resolved,
            request,
            job_id=job_id,
            user_id=user.id,
            idempotency_key=idempotency_key,
            fallbacks=plan_fallbacks(resolved, catalog.profiles),
        )
        reservation = await self._reserve_credits(event)
        if reservation.repeated:
            existing = await self._recorded_job(job_id)
            if existing is not None:
                return self._made_before(existing, request)
            # Reserved before and perhaps published, not recorded yet (or dispatch is away):
            # publishing again is safe, the same job id gives the same event id, which
            # JetStream and dispatch both take once.
        # Everything after the reservation either queues the job or gives the credits back:
        # a failure of any kind (staging the pictures, a payload over the queue's limit, an
        # event that cannot be serialized, a bug) must never keep what the user was charged for
        # a job that does not exist (issue 15).
        try:
            # Pictures and a large context go by reference (ADR 0017): nothing was queued yet.
            if self.stager is not None:
                event = await self.stager.stage_job(event)
        except Exception:
            await self._release_credits(job_id)
            raise
        try:
            await self.backends.publish_job_requested(event)
        except Exception as exc:
            # One exception: the queue did not answer in time for a keyed request. Its first
            # publish may have been stored after all, and its retry (same job id) reuses the
            # reservation; profiles settles it when the job ends.
            if not (isinstance(exc, Unavailable) and idempotency_key is not None):
                await self._release_credits(job_id)
            raise
        return Submission(accepted(job_id, request.project, JobStatus.QUEUED), True)

    @staticmethod
    def _made_before(existing: JobView, request: GenerationRequestBody) -> Submission:
        """A keyed retry's answer: the job its key made, if this is the same request."""
        if not same_request(existing, request):
            raise InvalidInput(
                "This Idempotency-Key was already used for a different request; use a new key "
                "for a new generation.",
                code="idempotency_key_reused",
            )
        return Submission(accepted(existing.id, existing.project, existing.status), False)

    async def estimate(self, request: GenerationRequestBody, user: User) -> GenerationEstimate:
        """What submitting `request` would reserve now, reserving nothing (ADR 0024): validated
        exactly as a submission, priced by profiles with the reservation's own terms."""
        self._require_grant(user, request.project)
        catalog = await self.catalog()
        resolved = self._validated(request, catalog)
        if not isinstance(self.backends, Estimator):
            raise Unavailable("The profiles service is not answering; try again shortly.")
        reply = await self.backends.estimate_quota(
            QuotaEstimateRequest(
                user_id=user.id, profile_id=resolved.profile.id, count=resolved.count
            )
        )
        return GenerationEstimate(
            profile_id=resolved.profile.id,
            count=resolved.count,
            **shown_fields(GenerationEstimate, reply),
        )

    async def preview(self, request: GenerationRequestBody, user: User) -> ContextPreviewReply:
        """What a generation of `request` would send, validated as one; nothing is queued or
        charged, and pictures staged for it are deleted by context once it answered."""
        self._require_grant(user, request.project)  # as for submitting: the user named it
        # Asked afresh (not through `catalog()`'s cache), as the preview route always has.
        catalog = await self.backends.profiles(include_disabled=True)
        resolved = self._validated(request, catalog)
        previewer = self.backends
        if not isinstance(previewer, ContextPreviewer):
            raise Unavailable("The context service is not answering; try again shortly.")
        query = ContextPreviewQuery(
            user_id=user.id, project=request.project, **resolved_fields(resolved, request)
        )
        if self.stager is not None:
            # Pictures by reference here too (ADR 0017), under a preview's own prefix.
            query = await self.stager.stage_preview(query)
        return await previewer.context_preview(query)

    def _validated(
        self, request: GenerationRequestBody, catalog: ProfilesListReply
    ) -> ResolvedRequest:
        profile = next((p for p in catalog.profiles if p.id == request.profile_id), None)
        return validate_generation(request, profile, catalog.settings, self.limits)

    def _style_keeper(self) -> StyleKeeper:
        if not isinstance(self.backends, StyleKeeper):
            raise Unavailable("The context service is not answering; try again shortly.")
        return self.backends

    async def project_style(self, user: User, project: str) -> ProjectStyle:
        self._require_visible(user, project)
        return await self._style_keeper().project_style(project)

    async def put_project_style(self, user: User, project: str, body: StyleBody) -> ProjectStyle:
        self._require_grant(user, project)
        return await self._style_keeper().put_project_style(
            StylePutCommand(
                project=project,
                text=body.text,
                reference_media_ids=body.reference_media_ids,
                expected_version=body.version,
                user_id=user.id,
            )
        )

    async def _release_credits(self, job_id: str) -> None:
        try:
            await self.backends.release_quota(job_id)
        except Exception:
            # The original error is what the user must see; the reservation stays held until
            # an admin releases it, so say so where operators look.
            log.exception("could not release the reservation", extra={"job_id": job_id})

    async def _recorded_job(self, job_id: str) -> JobView | None:
        try:
            return await self.backends.job(job_id)
        except Unavailable:
            # Without dispatch we cannot tell; publishing again is safe (same job id, same event
            # id, deduplicated by JetStream and by dispatch), refusing the request is not needed.
            return None

    async def job(self, user: User, job_id: str) -> JobView:
        job = await self._find_job(job_id, user)
        if job is None or not user.is_granted(job.project):
            raise _not_found("generation", job_id)
        return job

    async def cancel(self, user: User, job_id: str) -> JobView:
        """Cancel a job of a granted project; a job already finished is returned as it is."""
        job = await self.job(user, job_id)
        if job.status in FINAL_STATUSES:
            return job
        cancelled = await self.backends.cancel_job(job_id, user.id)
        if cancelled is None:
            raise _not_found("generation", job_id)
        return cancelled

    async def _find_job(self, job_id: str, user: User) -> JobView | None:
        """The job, asking again for a short while if this user may just have made it: dispatch
        records it just after our 202.

        Only ids this gateway made for this user get that grace (`JobIds.made_for`). Anyone
        else's id, existing or not, is asked for once: "not yours" and "does not exist" take the
        same path and the same time, where a grace for every missing id made a 2 s 404 tell an
        existing job of someone else (4 ms) from a made-up one (issue 15, item 6). It also keeps
        made-up ids from costing dispatch more than one query each.
        """
        if not JOB_ID_RE.match(job_id):
            return None
        if not self.job_ids.made_for(user.id, job_id):
            return await self.backends.job(job_id)
        deadline = self._clock() + self.job_lookup_grace_s
        delay = 0.05
        while True:
            job = await self.backends.job(job_id)
            remaining = deadline - self._clock()
            if job is not None or remaining <= 0:
                return job
            await self._sleep(min(delay, remaining))
            delay = min(delay * 2, 0.5)

    async def jobs(self, user: User, project: str, *, active_only: bool) -> list[JobView]:
        self._require_visible(user, project)
        jobs = await self.backends.jobs(JobListQuery(project=project, active_only=active_only))
        return [job for job in jobs if job.project == project]

    async def media(self, user: User, media_id: str) -> MediaReply:
        reply = await self.backends.media(media_id)
        if reply.media is None or not user.is_granted(reply.media.project):
            raise _not_found("media", media_id)
        return reply

    async def media_source(
        self, user: User, media_id: str, variant: Literal["content", "thumbnail"]
    ) -> tuple[MediaItem, str]:
        """The item and the presigned URL its bytes are fetched from."""
        reply = await self.media(user, media_id)
        assert reply.media is not None  # media() raised otherwise
        url = reply.content_url if variant == "content" else reply.thumbnail_url
        if not url:
            raise Unavailable("The media service gave no address for this image; try again.")
        return reply.media, url

    async def media_page(
        self, user: User, project: str, *, limit: int, offset: int
    ) -> MediaListReply:
        self._require_visible(user, project)
        page = await self.backends.media_page(
            MediaListQuery(project=project, limit=limit, offset=offset)
        )
        return MediaListReply(
            items=[item for item in page.items if item.project == project], total=page.total
        )

    async def open_job_stream(
        self, user: User, job_id: str, last_event_id: str | None = None
    ) -> JobStream:
        """Subscribe to the job's events, then read its state: in that order nothing is missed.

        The subscription names the job by its id alone (`job_feed_by_id`), so one read of the
        job, after subscribing, gives both the access check (404 before any stream starts) and
        the state the stream begins with: one question to dispatch per stream, where reading
        the job for its project first took two. With a `Last-Event-ID`, the stored events after
        it are sent instead (`_resume_job_stream`).
        """
        resume_after = resumable_event_id(last_event_id)
        if resume_after is not None:
            return await self._resume_job_stream(await self.job(user, job_id), resume_after)
        if not JOB_ID_RE.match(job_id):  # it becomes a subject token
            raise _not_found("generation", job_id)
        subscription = await self.backends.subscribe_status(job_feed_by_id(job_id))
        try:
            current = await self.job(user, job_id)
        except BaseException:
            await subscription.close()
            raise

        async def refresh() -> JobView | None:
            return await self.backends.job(job_id)

        updates = follow_job(current, subscription, refresh=refresh, quiet_s=self.resync_s)
        return JobStream(updates, subscription)

    async def _resume_job_stream(self, known: JobView, resume_after: str) -> JobStream:
        """Every stored event of the job after `resume_after`, then live ones, from one ordered
        consumer over the whole (24 h) status stream; a job has a handful of events."""
        feed = await self.backends.replay_status(job_feed(known.project, known.id), since=None)

        async def refresh() -> JobView | None:
            return await self.backends.job(known.id)

        try:
            resumed = await skip_past(resume_after, feed, wait_s=self.replay_wait_s)
            if resumed is None:  # not stored (any more): the current state first, as if new
                current = await refresh() or known
        except BaseException:
            await feed.close()
            raise
        if resumed is None:
            updates = follow_job(current, feed, refresh=refresh, quiet_s=self.resync_s)
            return JobStream(updates, feed)
        updates = follow_job(
            resumed.job, feed, refresh=refresh, quiet_s=self.resync_s, send_first=False
        )
        return JobStream(updates, feed, already_final=resumed.job.status in FINAL_STATUSES)

    async def open_project_stream(
        self, user: User, project: str, last_event_id: str | None = None
    ) -> JobStream:
        self._require_visible(user, project)
        resume_after = resumable_event_id(last_event_id)
        if resume_after is not None:
            return await self._resume_project_stream(user, project, resume_after)
        subscription = await self.backends.subscribe_status(project_feed(project))
        try:
            active = await self.jobs(user, project, active_only=True)
        except BaseException:
            await subscription.close()
            raise
        updates = follow_project(project, active, subscription, quiet_s=self.resync_s)
        return JobStream(updates, subscription)

    async def _resume_project_stream(
        self, user: User, project: str, resume_after: str
    ) -> JobStream:
        """As `_resume_job_stream`, over the project's events of the last `replay_window_s`
        (a busy project has many); an id older than that gets the active jobs first."""
        since = datetime.now(UTC) - timedelta(seconds=self.replay_window_s)
        feed = await self.backends.replay_status(project_feed(project), since=since)
        try:
            resumed = await skip_past(resume_after, feed, wait_s=self.replay_wait_s)
            if resumed is None:
                active = await self.jobs(user, project, active_only=True)
        except BaseException:
            await feed.close()
            raise
        if resumed is None:
            updates = follow_project(project, active, feed, quiet_s=self.resync_s)
        else:
            updates = follow_project(project, [], feed, quiet_s=self.resync_s, seen=[resumed.job])
        return JobStream(updates, feed)

    @staticmethod
    def _require_grant(user: User, project: str) -> None:
        """For actions: say plainly that the project is not theirs."""
        if not user.is_granted(project):
            raise Forbidden(
                f"Your account has no access to project {project!r}.", code="project_not_granted"
            )

    @staticmethod
    def _require_visible(user: User, project: str) -> None:
        """For reads: a project not granted looks like one that does not exist."""
        if not user.is_granted(project):
            raise _not_found("project", project)


class RequestTooLarge(AtelierError):
    """413: the request is larger than the gateway or the job queue takes; it can never succeed
    as it is, so it is not a 503 to retry."""

    status_code = 413
    code = "request_too_large"

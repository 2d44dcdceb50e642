"""What the gateway decides: validation, access, idempotency, and the order of status events.

No broker and no HTTP here: the services the gateway asks (profiles, dispatch, media) and the
status events it follows come in through the `Backends` protocol, so all of this is tested with
plain fakes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol
from uuid import UUID, uuid4, uuid5

from atelier_contracts.errors import AtelierError, Forbidden, InvalidInput, NotFound, Unavailable
from atelier_contracts.jobs import (
    FINAL_STATUSES,
    JobListQuery,
    JobRequested,
    JobStatus,
    JobView,
    Target,
)
from atelier_contracts.media import MediaItem, MediaListQuery, MediaListReply, MediaReply
from atelier_contracts.profiles import (
    GenerationSettings,
    OptionSpec,
    Profile,
    ProfilesListReply,
    ProfileSnapshot,
    QuotaReserveReply,
    QuotaReserveRequest,
)
from atelier_contracts.subjects import job_status, job_status_of_project
from atelier_gateway.auth import User
from atelier_gateway.models import (
    FeatureProfile,
    Features,
    GenerationAccepted,
    GenerationRequestBody,
    Links,
    generation_events_url,
    generation_url,
)

log = logging.getLogger("atelier.gateway.service")

IDEMPOTENCY_KEY_MAX_LENGTH = 200

# Job ids end up as a NATS subject token: anything else cannot be a job of ours.
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


# --- validation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedRequest:
    """A request that passed validation, with the profile's defaults filled in."""

    profile: Profile
    prompt: str
    size: str
    count: int
    options: dict[str, Any]


def _listing(values: Iterable[object]) -> str:
    items = [str(v) for v in values]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} or {items[-1]}"


@dataclass(frozen=True)
class RequestLimits:
    """Limits on what a request may carry that are settings (`ATELIER_GATEWAY_*`); the fixed
    ones (element count, element data, options) are in `models`."""

    max_data_url_bytes: int = 3 * 1024 * 1024


def data_url_bytes(data_url: str) -> int:
    """The decoded size of a data URL's payload (base64 or percent-encoded), without decoding."""
    header, _, payload = data_url.partition(",")
    if header.lower().endswith(";base64"):
        payload = payload.strip()
        return max(0, len(payload) * 3 // 4 - payload[-2:].count("="))
    return len(payload)


def _pictures(count: int) -> str:
    return f"{count} picture{'' if count == 1 else 's'}"


def check_reference_images(
    request: GenerationRequestBody, profile: Profile, limits: RequestLimits
) -> None:
    """Pictures the request carries (`data_url`) or makes the gateway's services fetch (`url`)
    are limited to what the profile can use, and each one's size; library images (`media_id`)
    travel as an id, and context leaves out those over the profile's maximum, with the reason."""
    carried = 0
    for element in request.context.elements:
        image = element.image
        if image is None:
            continue
        if image.data_url:
            size = data_url_bytes(image.data_url)
            if size > limits.max_data_url_bytes:
                raise InvalidInput(
                    f"The picture of element {element.id!r} is {size:,} bytes; a picture sent "
                    f"in the request may be at most {limits.max_data_url_bytes:,} bytes "
                    "(ATELIER_GATEWAY_MAX_DATA_URL_BYTES). Add it to the media library and send "
                    "its media_id instead.",
                    code="reference_image_too_large",
                )
        if element.send.image and (image.data_url or image.url):
            carried += 1
    limit = profile.max_reference_images
    if carried > limit:
        takes = (
            "takes no reference images"
            if limit == 0
            else f"takes at most {_pictures(limit)} as reference (its max_reference_images)"
        )
        raise InvalidInput(
            f"{profile.name!r} {takes}, and this request sends {_pictures(carried)} by data_url "
            "or url; turn off sending the image of the others.",
            code="too_many_reference_images",
        )


def validate_generation(
    request: GenerationRequestBody,
    profile: Profile | None,
    settings: GenerationSettings,
    limits: RequestLimits | None = None,
) -> ResolvedRequest:
    """Check a request against the global switch and its profile; first problem wins.

    Messages name the allowed values, so the dialog can show them as they are.
    """
    if not settings.enabled:
        reason = settings.reason or "an admin has paused it."
        raise Forbidden(f"Image generation is turned off: {reason}", code="generation_disabled")
    if profile is None:
        raise InvalidInput(
            f"There is no profile {request.profile_id!r}; GET /v1/features lists the ones "
            "available.",
            code="unknown_profile",
        )
    if not profile.enabled:
        raise InvalidInput(
            f"The profile {profile.name!r} is disabled; choose another one.",
            code="profile_disabled",
        )
    if not request.prompt.strip():
        raise InvalidInput("The prompt is empty; describe the image to make.", code="empty_prompt")
    if len(request.prompt) > profile.prompt_max_length:
        raise InvalidInput(
            f"The prompt is {len(request.prompt)} characters long; {profile.name!r} takes at "
            f"most {profile.prompt_max_length}.",
            code="prompt_too_long",
        )

    size = profile.default_size if request.size is None else request.size.strip().lower()
    if size not in profile.sizes:
        raise InvalidInput(
            f"{profile.name!r} does not make {request.size!r} images; choose "
            f"{_listing(profile.sizes)}.",
            code="size_not_allowed",
        )
    if request.count not in profile.counts:
        raise InvalidInput(
            f"{profile.name!r} makes {_listing(sorted(profile.counts))} images at a time, "
            f"not {request.count}.",
            code="count_not_allowed",
        )

    options = resolve_options(profile, request.options)
    check_reference_images(request, profile, limits or RequestLimits())
    return ResolvedRequest(
        profile=profile,
        prompt=request.prompt,
        size=size,
        count=request.count,
        options=options,
    )


def resolve_options(profile: Profile, requested: dict[str, Any]) -> dict[str, Any]:
    """The profile's defaults overlaid with the request's values, each checked against its spec.

    A `null` value means "the default", which is what a form sends for an untouched field.
    """
    specs = {spec.name: spec for spec in profile.options}
    resolved = {spec.name: spec.default for spec in profile.options if spec.default is not None}
    for name, value in requested.items():
        spec = specs.get(name)
        if spec is None:
            known = f"it knows {_listing(sorted(specs))}" if specs else "it takes no options"
            raise InvalidInput(
                f"{profile.name!r} has no option {name!r}; {known}.", code="unknown_option"
            )
        if value is None:
            continue
        problem = option_value_problem(spec, value)
        if problem is not None:
            raise InvalidInput(f"Option {name!r} {problem} (got {value!r}).", code="invalid_option")
        resolved[name] = value
    return resolved


def option_value_problem(spec: OptionSpec, value: Any) -> str | None:
    """Why `value` does not fit `spec`, as the end of a sentence; None when it fits."""
    # bool is an int in Python, and JSON `true` must not pass as the number 1.
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if spec.kind == "enum":
        if not isinstance(value, str):
            return "must be a string"
        if spec.values is not None and value not in spec.values:
            return f"must be one of {_listing(spec.values)}"
        return None
    if spec.kind == "string":
        if not isinstance(value, str):
            return "must be a string"
        if spec.max_length is not None and len(value) > spec.max_length:
            return f"must be at most {spec.max_length} characters long"
        return None
    if spec.kind == "boolean":
        return None if isinstance(value, bool) else "must be true or false"
    if spec.kind == "integer" and not is_int:
        return "must be a whole number"
    if spec.kind == "number" and not (
        is_int or (isinstance(value, float) and math.isfinite(value))
    ):
        return "must be a number"
    if spec.minimum is not None and value < spec.minimum:
        return f"must be at least {spec.minimum:g}"
    if spec.maximum is not None and value > spec.maximum:
        return f"must be at most {spec.maximum:g}"
    return None


# --- job ids and events ----------------------------------------------------------------------


class JobIds:
    """Job ids no one can predict, and that tell whether a user could have made them.

    A job id is a UUID (version 8) of two halves: 64 bits that are random, or, for an
    `Idempotency-Key`, an HMAC of the user and the key (the same every time this user sends it,
    unguessable without the secret, unlike the `uuid5` of user and key this replaced); then 62
    bits of an HMAC of the user and the first half. `made_for` checks the second half, so the
    gateway knows an id it made for this user without asking anyone, and waits for dispatch to
    record only those (`GatewayService._find_job`).

    The secret (`ATELIER_GATEWAY_JOB_ID_SECRET`, else the JWT secret) must be the same on every
    gateway replica; changing it gives keyed retries new job ids.
    """

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def _mac(self, *parts: str | bytes) -> bytes:
        message = b"".join(
            f"{len(raw)}:".encode() + raw
            for raw in (p.encode() if isinstance(p, str) else p for p in parts)
        )
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _tag(self, user_id: str, first_half: bytes) -> bytes:
        tag = bytearray(self._mac("owner", user_id, first_half)[:8])
        tag[0] = (tag[0] & 0x3F) | 0x80  # RFC 9562 variant bits
        return bytes(tag)

    def new(self, user_id: str, idempotency_key: str | None) -> str:
        """A fresh id, or, for an `Idempotency-Key`, the same id every time this user sends it.

        The key is scoped to the user: two users choosing the same key get different jobs.
        """
        if idempotency_key is None:
            first = bytearray(secrets.token_bytes(8))
        else:
            if not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
                raise InvalidInput(
                    f"The Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} "
                    "characters long.",
                    code="invalid_idempotency_key",
                )
            first = bytearray(self._mac("idempotency-key", user_id, idempotency_key)[:8])
        first[6] = (first[6] & 0x0F) | 0x80  # version 8: "custom"
        return str(UUID(bytes=bytes(first) + self._tag(user_id, bytes(first))))

    def made_for(self, user_id: str, job_id: str) -> bool:
        """Whether this gateway (any replica) made `job_id` for `user_id`."""
        try:
            raw = UUID(job_id).bytes
        except ValueError:
            return False
        return hmac.compare_digest(raw[8:], self._tag(user_id, raw[:8]))


def request_digest(request: GenerationRequestBody) -> str:
    """SHA-256 of the whole request as sent (canonical JSON; the size as it is matched), so a
    reused `Idempotency-Key` is compared on everything: options, context and target too."""
    shown = request.model_dump(mode="json")
    if request.size is not None:
        shown["size"] = request.size.strip().lower()
    canonical = json.dumps(shown, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_job_requested(
    resolved: ResolvedRequest,
    request: GenerationRequestBody,
    *,
    job_id: str,
    user_id: str,
    idempotency_key: str | None,
) -> JobRequested:
    return JobRequested(
        # For a keyed request, a retry that raced ahead of dispatch recording the job publishes
        # the same event id, which JetStream drops as a duplicate inside its window.
        event_id=uuid5(UUID(job_id), "jobs.requested") if idempotency_key else uuid4(),
        job_id=job_id,
        user_id=user_id,
        project=request.project,
        profile=ProfileSnapshot.of(resolved.profile),
        prompt=resolved.prompt,
        size=resolved.size,
        count=resolved.count,
        options=resolved.options,
        context=request.context,
        target=request.target,
        idempotency_key=idempotency_key,
        request_digest=request_digest(request),
    )


def accepted(job_id: str, project: str, status: JobStatus) -> GenerationAccepted:
    return GenerationAccepted(
        id=job_id,
        status=status,
        project=project,
        links=Links(self=generation_url(job_id), events=generation_events_url(job_id)),
    )


def same_request(job: JobView, request: GenerationRequestBody) -> bool:
    """Whether a recorded job is what this request asks for (an Idempotency-Key reuse check):
    the whole request, by its digest. A job recorded before jobs carried one is compared on
    every field it shows that the request sets as it is (its options are the resolved ones)."""
    if job.project != request.project:
        return False
    if job.request_digest is not None:
        return hmac.compare_digest(job.request_digest, request_digest(request))
    return (
        job.profile_id == request.profile_id
        and job.prompt == request.prompt
        and job.count == request.count
        and (request.size is None or job.size == request.size.strip().lower())
        and job.target.model_dump()
        == Target.model_validate(request.target.model_dump()).model_dump()
    )


def features_of(catalog: ProfilesListReply) -> Features:
    profiles = sorted(
        (p for p in catalog.profiles if p.enabled), key=lambda p: (p.sort_order, p.name.lower())
    )
    return Features(
        enabled=catalog.settings.enabled,
        reason=None if catalog.settings.enabled else catalog.settings.reason,
        profiles=[FeatureProfile.of(p) for p in profiles],
    )


# --- status events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusUpdate:
    job: JobView
    event_id: str | None = None  # None: read from dispatch rather than received as an event


class FeedClosed(Exception):
    """The status subscription ended (connection closed, app shutting down)."""


class StatusSubscription(Protocol):
    async def next_update(self, wait_s: float) -> StatusUpdate | None:
        """The next status event, or None when none came within `wait_s` seconds.

        Raises `FeedClosed` when no more can come.
        """

    async def close(self) -> None: ...


class ReplayingSubscription(StatusSubscription, Protocol):
    """Stored status events, oldest first, then live ones from the same ordered consumer: what
    was stored and what comes after arrive through one feed, with no gap and no overlap."""

    @property
    def caught_up(self) -> bool:
        """Whether every event stored before the subscription was made has been handed out."""


# How far along a job is, to order two states stamped with the same time.
_STAGE = {
    JobStatus.QUEUED: 0,
    JobStatus.ENRICHING: 1,
    JobStatus.DISPATCHED: 2,
    JobStatus.GENERATING: 3,
    JobStatus.LANDING: 4,
    **{status: 5 for status in FINAL_STATUSES},
}


def _position(job: JobView) -> tuple[datetime, int, int]:
    return job.updated_at, _STAGE[job.status], job.progress.landed + job.progress.failed


def is_newer(job: JobView, than: JobView | None) -> bool:
    """Whether `job` should be sent after `than`: duplicates and stale events are not.

    Core NATS may hand us an event twice (a publisher retry JetStream deduplicated still reaches
    core subscribers) or late (two dispatch replicas publishing), and the first thing a stream
    sends is a snapshot that an already-queued event may predate. `updated_at` decides; when two
    states carry the same time (a coarse clock, two transitions in one transaction) the one
    further along wins, so a final state is never dropped as a "duplicate".
    """
    return than is None or _position(job) > _position(than)


async def follow_job(
    first: JobView,
    subscription: StatusSubscription,
    *,
    refresh: Callable[[], Awaitable[JobView | None]],
    quiet_s: float,
    send_first: bool = True,
) -> AsyncGenerator[StatusUpdate, None]:
    """The current state, then every newer state, ending after a final one.

    The subscription must have been made before `first` was read, so nothing falls in between.
    After `quiet_s` without an event the job is read again: an event lost while NATS reconnected
    would otherwise leave the stream open forever on a job that already ended. A resumed stream
    passes the state the client already has as `first`, with `send_first=False`.
    """
    last = first
    if send_first:
        yield StatusUpdate(first)
    while last.status not in FINAL_STATUSES:
        try:
            update = await subscription.next_update(quiet_s)
        except FeedClosed:
            return
        if update is None:
            try:
                job = await refresh()
            except Unavailable:
                continue  # dispatch is away; keep waiting for events
            if job is None:
                continue
            update = StatusUpdate(job)
        if update.job.id != first.id or not is_newer(update.job, last):
            continue
        last = update.job
        yield update


async def follow_project(
    project: str,
    snapshot: list[JobView],
    subscription: StatusSubscription,
    *,
    quiet_s: float,
    remember: int = 1000,
    seen: Iterable[JobView] = (),
) -> AsyncGenerator[StatusUpdate, None]:
    """The project's active jobs, then every newer state of any of its jobs, until closed.

    `remember` bounds the per-job memory of a long-lived stream; a job forgotten that long ago
    only risks one repeated event. `seen`: states the client already has (a resumed stream's
    last event), remembered but not sent.
    """
    last: OrderedDict[str, JobView] = OrderedDict((job.id, job) for job in seen)

    def fresh(job: JobView) -> bool:
        if job.project != project or not is_newer(job, last.get(job.id)):
            return False
        last[job.id] = job
        last.move_to_end(job.id)
        while len(last) > remember:
            last.popitem(last=False)
        return True

    for job in snapshot:
        if fresh(job):
            yield StatusUpdate(job)
    while True:
        try:
            update = await subscription.next_update(quiet_s)
        except FeedClosed:
            return
        if update is not None and fresh(update.job):
            yield update


def resumable_event_id(last_event_id: str | None) -> str | None:
    """The `Last-Event-ID` a client sent, when it can be one of ours (event ids are UUIDs).

    Anything else (empty, garbled) gets the current state first, as a new client does.
    """
    if not last_event_id:
        return None
    try:
        return str(UUID(last_event_id.strip()))
    except ValueError:
        return None


async def skip_past(
    last_event_id: str, feed: ReplayingSubscription, *, wait_s: float
) -> StatusUpdate | None:
    """Read the stored events up to the one with `last_event_id`, and return that one.

    None when it is not among them (older than the stream keeps, from another job or made up)
    or when the stored events stop coming for `wait_s`: the caller then starts from the current
    state, read after this, so nothing skipped here is lost. Either way every event after the
    returned point is still in `feed`.
    """
    while not feed.caught_up:
        try:
            update = await feed.next_update(wait_s)
        except FeedClosed:
            return None
        if update is None:
            return None
        if update.event_id == last_event_id:
            return update
    return None


# --- the service -----------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Submission:
    response: GenerationAccepted
    created: bool  # False: an Idempotency-Key retry answered with the job it made before


@dataclass(frozen=True)
class JobStream:
    """A job's status stream, opened (subscribed, first state read) before the response starts."""

    updates: AsyncGenerator[StatusUpdate, None]
    subscription: StatusSubscription
    # A resumed job stream whose client already has the final state: nothing will ever come,
    # and the answer is 204, which tells an EventSource to stop reconnecting.
    already_final: bool = False


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
        # Without one (tests), a secret of this process: ids are still unguessable.
        self.job_ids = job_ids or JobIds(secrets.token_hex(32))
        self._clock = clock
        self._sleep = sleep
        self._catalog: tuple[float, ProfilesListReply] | None = None
        self._catalog_generation = 0

    async def catalog(self) -> ProfilesListReply:
        """The switch and every profile (disabled ones too), reused for `profile_cache_s`.

        `forget_profiles` (on `profiles.changed`) drops it at once, so an admin's change shows
        within the cache time even if that event is missed.
        """
        cached = self._catalog
        if cached is not None and self._clock() - cached[0] < self.profile_cache_s:
            return cached[1]
        generation = self._catalog_generation
        fetched_at = self._clock()
        catalog = await self.backends.profiles(include_disabled=True)
        if generation == self._catalog_generation:  # no change announced while we asked
            self._catalog = (fetched_at, catalog)
        return catalog

    def forget_profiles(self) -> None:
        self._catalog = None
        self._catalog_generation += 1

    async def features(self) -> Features:
        return features_of(await self.catalog())

    async def _reserve_credits(self, event: JobRequested) -> None:
        """Hold the job's credits before it is queued; 429 when the user may not submit it."""
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

    async def submit(
        self, request: GenerationRequestBody, user: User, idempotency_key: str | None
    ) -> Submission:
        """Validate, then publish `jobs.requested`; nothing is published for a bad request."""
        self._require_grant(user, request.project)
        job_id = self.job_ids.new(user.id, idempotency_key)

        if idempotency_key is not None:
            # Checked before validation: a retry must get the job it made even if the profile
            # was disabled in between.
            existing = await self._recorded_job(job_id)
            if existing is not None:
                if not same_request(existing, request):
                    raise InvalidInput(
                        "This Idempotency-Key was already used for a different request; use a "
                        "new key for a new generation.",
                        code="idempotency_key_reused",
                    )
                return Submission(accepted(job_id, existing.project, existing.status), False)

        # One query gives the switch and the profile, disabled ones included, so an unknown
        # profile and a disabled one get different answers.
        catalog = await self.catalog()
        profile = next((p for p in catalog.profiles if p.id == request.profile_id), None)
        resolved = validate_generation(request, profile, catalog.settings, self.limits)
        event = build_job_requested(
            resolved, request, job_id=job_id, user_id=user.id, idempotency_key=idempotency_key
        )
        await self._reserve_credits(event)
        # Everything after the reservation either queues the job or gives the credits back:
        # a failure of any kind (a payload over the queue's limit, an event that cannot be
        # serialized, a bug) must never keep what the user was charged for a job that does not
        # exist (issue 15).
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
        if not _JOB_ID_RE.match(job_id):
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

        The subject needs the job's project, so the job is looked up once before subscribing
        (which also answers 404 before any stream starts) and read again after. With a
        `Last-Event-ID`, the stored events after it are sent instead (`_resume_job_stream`).
        """
        known = await self.job(user, job_id)
        resume_after = resumable_event_id(last_event_id)
        if resume_after is not None:
            return await self._resume_job_stream(known, resume_after)
        subscription = await self.backends.subscribe_status(job_status(known.project, job_id))
        try:
            current = await self.backends.job(job_id) or known
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
        feed = await self.backends.replay_status(job_status(known.project, known.id), since=None)

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
        subscription = await self.backends.subscribe_status(job_status_of_project(project))
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
        feed = await self.backends.replay_status(job_status_of_project(project), since=since)
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

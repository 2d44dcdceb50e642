"""The order of a status stream: which events a client gets, none twice and none stale, and
where a resumed stream (`Last-Event-ID`) picks up.

No broker here: the feeds come in through `StatusSubscription`, which `backends` implements
over core NATS and over an ordered JetStream consumer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol
from uuid import UUID

from atelier_contracts.errors import Unavailable
from atelier_contracts.jobs import FINAL_STATUSES, JobStatus, JobView


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
    # The job's whole texts: status updates carry the start of long ones (`with_short_texts`).
    whole = first if not first.texts_shortened else None
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
        if not update.job.texts_shortened:
            whole = update.job
        else:
            whole = await _whole_texts(update.job, whole, refresh)
            if whole is not None:
                update = replace(update, job=update.job.with_texts_of(whole))
        last = update.job
        yield update


async def _whole_texts(
    job: JobView, whole: JobView | None, refresh: Callable[[], Awaitable[JobView | None]]
) -> JobView | None:
    """A view of `job` with its whole texts: the one we have, unless the job has been assembled
    since (its assembled prompt is new), else read again; None when dispatch cannot say."""
    if whole is not None and (whole.assembled_prompt is not None or job.assembled_prompt is None):
        return whole
    try:
        fresh = await refresh()
    except Unavailable:
        return None
    return fresh if fresh is not None and not fresh.texts_shortened else None


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


@dataclass(frozen=True)
class JobStream:
    """A job's status stream, opened (subscribed, first state read) before the response starts."""

    updates: AsyncGenerator[StatusUpdate, None]
    subscription: StatusSubscription
    # A resumed job stream whose client already has the final state: nothing will ever come,
    # and the answer is 204, which tells an EventSource to stop reconnecting.
    already_final: bool = False

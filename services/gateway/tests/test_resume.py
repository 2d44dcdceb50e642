"""`Last-Event-ID`: resuming a status stream from the stored events, without a gap or a repeat.

The feed here is a fake of the ordered JetStream consumer: the events stored before it was made
(after which it is `caught_up`), then live ones. `test_resume_nats.py` runs the real one.
"""

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from gateway_testkit import NOW, make_job

from atelier_contracts.errors import Unavailable
from atelier_contracts.jobs import JobListQuery, JobProgress, JobRequested, JobStatus, JobView
from atelier_contracts.media import MediaListQuery, MediaListReply, MediaReply
from atelier_contracts.profiles import ProfilesListReply
from atelier_gateway.auth import User
from atelier_gateway.service import GatewayService
from atelier_gateway.streams import FeedClosed, StatusUpdate, resumable_event_id, skip_past

ALICE = User("alice", frozenset({"alpha"}))


def eid(n: int) -> str:
    """A stable event id for the n-th event of a test."""
    return str(uuid.UUID(int=n))


def event(n: int, status: JobStatus, job_id: str = "job-1", landed: int = 0) -> StatusUpdate:
    job = make_job(
        job_id,
        status=status,
        updated_at=NOW + timedelta(seconds=n),
        progress=JobProgress(total=2, landed=landed),
    )
    return StatusUpdate(job, eid(n))


# A job's whole life as dispatch publishes it.
LIFE = [
    event(1, JobStatus.QUEUED),
    event(2, JobStatus.ENRICHING),
    event(3, JobStatus.DISPATCHED),
    event(4, JobStatus.GENERATING),
    event(5, JobStatus.LANDING, landed=1),
    event(6, JobStatus.COMPLETED, landed=2),
]


class FakeFeed:
    """Stored events first (then `caught_up`), then live ones; None in `live` is a quiet spell."""

    def __init__(
        self, stored: list[StatusUpdate], live: list[StatusUpdate | None] | None = None
    ) -> None:
        self.stored = list(stored)
        self.live = list(live or [])
        self.handed_out: list[StatusUpdate] = []
        self.closed = False

    @property
    def caught_up(self) -> bool:
        return not self.stored

    async def next_update(self, wait_s: float) -> StatusUpdate | None:
        if self.stored:
            update = self.stored.pop(0)
        elif self.live:
            next_live = self.live.pop(0)
            if next_live is None:
                return None
            update = next_live
        else:
            raise FeedClosed
        self.handed_out.append(update)
        return update

    async def close(self) -> None:
        self.closed = True


class FakeBackends:
    def __init__(
        self,
        feed: FakeFeed,
        job: JobView | Exception | None = None,
        active: list[JobView] | None = None,
    ) -> None:
        self.feed = feed
        self.current = job if job is not None else make_job("job-1", status=JobStatus.QUEUED)
        self.active = active or []
        self.calls: list[str] = []
        self.replay_since: list[datetime | None] = []

    async def job(self, job_id: str) -> JobView | None:
        self.calls.append("job")
        if isinstance(self.current, Exception):
            raise self.current
        return self.current

    async def jobs(self, query: JobListQuery) -> list[JobView]:
        self.calls.append("jobs")
        return self.active

    async def subscribe_status(self, subject: str) -> FakeFeed:
        self.calls.append(f"subscribe {subject}")
        return self.feed

    async def replay_status(self, subject: str, *, since: datetime | None) -> FakeFeed:
        self.calls.append(f"replay {subject}")
        self.replay_since.append(since)
        return self.feed

    async def profiles(self, *, include_disabled: bool) -> ProfilesListReply:
        raise NotImplementedError

    async def media(self, media_id: str) -> MediaReply:
        raise NotImplementedError

    async def media_page(self, query: MediaListQuery) -> MediaListReply:
        raise NotImplementedError

    async def publish_job_requested(self, event: JobRequested) -> None:
        raise NotImplementedError


def service_for(backends: FakeBackends) -> GatewayService:
    return GatewayService(backends, job_lookup_grace_s=0, resync_s=1, replay_wait_s=0.1)


async def collect(stream: Any) -> list[StatusUpdate]:
    return [update async for update in stream]


def ids(updates: list[StatusUpdate]) -> list[str | None]:
    return [u.event_id for u in updates]


# --- the pieces ------------------------------------------------------------------------------


def test_only_ids_that_can_be_ours_are_resumed() -> None:
    some = uuid.uuid4()
    assert resumable_event_id(str(some)) == str(some)
    assert resumable_event_id(f" {str(some).upper()} ") == str(some)
    for not_ours in (None, "", "   ", "42", "job-1", "x" * 500):
        assert resumable_event_id(not_ours) is None


async def test_skip_past_stops_at_the_event_and_leaves_the_rest_in_the_feed() -> None:
    feed = FakeFeed(LIFE[:4], live=[LIFE[4]])
    found = await skip_past(eid(2), feed, wait_s=1)
    assert found is LIFE[1]
    assert feed.stored == LIFE[2:4]


async def test_skip_past_finds_the_last_stored_event() -> None:
    feed = FakeFeed(LIFE[:3], live=[LIFE[3]])
    assert await skip_past(eid(3), feed, wait_s=1) is LIFE[2]
    assert feed.live == [LIFE[3]]  # a live event is never read while skipping


async def test_skip_past_gives_up_at_the_end_of_the_stored_events() -> None:
    feed = FakeFeed(LIFE[:3], live=[LIFE[3]])
    assert await skip_past(eid(99), feed, wait_s=1) is None
    assert feed.stored == [] and feed.live == [LIFE[3]]


async def test_skip_past_with_nothing_stored_reads_nothing() -> None:
    feed = FakeFeed([], live=[LIFE[0]])
    assert await skip_past(eid(1), feed, wait_s=1) is None
    assert feed.handed_out == []


async def test_skip_past_gives_up_when_the_stored_events_stall_or_the_feed_closes() -> None:
    class Stalled(FakeFeed):
        async def next_update(self, wait_s: float) -> StatusUpdate | None:
            return None

    assert await skip_past(eid(1), Stalled(LIFE), wait_s=0.01) is None

    class Closed(FakeFeed):
        async def next_update(self, wait_s: float) -> StatusUpdate | None:
            raise FeedClosed

    assert await skip_past(eid(1), Closed(LIFE), wait_s=0.01) is None


# --- a job's stream --------------------------------------------------------------------------


async def test_a_resumed_job_stream_sends_every_later_event_once_then_live_ones() -> None:
    # Disconnected after event 2; events 3 and 4 were stored meanwhile, 5 and 6 come live.
    feed = FakeFeed(LIFE[:4], live=[None, LIFE[4], LIFE[3], LIFE[5]])
    backends = FakeBackends(feed)
    stream = await service_for(backends).open_job_stream(ALICE, "job-1", eid(2))
    assert not stream.already_final
    assert backends.calls == ["job", "replay jobs.*.alpha.job-1"]
    assert backends.replay_since == [None]  # a job's events: all the stream keeps
    sent = await collect(stream.updates)
    # No snapshot, nothing before the id, the late repeat of event 4 dropped, ends at the final.
    assert ids(sent) == [eid(3), eid(4), eid(5), eid(6)]
    assert stream.subscription is feed


async def test_the_union_of_two_connections_is_the_whole_life_once() -> None:
    # First connection: the current state (queued, no id), then events 1 (a repeat of that
    # state), 2 and 3 live; then the client is gone.
    first_feed = FakeFeed([], live=LIFE[:3])
    first = await service_for(FakeBackends(first_feed, job=LIFE[0].job)).open_job_stream(
        ALICE, "job-1"
    )
    seen = await collect(first.updates)
    last_id = [u.event_id for u in seen if u.event_id][-1]
    # It comes back with the last id it got; 1 to 4 are stored by then, 5 and 6 come live.
    second_feed = FakeFeed(LIFE[:4], live=LIFE[4:])
    second = await service_for(FakeBackends(second_feed)).open_job_stream(ALICE, "job-1", last_id)
    seen += await collect(second.updates)
    assert [(u.job.status, u.job.progress.landed) for u in seen] == [
        (u.job.status, u.job.progress.landed) for u in LIFE
    ]
    assert [u.event_id for u in seen if u.event_id] == ids(LIFE[1:])


async def test_an_unknown_id_gets_the_current_state_read_after_replaying() -> None:
    current = LIFE[3].job  # what dispatch says once the stored events were read
    feed = FakeFeed(LIFE[:4], live=[LIFE[3], LIFE[4], LIFE[5]])
    backends = FakeBackends(feed, job=current)
    stream = await service_for(backends).open_job_stream(ALICE, "job-1", eid(77))
    # The state is read after the stored events were skipped, so none of them is lost.
    assert backends.calls == ["job", "replay jobs.*.alpha.job-1", "job"]
    sent = await collect(stream.updates)
    assert [(u.event_id, u.job.status) for u in sent] == [
        (None, JobStatus.GENERATING),
        (eid(5), JobStatus.LANDING),
        (eid(6), JobStatus.COMPLETED),
    ]


async def test_resuming_after_the_final_event_sends_nothing_and_says_so() -> None:
    feed = FakeFeed(LIFE)
    stream = await service_for(FakeBackends(feed)).open_job_stream(ALICE, "job-1", eid(6))
    assert stream.already_final
    assert await collect(stream.updates) == []


async def test_a_garbled_last_event_id_is_a_plain_new_stream() -> None:
    feed = FakeFeed([], live=[LIFE[5]])
    backends = FakeBackends(feed, job=LIFE[2].job)
    stream = await service_for(backends).open_job_stream(ALICE, "job-1", "not-an-id")
    assert backends.calls == ["subscribe jobs.*.*.job-1", "job"]
    assert [u.event_id for u in await collect(stream.updates)] == [None, eid(6)]


async def test_the_replay_feed_is_closed_when_the_state_cannot_be_read() -> None:
    class DispatchGoesAway(FakeBackends):
        async def job(self, job_id: str) -> JobView | None:
            if "job" in self.calls:  # the 404 check works, the read after replaying does not
                raise Unavailable("dispatch went away")
            return await super().job(job_id)

    feed = FakeFeed(LIFE[:2])
    with pytest.raises(Unavailable):
        await service_for(DispatchGoesAway(feed)).open_job_stream(ALICE, "job-1", eid(99))
    assert feed.closed


# --- a project's stream ----------------------------------------------------------------------


async def test_a_resumed_project_stream_sends_every_later_event_of_every_job() -> None:
    other = [
        event(10, JobStatus.QUEUED, "job-2"),
        event(11, JobStatus.COMPLETED, "job-2", landed=2),
    ]
    stored = [LIFE[0], LIFE[1], other[0], LIFE[2]]
    feed = FakeFeed(stored, live=[LIFE[1], other[1], None, LIFE[3]])
    backends = FakeBackends(feed)
    stream = await service_for(backends).open_project_stream(ALICE, "alpha", eid(2))
    assert backends.calls == ["replay jobs.*.alpha.*"]
    since = backends.replay_since[0]
    assert since is not None  # a project's events: only the replay window
    sent = [u async for u in stream.updates]
    # After event 2: job-2's first event, event 3, job-2's final; the late repeat of 2 dropped.
    assert ids(sent) == [eid(10), eid(3), eid(11), eid(4)]


async def test_a_project_stream_resumed_from_an_unknown_id_starts_from_the_active_jobs() -> None:
    active = [LIFE[2].job]
    feed = FakeFeed([LIFE[0], LIFE[1], LIFE[2]], live=[LIFE[3]])
    backends = FakeBackends(feed, active=active)
    stream = await service_for(backends).open_project_stream(ALICE, "alpha", eid(1234))
    assert backends.calls == ["replay jobs.*.alpha.*", "jobs"]
    sent = [u async for u in stream.updates]
    assert [(u.event_id, u.job.status) for u in sent] == [
        (None, JobStatus.DISPATCHED),
        (eid(4), JobStatus.GENERATING),
    ]

"""The order of status events on SSE streams, and finding a job dispatch has not recorded yet."""

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from gateway_testkit import NOW, make_job

from atelier_contracts.errors import NotFound, Unavailable
from atelier_contracts.jobs import JobListQuery, JobProgress, JobRequested, JobStatus, JobView
from atelier_contracts.media import MediaListQuery, MediaListReply, MediaReply
from atelier_contracts.profiles import ProfilesListReply
from atelier_gateway.auth import User
from atelier_gateway.service import GatewayService
from atelier_gateway.streams import FeedClosed, StatusUpdate, follow_job, follow_project

ALICE = User("alice", frozenset({"alpha"}))


def at(seconds: int, status: JobStatus, job_id: str = "job-1", **fields: Any) -> JobView:
    return make_job(job_id, status=status, updated_at=NOW + timedelta(seconds=seconds), **fields)


class FakeSubscription:
    """Hands out queued updates; None in the queue means "nothing came within the timeout"."""

    def __init__(self, *updates: StatusUpdate | None) -> None:
        self.queue = list(updates)
        self.closed = False

    async def next_update(self, wait_s: float) -> StatusUpdate | None:
        if not self.queue:
            raise FeedClosed
        return self.queue.pop(0)

    async def close(self) -> None:
        self.closed = True


async def no_refresh() -> JobView | None:
    raise AssertionError("not expected to re-read the job")


async def collect(stream: Any) -> list[StatusUpdate]:
    return [update async for update in stream]


async def test_current_state_first_then_newer_events_until_final() -> None:
    feed = FakeSubscription(
        StatusUpdate(at(0, JobStatus.QUEUED), "e0"),  # queued before the snapshot was read
        StatusUpdate(at(2, JobStatus.GENERATING), "e2"),
        StatusUpdate(at(2, JobStatus.GENERATING), "e2"),  # delivered twice
        StatusUpdate(at(1, JobStatus.ENRICHING), "e1"),  # arrives late
        StatusUpdate(at(3, JobStatus.COMPLETED), "e3"),
        StatusUpdate(at(4, JobStatus.COMPLETED), "e4"),  # after the end: never read
    )
    sent = await collect(
        follow_job(at(1, JobStatus.ENRICHING), feed, refresh=no_refresh, quiet_s=1)
    )
    assert [(u.event_id, u.job.status) for u in sent] == [
        (None, JobStatus.ENRICHING),
        ("e2", JobStatus.GENERATING),
        ("e3", JobStatus.COMPLETED),
    ]
    assert len(feed.queue) == 1


async def test_states_stamped_with_the_same_time_are_ordered_by_progress() -> None:
    landed_one = at(1, JobStatus.GENERATING, progress=JobProgress(total=2, landed=1))
    feed = FakeSubscription(
        StatusUpdate(at(1, JobStatus.DISPATCHED), "older stage, same time"),
        StatusUpdate(at(1, JobStatus.GENERATING), "same"),
        StatusUpdate(landed_one, "one landed"),
        StatusUpdate(at(1, JobStatus.COMPLETED), "final, same time"),
    )
    sent = await collect(
        follow_job(at(1, JobStatus.GENERATING), feed, refresh=no_refresh, quiet_s=1)
    )
    assert [u.event_id for u in sent] == [None, "one landed", "final, same time"]


async def test_a_job_already_final_sends_one_event_and_ends() -> None:
    feed = FakeSubscription(StatusUpdate(at(9, JobStatus.FAILED), "late"))
    sent = await collect(follow_job(at(5, JobStatus.FAILED), feed, refresh=no_refresh, quiet_s=1))
    assert [u.job.status for u in sent] == [JobStatus.FAILED]


async def test_every_final_status_ends_the_stream() -> None:
    for final in (JobStatus.COMPLETED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED):
        feed = FakeSubscription(StatusUpdate(at(1, final), "end"))
        sent = await collect(
            follow_job(at(0, JobStatus.GENERATING), feed, refresh=no_refresh, quiet_s=1)
        )
        assert sent[-1].job.status is final


async def test_a_jobs_own_stream_sends_long_texts_whole() -> None:
    """Updates carry the start of a long prompt (`texts_shortened`); the job's own stream puts
    back the whole texts: those of the state it started from, or read once when the assembled
    prompt appeared after it."""
    prompt = "p" * 2000
    assembled = prompt + " with context"
    start = at(0, JobStatus.ENRICHING, prompt=prompt)
    generating = at(1, JobStatus.GENERATING, prompt=prompt, assembled_prompt=assembled)
    landed = generating.model_copy(
        update={
            "updated_at": NOW + timedelta(seconds=2),
            "progress": JobProgress(total=2, landed=1),
        }
    )
    feed = FakeSubscription(
        StatusUpdate(generating.with_short_texts(), "e1"),
        StatusUpdate(landed.with_short_texts(), "e2"),
        StatusUpdate(at(3, JobStatus.COMPLETED, prompt=prompt, assembled_prompt=assembled), "e3"),
    )
    reads = [generating]

    async def refresh() -> JobView | None:
        return reads.pop()  # once only: the second update reuses what it read

    sent = await collect(follow_job(start, feed, refresh=refresh, quiet_s=1))
    assert [u.event_id for u in sent] == [None, "e1", "e2", "e3"]
    assert all(u.job.prompt == prompt and not u.job.texts_shortened for u in sent)
    assert [u.job.assembled_prompt for u in sent] == [None, assembled, assembled, assembled]
    assert sent[2].job.progress.landed == 1


async def test_a_quiet_stream_re_reads_the_job() -> None:
    reads = iter([None, at(1, JobStatus.GENERATING), at(1, JobStatus.GENERATING)])

    async def refresh() -> JobView | None:
        value = next(reads)
        if value is None:
            raise Unavailable("dispatch away")
        return value

    # Quiet, quiet (dispatch away), quiet (found newer), quiet (same again), then the end.
    feed = FakeSubscription(None, None, None, StatusUpdate(at(2, JobStatus.COMPLETED), "e"))
    sent = await collect(follow_job(at(0, JobStatus.QUEUED), feed, refresh=refresh, quiet_s=1))
    assert [u.job.status for u in sent] == [
        JobStatus.QUEUED,
        JobStatus.GENERATING,
        JobStatus.COMPLETED,
    ]


async def test_the_stream_ends_when_the_feed_closes() -> None:
    sent = await collect(
        follow_job(at(0, JobStatus.QUEUED), FakeSubscription(), refresh=no_refresh, quiet_s=1)
    )
    assert len(sent) == 1


async def test_project_stream_dedupes_per_job_and_keeps_going_after_finals() -> None:
    feed = FakeSubscription(
        StatusUpdate(at(1, JobStatus.GENERATING, "a"), "a1"),  # older than the snapshot
        None,
        StatusUpdate(at(3, JobStatus.COMPLETED, "a"), "a3"),
        StatusUpdate(at(1, JobStatus.QUEUED, "b"), "b1"),
        StatusUpdate(at(3, JobStatus.COMPLETED, "a"), "a3"),
        StatusUpdate(at(2, JobStatus.FAILED, "b"), "b2"),
        StatusUpdate(at(9, JobStatus.QUEUED, "z", project="beta"), "z"),  # not this project
    )
    sent = await collect(
        follow_project("alpha", [at(2, JobStatus.GENERATING, "a")], feed, quiet_s=1)
    )
    assert [(u.job.id, u.job.status) for u in sent] == [
        ("a", JobStatus.GENERATING),
        ("a", JobStatus.COMPLETED),
        ("b", JobStatus.QUEUED),
        ("b", JobStatus.FAILED),
    ]


async def test_project_stream_memory_is_bounded() -> None:
    feed = FakeSubscription(
        *(StatusUpdate(at(1, JobStatus.QUEUED, f"j{i}"), None) for i in range(5))
    )
    sent = await collect(follow_project("alpha", [], feed, quiet_s=1, remember=2))
    assert len(sent) == 5


class FakeBackends:
    """Just enough of `Backends` for lookups and streams."""

    def __init__(self, answers: list[JobView | Exception | None]) -> None:
        self.answers = answers
        self.asked = 0
        self.calls: list[str] = []
        self.subscription = FakeSubscription(StatusUpdate(at(5, JobStatus.COMPLETED), "e5"))

    async def job(self, job_id: str) -> JobView | None:
        self.calls.append("job")
        self.asked += 1
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def subscribe_status(self, subject: str) -> FakeSubscription:
        self.calls.append(f"subscribe {subject}")
        return self.subscription

    async def profiles(self, *, include_disabled: bool) -> ProfilesListReply:
        raise NotImplementedError

    async def jobs(self, query: JobListQuery) -> list[JobView]:
        raise NotImplementedError

    async def media(self, media_id: str) -> MediaReply:
        raise NotImplementedError

    async def media_page(self, query: MediaListQuery) -> MediaListReply:
        raise NotImplementedError

    async def publish_job_requested(self, event: JobRequested) -> None:
        raise NotImplementedError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def service_with(backends: FakeBackends, grace_s: float = 2.0) -> tuple[GatewayService, FakeClock]:
    clock = FakeClock()
    service = GatewayService(backends, job_lookup_grace_s=grace_s, clock=clock, sleep=clock.sleep)
    return service, clock


async def test_a_job_recorded_late_is_found_within_the_grace_period() -> None:
    backends = FakeBackends([None, None, None, at(0, JobStatus.QUEUED)])
    service, clock = service_with(backends)
    # The grace is for ids the gateway made for this user: the 202 answered it a moment ago.
    job = await service.job(ALICE, service.job_ids.new(ALICE.id, None))
    assert job.id == "job-1"
    assert backends.asked == 4
    assert clock.now < 2.0


async def test_a_job_of_this_users_not_recorded_is_404_after_the_grace_period() -> None:
    backends = FakeBackends([])
    service, clock = service_with(backends)
    with pytest.raises(NotFound):
        await service.job(ALICE, service.job_ids.new(ALICE.id, "key-1"))
    assert clock.now == 2.0  # waited out the grace, not longer


async def test_not_yours_and_does_not_exist_take_the_same_path() -> None:
    # Issue 15, item 6: a 404 that took 2 s told a made-up id from someone else's job (4 ms).
    elsewhere = make_job("job-1", project="secret")
    for answers, made_for in (
        ([elsewhere], None),  # exists, not granted
        ([], None),  # does not exist
        ([elsewhere], "bob"),  # bob's, made by this gateway
        ([], "bob"),  # bob's, not recorded (yet)
    ):
        backends = FakeBackends(answers)
        service, clock = service_with(backends)
        job_id = service.job_ids.new(made_for, None) if made_for else "job-1"
        with pytest.raises(NotFound) as caught:
            await service.job(ALICE, job_id)
        assert (backends.asked, clock.now) == (1, 0)  # one question, no wait
        assert caught.value.message == f"There is no generation {job_id!r}."


async def test_ids_that_cannot_be_ours_are_404_at_once() -> None:
    backends = FakeBackends([])
    service, _ = service_with(backends)
    for bad in ("a.b", "jobs.>", "*", "x" * 101):
        with pytest.raises(NotFound):
            await service.job(ALICE, bad)
    assert backends.asked == 0


async def test_a_job_of_another_project_is_404_without_waiting() -> None:
    backends = FakeBackends([make_job("job-1", project="secret")])
    service, clock = service_with(backends)
    with pytest.raises(NotFound):
        await service.job(ALICE, "job-1")
    assert clock.now == 0


async def test_job_stream_subscribes_before_reading_the_state_it_starts_with() -> None:
    backends = FakeBackends([at(1, JobStatus.GENERATING)])
    service, _ = service_with(backends)
    stream = await service.open_job_stream(ALICE, "job-1")
    # One question to dispatch: the job's project is not needed to subscribe (issue 17).
    assert backends.calls == ["subscribe jobs.*.*.job-1", "job"]
    sent = await collect(stream.updates)
    # The state read after subscribing is the one sent first.
    assert [u.job.status for u in sent] == [JobStatus.GENERATING, JobStatus.COMPLETED]


async def test_job_stream_closes_its_subscription_when_the_state_cannot_be_read() -> None:
    backends = FakeBackends([Unavailable("dispatch went away")])
    service, _ = service_with(backends)
    with pytest.raises(Unavailable):
        await service.open_job_stream(ALICE, "job-1")
    assert backends.subscription.closed


async def test_job_stream_of_a_job_not_granted_is_404_and_keeps_no_subscription() -> None:
    backends = FakeBackends([make_job("job-1", project="secret")])
    service, _ = service_with(backends)
    with pytest.raises(NotFound):
        await service.open_job_stream(ALICE, "job-1")
    assert backends.subscription.closed


async def test_job_stream_of_an_id_that_is_no_subject_token_never_subscribes() -> None:
    backends = FakeBackends([])
    service, _ = service_with(backends)
    for bad in ("a.b", "jobs.>", "*", "x" * 101):
        with pytest.raises(NotFound):
            await service.open_job_stream(ALICE, bad)
    assert backends.calls == []


async def test_follow_job_does_not_block_forever_on_a_silent_feed() -> None:
    class Silent:
        async def next_update(self, wait_s: float) -> StatusUpdate | None:
            await asyncio.sleep(wait_s)
            return None

        async def close(self) -> None:
            pass

    async def refresh() -> JobView | None:
        return at(1, JobStatus.COMPLETED)

    sent = await asyncio.wait_for(
        collect(follow_job(at(0, JobStatus.QUEUED), Silent(), refresh=refresh, quiet_s=0.01)),
        timeout=2,
    )
    assert sent[-1].job.status is JobStatus.COMPLETED

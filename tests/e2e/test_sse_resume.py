"""`Last-Event-ID` on the real stack: a client that drops its SSE connection and comes back with
the last id it got sees every transition of the job exactly once, in order.

What "every transition" is comes from JetStream itself: the job's events in `ATELIER_STATUS`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from atelier_contracts.subjects import STATUS_STREAM, job_feed
from tests.e2e.jobs import FINAL, wait_final

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e

PROJECT = "demo-project"

State = tuple[str, int, int]  # status, images landed, images failed


@dataclass(frozen=True)
class Seen:
    event_id: str | None  # None: the current state a new connection starts with
    job: dict[str, Any]

    @property
    def state(self) -> State:
        progress = self.job["progress"]
        return self.job["status"], progress["landed"], progress["failed"]


def read_events(
    client: httpx.Client,
    path: str,
    *,
    until: Callable[[list[Seen]], bool],
    last_event_id: str | None = None,
    timeout_s: float = 60,
) -> list[Seen]:
    """`status` events until `until(seen)` holds or the server closes; then disconnects."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    seen: list[Seen] = []
    deadline = time.monotonic() + timeout_s
    with client.stream("GET", path, headers=headers, timeout=timeout_s) as response:
        assert response.status_code == 200, response.read()
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            assert time.monotonic() < deadline, f"stream too slow: {seen}"
            if line.startswith(":"):  # a ping
                continue
            if line:
                key, _, value = line.partition(":")
                fields[key] = value.removeprefix(" ")
                continue
            if "data" in fields:
                seen.append(Seen(fields.get("id"), json.loads(fields["data"])))
                if until(seen):
                    break
            fields = {}
    return seen


def stored_events(nats_url: str, project: str, job_id: str) -> list[tuple[str, State]]:
    """The job's status events as JetStream stored them: (event id, state), oldest first."""

    async def read() -> list[tuple[str, State]]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            sub = await js.subscribe(
                job_feed(project, job_id),
                stream=STATUS_STREAM.name,
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            found = []
            while True:
                msg = await sub.next_msg(timeout=5)
                event = json.loads(msg.data)
                job = event["job"]
                progress = job["progress"]
                state = (job["status"], progress["landed"], progress["failed"])
                found.append((event["event_id"], state))
                if msg.metadata.num_pending == 0:
                    break
            await sub.unsubscribe()
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def submit_slow_job(user: httpx.Client, profile_id: str, prompt: str, delay_s: float) -> str:
    submitted = user.post(
        "/v1/generations",
        json={
            "project": PROJECT,
            "profile_id": profile_id,
            "prompt": prompt,
            "count": 2,
            "options": {"delay_s": delay_s},
        },
    )
    assert submitted.status_code == 202, submitted.text
    return str(submitted.json()["id"])


def first_with_id(seen: list[Seen]) -> bool:
    return any(s.event_id for s in seen)


def final(seen: list[Seen]) -> bool:
    return seen[-1].job["status"] in FINAL


def assert_whole_life_once(
    first: list[Seen], second: list[Seen], stored: list[tuple[str, State]]
) -> None:
    """The two connections together: every stored transition once, in order, to the end."""
    stored_ids = [event_id for event_id, _ in stored]
    ids = [s.event_id for s in first + second if s.event_id]
    assert len(ids) == len(set(ids)), f"an event came twice: {ids}"
    assert ids, "no event with an id"
    # The first connection began with the current state (no id); the events stored before its
    # first id are the ones that state already covers.
    start = stored_ids.index(ids[0])
    assert ids == stored_ids[start:], f"not every transition, or not in order: {ids}"
    if start:
        assert first[0].event_id is None and first[0].state == stored[start - 1][1]
    # The resumed connection starts right after the id it sent.
    resumed_from = [s.event_id for s in first if s.event_id][-1]
    assert second[0].event_id == stored_ids[stored_ids.index(resumed_from) + 1]
    assert stored[-1][1][0] in FINAL and second[-1].event_id == stored_ids[-1]


def test_reconnecting_mid_job_resumes_without_a_gap_or_a_repeat(
    running_stack: RunningStack,
) -> None:
    profile_id = running_stack.info.profile_id
    assert profile_id is not None
    with running_stack.user() as user:
        job_id = submit_slow_job(user, profile_id, "Resumed harbour", delay_s=2.5)
        path = f"/v1/generations/{job_id}/events"
        first = read_events(user, path, until=first_with_id)
        last_id = [s.event_id for s in first if s.event_id][-1]
        assert first[-1].job["status"] not in FINAL, "the job ended before the disconnect"
        time.sleep(0.5)  # events published while the client is away must not be lost
        second = read_events(user, path, until=final, last_event_id=last_id)
        job = wait_final(user, job_id)
    assert job["status"] == "completed", job
    stored = stored_events(running_stack.info.nats_url, PROJECT, job_id)
    assert_whole_life_once(first, second, stored)


def test_reconnecting_after_the_end_replays_the_rest_then_says_no_more(
    running_stack: RunningStack,
) -> None:
    profile_id = running_stack.info.profile_id
    assert profile_id is not None
    with running_stack.user() as user:
        job_id = submit_slow_job(user, profile_id, "Harbour, replayed", delay_s=1.0)
        path = f"/v1/generations/{job_id}/events"
        first = read_events(user, path, until=first_with_id)
        last_id = [s.event_id for s in first if s.event_id][-1]
        wait_final(user, job_id)
        # Everything after the id now comes from the stream's storage.
        second = read_events(user, path, until=final, last_event_id=last_id)
        stored = stored_events(running_stack.info.nats_url, PROJECT, job_id)
        assert_whole_life_once(first, second, stored)

        # Back once more after the final event: 204, so an EventSource stops reconnecting.
        again = user.get(path, headers={"Last-Event-ID": stored[-1][0]})
        assert again.status_code == 204

        # The project's stream resumes from the same id too (other jobs may be interleaved).
        project_events = read_events(
            user,
            f"/v1/projects/{PROJECT}/generations/events",
            until=lambda seen: seen[-1].job["id"] == job_id and final(seen),
            last_event_id=last_id,
        )
    ours = [s.event_id for s in project_events if s.job["id"] == job_id]
    stored_ids = [event_id for event_id, _ in stored]
    assert ours == stored_ids[stored_ids.index(last_id) + 1 :]
    assert all(s.event_id for s in project_events)  # replayed events, no snapshot

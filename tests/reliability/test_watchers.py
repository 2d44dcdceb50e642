"""Many watchers (issue 17, item 4): a thousand SSE streams open at once on one gateway process
while jobs run. Every stream gets every event of its job, in order, none twice; closing them
gives back what they held.

`ATELIER_WATCHERS_STREAMS` streams (default 1,000; about 25 s a round on 2 cores): four fifths on
single jobs, five on each, and one fifth on ten projects. Project streams open before any job is
submitted, so each must carry every event of each of its project's jobs; a job stream opens on
its job's 202, starts with the job's state then and must carry every event after it. Every event
is what JetStream stored in `ATELIER_STATUS`, i.e. what dispatch published, and the last one is
what `GET /v1/generations/{id}` shows once the job ended. Each project has a writer of its own,
so no user's rate or in-flight limit (120 a minute, 100 at once) refuses a submission.

Closing is checked on the gateway process itself: its `atelier_status_subscriptions_open` and
its open file descriptors come back to where they were, and a second round, the same as the
first, does not grow its RSS (`/proc/<pid>/status`) as a leak of anything a stream holds would.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from atelier_contracts.subjects import STATUS_STREAM, project_feed
from atelier_devstack.stack import Stack, StackConfig, WorkerSpec
from tests.e2e.jobs import FINAL

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

STREAMS = int(os.environ.get("ATELIER_WATCHERS_STREAMS", "1000"))
PROJECT_STREAMS = STREAMS // 5
JOB_STREAMS = STREAMS - PROJECT_STREAMS
PROJECTS = 10
STREAMS_PER_JOB = 5
JOBS = max(1, JOB_STREAMS // STREAMS_PER_JOB)
# Every job runs at once (the worker's concurrency) and takes this long at the provider: long
# enough for every stream to be open before the first job ends. Opening a thousand takes the
# gateway 2-4 s on two busy cores, after 160 submissions that the first jobs do not wait for: at
# 8 s a clean-clone run once saw the first jobs end with 945 of 1,000 streams open.
DELAY_S = 15.0
ROUND_TIMEOUT_S = 90.0
STAGE = {"queued": 0, "enriching": 1, "dispatched": 2, "generating": 3, "landing": 4}
STAGE.update(dict.fromkeys(FINAL, 5))
# Python keeps freed memory for reuse: the first round sets the level and the second one may add
# a little. A stream holds ~90 KiB while open; a leak of a tenth of that per stream shows.
RSS_GROWTH_LIMIT_KB = max(4096, 12 * STREAMS)

Event = tuple[str | None, dict[str, Any]]  # (event id, or None for a current state; the job)


@dataclass
class Watched:
    """One SSE stream and what it received."""

    path: str
    events: list[Event] = field(default_factory=list)
    ended_by_server: bool = False

    @property
    def target(self) -> str:  # the job id or the project
        return self.path.split("/")[3]


@dataclass(frozen=True)
class GatewayFigures:
    subscriptions: float  # atelier_status_subscriptions_open
    fds: int
    rss_kb: int


@pytest.fixture(scope="module")
def watched_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var_dir: Path = tmp_path_factory.mktemp("watchers")
    worker = WorkerSpec("offline", {"ATELIER_WORKERS_CONCURRENCY": str(2 * JOBS)})
    stack = Stack(StackConfig(var_dir=var_dir, prefer_standard_ports=False, workers=[worker]))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def gateway_figures(stack: Stack) -> GatewayFigures:
    metrics = httpx.get(f"{stack.url('gateway')}/metrics", timeout=10).text
    subscriptions = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("atelier_status_subscriptions_open ")
    )
    pid = stack.supervisor.process("gateway").pid
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return GatewayFigures(subscriptions, len(os.listdir(f"/proc/{pid}/fd")), rss)


async def read_stream(
    client: httpx.AsyncClient, watched: Watched, stop: asyncio.Event | None = None
) -> None:
    """`status` events until the server ends the stream or `stop` is set (then disconnects)."""
    async with client.stream("GET", watched.path) as response:
        assert response.status_code == 200, await response.aread()
        lines = aiter(response.aiter_lines())
        stopped = asyncio.ensure_future(stop.wait()) if stop else None
        fields: dict[str, str] = {}
        try:
            while True:
                line_read = asyncio.ensure_future(anext(lines, None))
                if stopped is not None:
                    await asyncio.wait({line_read, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    if stopped.done():
                        line_read.cancel()
                        return
                line = await line_read
                if line is None:
                    watched.ended_by_server = True
                    return
                if line.startswith(":"):  # a ping
                    continue
                if line:
                    key, _, value = line.partition(":")
                    fields[key] = value.removeprefix(" ")
                    continue
                if "data" in fields:
                    watched.events.append((fields.get("id"), json.loads(fields["data"])))
                fields = {}
        finally:
            if stopped is not None:
                stopped.cancel()


async def stored_events(nats_url: str, projects: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Every job's status events as JetStream stored them, oldest first: (event id, status)."""
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for project in projects:
            sub = await js.subscribe(
                project_feed(project),
                stream=STATUS_STREAM.name,
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            while True:
                msg = await sub.next_msg(timeout=5)
                event = json.loads(msg.data)
                found[event["job"]["id"]].append((event["event_id"], event["job"]["status"]))
                if msg.metadata.num_pending == 0:
                    break
            await sub.unsubscribe()
    finally:
        await nc.close()
    return found


def check_order(events: list[Event], where: str) -> None:
    """Statuses only move forward and `progress.landed` never goes down."""
    stages = [STAGE[job["status"]] for _, job in events]
    landed = [job["progress"]["landed"] for _, job in events]
    assert stages == sorted(stages), f"{where}: statuses out of order: {events}"
    assert landed == sorted(landed), f"{where}: progress.landed went down: {landed}"


def check_job_stream(
    watched: Watched, stored: list[tuple[str, str]], shown: dict[str, Any]
) -> None:
    where = watched.path
    assert watched.ended_by_server, f"{where}: the stream did not end after the final event"
    assert watched.events, f"{where}: nothing received"
    check_order(watched.events, where)
    (first_id, first), *rest = watched.events
    assert first_id is None, f"{where}: a new stream starts with the job's state"
    ids = [event_id for event_id, _ in rest]
    assert all(ids), f"{where}: an event without an id after the first"
    stored_ids = [event_id for event_id, _ in stored]
    # The first state stands for the events stored before it; every one after it must follow.
    start = stored_ids.index(ids[0]) if ids else len(stored_ids)
    assert ids == stored_ids[start:], f"{where}: not every event once, in order: {watched.events}"
    if start:
        assert first["status"] == stored[start - 1][1], f"{where}: a stale first state"
    # The last event is the job as `GET` shows it now, every field.
    assert watched.events[-1][1] == shown, f"{where}: ended on {watched.events[-1]}"


def check_project_stream(
    watched: Watched,
    jobs: dict[str, str],
    stored: dict[str, list[tuple[str, str]]],
    shown: dict[str, dict[str, Any]],
) -> None:
    assert not watched.ended_by_server, f"{watched.path}: a project stream ended by itself"
    for job_id in (j for j, project in jobs.items() if project == watched.target):
        ours = [(event_id, job) for event_id, job in watched.events if job["id"] == job_id]
        where = f"{watched.path}, job {job_id}"
        check_order(ours, where)
        # Open before the job existed: every stored event, each once, and nothing else.
        assert [event_id for event_id, _ in ours] == [event_id for event_id, _ in stored[job_id]], (
            f"{where}: not every event once, in order: {ours}"
        )
        assert ours[-1][1] == shown[job_id], f"{where}: ended on {ours[-1]}"


def project_done(watched: Watched, jobs: dict[str, str]) -> bool:
    ended = {job["id"] for _, job in watched.events if job["status"] in FINAL}
    return all(job_id in ended for job_id, project in jobs.items() if project == watched.target)


class PeakSampler:
    """The gateway's figures every half second while a round runs; their highest values."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.peak = GatewayFigures(0, 0, 0)
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            now = await asyncio.to_thread(gateway_figures, self.stack)
            self.peak = GatewayFigures(
                max(self.peak.subscriptions, now.subscriptions),
                max(self.peak.fds, now.fds),
                max(self.peak.rss_kb, now.rss_kb),
            )
            await asyncio.sleep(0.5)

    def __enter__(self) -> PeakSampler:
        self._task = asyncio.create_task(self._sample())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def one_round(stack: Stack, round_no: int) -> dict[str, Any]:
    """Open the streams, run the jobs, read every stream to its end, close, check."""
    info = stack.info
    assert info is not None and info.profile_id is not None
    projects = [f"watch-{round_no}-{p}" for p in range(PROJECTS)]
    tokens = {p: stack.mint_token(f"watcher-{round_no}-{i}", [p]) for i, p in enumerate(projects)}
    # A connection of its own for every request: a kept-alive one that the gateway closed after
    # its idle timeout (5 s; the test's own loop is busy with a thousand streams) would fail the
    # next request sent on it ("Server disconnected without sending a response").
    unbounded = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    clients = {
        p: httpx.AsyncClient(
            base_url=info.gateway_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(ROUND_TIMEOUT_S, connect=30),
            limits=unbounded,
        )
        for p, token in tokens.items()
    }
    jobs: dict[str, str] = {}  # job id → project
    project_streams = [
        Watched(f"/v1/projects/{projects[i % PROJECTS]}/generations/events")
        for i in range(PROJECT_STREAMS)
    ]
    job_streams: list[Watched] = []
    job_readers: list[asyncio.Task[None]] = []
    stop_projects = asyncio.Event()
    started = time.monotonic()

    async def submit_and_watch(n: int) -> None:
        project = projects[n % PROJECTS]
        response = await clients[project].post(
            "/v1/generations",
            json={
                "project": project,
                "profile_id": info.profile_id,
                "prompt": f"Watched lighthouse {round_no}-{n}",
                "count": 1 + n % 2,
                "options": {"delay_s": DELAY_S, "seed": n},
            },
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        jobs[job_id] = project
        for _ in range(STREAMS_PER_JOB + (1 if n < JOB_STREAMS % JOBS else 0)):
            watched = Watched(f"/v1/generations/{job_id}/events")
            job_streams.append(watched)
            job_readers.append(asyncio.create_task(read_stream(clients[project], watched)))

    with PeakSampler(stack) as sampler:
        project_readers = [
            asyncio.create_task(read_stream(clients[w.target], w, stop_projects))
            for w in project_streams
        ]
        try:
            # Every project stream subscribed before the first job is submitted.
            while (await asyncio.to_thread(gateway_figures, stack)).subscriptions < len(
                project_streams
            ):
                assert time.monotonic() - started < 30, "project streams did not open"
                await asyncio.sleep(0.1)
            await asyncio.gather(*(submit_and_watch(n) for n in range(JOBS)))
            submitted_s = time.monotonic() - started
            # Job streams end after their job's final event; project streams are left once
            # every job of theirs ended.
            deadline = started + ROUND_TIMEOUT_S
            await asyncio.wait_for(asyncio.gather(*job_readers), deadline - time.monotonic())
            while not all(project_done(w, jobs) for w in project_streams):
                assert time.monotonic() < deadline, "project streams missed a job's end"
                await asyncio.sleep(0.2)
            stop_projects.set()
            await asyncio.wait_for(asyncio.gather(*project_readers), 30)
            finished_s = time.monotonic() - started
        finally:
            for task in [*project_readers, *job_readers]:
                task.cancel()
            for client in clients.values():
                await client.aclose()

    stored = await stored_events(info.nats_url, projects)
    shown: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=info.gateway_url, timeout=30) as reader:
        for job_id, project in jobs.items():
            response = await reader.get(
                f"/v1/generations/{job_id}", headers={"Authorization": f"Bearer {tokens[project]}"}
            )
            assert response.status_code == 200, response.text
            shown[job_id] = response.json()
            assert shown[job_id]["status"] in FINAL
    assert len(job_streams) == JOB_STREAMS and len(jobs) == JOBS
    for watched in job_streams:
        check_job_stream(watched, stored[watched.target], shown[watched.target])
    for watched in project_streams:
        check_project_stream(watched, jobs, stored, shown)
    # All of them at once: no job ended before every stream was open.
    assert sampler.peak.subscriptions == STREAMS, f"at most {sampler.peak} open at once"
    return {
        "submitted_and_opened_s": round(submitted_s, 1),
        "all_ended_s": round(finished_s, 1),
        "events_received": sum(len(w.events) for w in [*job_streams, *project_streams]),
        "peak": sampler.peak,
    }


async def settled(stack: Stack, before: GatewayFigures) -> GatewayFigures:
    """The gateway's figures once its subscriptions and descriptors are back where they were
    (at most 15 s: a stream's own task notices that its client left)."""
    deadline = time.monotonic() + 15
    while True:
        now = await asyncio.to_thread(gateway_figures, stack)
        back = now.subscriptions <= before.subscriptions and now.fds <= before.fds
        if back or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.2)


async def test_a_thousand_streams_get_every_event_and_give_back_what_they_held(
    watched_stack: Stack,
) -> None:
    before = gateway_figures(watched_stack)
    rounds, after = [], []
    for round_no in (1, 2):
        rounds.append(await one_round(watched_stack, round_no))
        after.append(await settled(watched_stack, before))
    print(
        f"\nwatchers: {STREAMS} streams ({JOB_STREAMS} on {JOBS} jobs, {PROJECT_STREAMS} on "
        f"{PROJECTS} projects); gateway before: {before}; rounds: {rounds}; after each: {after}"
    )
    for now in after:
        assert now.subscriptions == before.subscriptions, "status subscriptions left open"
        assert now.fds <= before.fds, "connections left open"
    growth = after[1].rss_kb - after[0].rss_kb
    assert growth < RSS_GROWTH_LIMIT_KB, f"the gateway's RSS grew {growth} KiB in round 2"

